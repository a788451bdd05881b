// Seed files on the page, for the Interpolate panel: reading a seed file's header (its latents' shape and the
// settings it records) without the wasm module, naming seeds and the frames made from them.
//
// A seed file is a safetensors file with an F32 tensor `latents` [1, C, h, w] and, when fpi made it, the settings
// as metadata (all values text; see fpi_core::seed). Pure functions: tests/web/seeds.mjs runs them in Node.

/**
 * A seed file's header: { shape, meta } (meta: its metadata, {} when none). Throws an Error saying why `blob` (a
 * Blob or File) is not a seed file. Reads only the header.
 */
export async function readSeedHeader(blob) {
  if (blob.size < 8) throw new Error('too short for a safetensors file');
  const n = new DataView(await blob.slice(0, 8).arrayBuffer()).getBigUint64(0, true);
  if (n < 2n || n > 100_000_000n || 8n + n > BigInt(blob.size)) throw new Error('not a safetensors file');
  let header;
  try {
    header = JSON.parse(await blob.slice(8, 8 + Number(n)).text());
  } catch {
    throw new Error('not a safetensors file (its header is not JSON)');
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new Error('not a safetensors file');
  const latents = header.latents;
  if (!latents) throw new Error('no tensor named `latents`: not a seed file');
  const shape = latents.shape;
  if (latents.dtype !== 'F32') throw new Error(`\`latents\` is ${latents.dtype}, expected F32`);
  if (!Array.isArray(shape) || shape.length !== 4 || shape[0] !== 1) throw new Error(`\`latents\` has shape [${shape}], expected [1, C, h, w]`);
  return { shape, meta: header.__metadata__ ?? {} };
}

/** What a seed's metadata says to sample it with: { prompt, steps, guidance } (null where it does not say). */
export function sampling(meta) {
  const number = (key) => (meta[key] !== undefined && Number.isFinite(Number(meta[key])) ? Number(meta[key]) : null);
  return { prompt: meta.prompt ?? null, steps: number('steps'), guidance: number('guidance') };
}

/** 'camera.seed.safetensors' → 'camera'; 'x.safetensors' → 'x'. */
export function seedStem(name) {
  return name.replace(/\.safetensors$/i, '').replace(/\.seed$/i, '') || 'seed';
}

/**
 * A seed in a list, in one line: "2. camera.seed.safetensors: “a man with a camera”, 4 steps" (`number` from 1;
 * the size from the metadata, or the latents' shape).
 */
export function seedLabel(number, { name, shape, meta }) {
  const { prompt, steps } = sampling(meta);
  const parts = [];
  if (prompt !== null) parts.push(prompt ? `“${prompt}”` : 'no prompt');
  parts.push(meta.size ? `${meta.size} px` : `latents ${shape.slice(1).join('×')}`);
  if (steps !== null) parts.push(`${steps} steps`);
  if (meta.derivation) parts.push(derivationText(meta.derivation));
  return `${number}. ${name}: ${parts.join(', ')}`;
}

/** A derived seed's derivation (metadata JSON text) in words: "frame 3 of 9 (nao)". */
function derivationText(json) {
  try {
    const d = JSON.parse(json);
    if (d.operation === 'interpolation') return `frame ${d.frame + 1} of ${d.frames} (${d.method})`;
    if (d.operation === 'centroid') return `centroid of ${d.sources?.length ?? '?'} (${d.method})`;
    return d.operation ?? 'derived';
  } catch {
    return 'derived';
  }
}

/** The two seeds the panel starts with among `count`: the last two (the older first), or the one twice. */
export function defaultPair(count) {
  if (count <= 0) return null;
  return count === 1 ? [0, 0] : [count - 2, count - 1];
}

/**
 * The file name of frame `index` (from 0) of `frames` between the seeds named `names` by `method`:
 * "camera-to-dog.nao.3-of-9.png" for ext 'png', ….seed.safetensors for ext 'seed'.
 */
export function frameName(names, method, index, frames, ext) {
  const [a, b] = names.map(seedStem);
  const width = String(frames).length;
  const frame = `${String(index + 1).padStart(width, '0')}-of-${frames}`;
  const suffix = ext === 'seed' ? 'seed.safetensors' : ext;
  return `${a}-to-${b}.${method}.${frame}.${suffix}`;
}
