// Gathering a diffusers model folder as the Map<path, Blob> that Model.load takes.
//
// Four sources, one result: a folder picked with <input webkitdirectory>, a folder dropped on the page (walked
// through webkitGetAsEntry), loose files picked or dropped (placed by name and content, see looseFiles), and a
// base URL of the same layout (fetched by the worker into Cache Storage, so a reload reads the weights from disk
// instead of downloading them again). No weights are read here: a File or a cache-backed Blob is only a handle,
// and Rust reads the tensors it needs with blob.slice(a, b). Placing loose files reads small configs and
// safetensors headers only.

/**
 * The files Model.load needs: each entry lists alternatives, each alternative the files it takes (all of them).
 * A URL load downloads the first alternative the server has: fp16 weights first, half the bytes of f32 (they
 * become f32 on load either way). From a picked folder Model.load prefers f32 files when both are there.
 */
export const MODEL_FILES = [
  [['unet/config.json']],
  [['unet/diffusion_pytorch_model.fp16.safetensors'], ['unet/diffusion_pytorch_model.safetensors']],
  [['vae/config.json']],
  [['vae/diffusion_pytorch_model.fp16.safetensors'], ['vae/diffusion_pytorch_model.safetensors']],
  [['text_encoder/config.json']],
  [['text_encoder/model.fp16.safetensors'], ['text_encoder/model.safetensors']],
  [['tokenizer/vocab.json', 'tokenizer/merges.txt'], ['tokenizer/tokenizer.json']],
  [['scheduler/scheduler_config.json']],
];

/** "a (or b)" for an entry of MODEL_FILES, for messages. */
function describe(alternatives) {
  const [first, ...rest] = alternatives.map((files) => files.join(' + '));
  return rest.length ? `${first} (or ${rest.join(', or ')})` : first;
}

/** The entries of MODEL_FILES that `has(path)` finds in none of their alternatives, described for a message. */
export function missingFiles(has) {
  return MODEL_FILES.filter((alts) => !alts.some((files) => files.every(has))).map(describe);
}

/**
 * The paths of a model's files that `has(path)` finds: for each entry of MODEL_FILES, the files of its first
 * alternative found whole (entries found in none are left out; see missingFiles).
 */
export function presentFiles(has) {
  return MODEL_FILES.flatMap((alts) => alts.find((files) => files.every(has)) ?? []);
}

/**
 * Builds the model's file map from [path, File] pairs whose paths start somewhere above the model folder: the
 * picker gives 'tiny-sd/unet/config.json', a drop '/tiny-sd/unet/config.json'. The model folder is the one
 * holding unet/config.json (the shallowest, if several), so picking a folder one level up works too.
 * Hidden files and folders (.git, .DS_Store) are left out. Returns { files, name, missing }.
 */
export function folderFiles(pairs) {
  const visible = pairs
    .map(([path, file]) => [path.replace(/^\/+/, ''), file])
    .filter(([path]) => !path.split('/').some((part) => part.startsWith('.')));
  const anchors = visible.map(([path]) => path).filter((p) => p === 'unet/config.json' || p.endsWith('/unet/config.json'));
  anchors.sort((a, b) => a.length - b.length);
  // Without a unet/config.json, fall back on stripping the first component (the picked folder's name).
  const prefix = anchors.length ? anchors[0].slice(0, -'unet/config.json'.length) : (visible[0]?.[0].split('/')[0] ?? '') + '/';
  const files = new Map();
  for (const [path, file] of visible) {
    if (path.startsWith(prefix)) files.set(path.slice(prefix.length), file);
  }
  const name = prefix.split('/').filter(Boolean).pop() ?? 'model';
  return { files, name, missing: missingFiles((p) => files.has(p)) };
}

/**
 * All files under a dropped FileSystemEntry (a folder or a single file), as [fullPath, File] pairs.
 * Hidden folders are not entered, so dropping a git clone does not walk .git.
 */
export async function walkEntry(entry, out = []) {
  if (entry.isFile) {
    out.push([entry.fullPath, await new Promise((resolve, reject) => entry.file(resolve, reject))]);
  } else if (entry.isDirectory && !entry.name.startsWith('.')) {
    const reader = entry.createReader();
    // readEntries returns the folder in batches (100 in Chromium) until it returns an empty one.
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (batch.length === 0) break;
      for (const child of batch) await walkEntry(child, out);
    }
  }
  return out;
}

/** Files that come with a diffusers model but that Model.load does not need: left out of loose files quietly. */
const SPARE_FILES = new Set([
  'tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json', 'model_index.json',
  'preprocessor_config.json', 'generation_config.json', '.gitattributes', 'README.md', 'LICENSE', 'LICENSE.md',
]);

/** Configs larger than this are not read (SD's are a few kB; vocab.json and tokenizer.json are placed by name). */
const MAX_CONFIG_BYTES = 1 << 20;

/** Where a loose file goes by its name alone: a path, 'spare' (not needed), or null when the name does not say. */
export function placeByName(name) {
  if (['vocab.json', 'merges.txt', 'tokenizer.json'].includes(name)) return `tokenizer/${name}`;
  if (name === 'scheduler_config.json') return 'scheduler/scheduler_config.json';
  if (SPARE_FILES.has(name) || name.startsWith('.')) return 'spare';
  return null;
}

/**
 * The component a parsed config describes: 'unet' | 'vae' | 'text_encoder' | 'scheduler', 'spare' (a config
 * Model.load does not need: the pipeline's, the safety checker's...), or null. Diffusers configs name their
 * class in `_class_name`; transformers' CLIP config has `architectures` and `model_type` instead.
 */
export function configComponent(config) {
  const cls = typeof config?._class_name === 'string' ? config._class_name : '';
  if (cls === 'UNet2DConditionModel') return 'unet';
  if (cls === 'AutoencoderKL') return 'vae';
  if (cls === 'CLIPTextModel') return 'text_encoder';
  if (cls.endsWith('Scheduler')) return 'scheduler';
  if (cls.endsWith('Pipeline')) return 'spare'; // model_index.json under another name
  const architectures = Array.isArray(config?.architectures) ? config.architectures : [];
  if (architectures.includes('CLIPTextModel') || config?.model_type === 'clip_text_model') return 'text_encoder';
  if (architectures.includes('StableDiffusionSafetyChecker') || 'tokenizer_class' in (config ?? {})) return 'spare';
  return null;
}

/** The config path of each component, for configComponent's answers. */
const CONFIG_PATHS = {
  unet: 'unet/config.json',
  vae: 'vae/config.json',
  text_encoder: 'text_encoder/config.json',
  scheduler: 'scheduler/scheduler_config.json',
};

/**
 * The tensor names in a safetensors file's header, reading only the header: 8 bytes of little-endian length,
 * then that many bytes of JSON. Throws an Error when the blob is not a safetensors file.
 */
export async function safetensorsKeys(blob) {
  if (blob.size < 8) throw new Error('too short for safetensors');
  const n = new DataView(await blob.slice(0, 8).arrayBuffer()).getBigUint64(0, true);
  if (n < 2n || n > 100_000_000n || 8n + n > BigInt(blob.size)) throw new Error(`header length ${n} does not fit`);
  const header = JSON.parse(await blob.slice(8, 8 + Number(n)).text());
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new Error('its header is not an object');
  return Object.keys(header).filter((key) => key !== '__metadata__');
}

/**
 * The component whose tensors `keys` are: 'unet' | 'vae' | 'text_encoder', or null. The VAE is tested first:
 * its encoder has encoder.down_blocks too. CLIP comes with the text_model. prefix or without it
 * (embeddings.token_embedding.weight, encoder.layers.0...).
 */
export function weightsComponent(keys) {
  const any = (...prefixes) => keys.some((key) => prefixes.some((prefix) => key.startsWith(prefix)));
  if (any('decoder.', 'quant_conv.', 'post_quant_conv.')) return 'vae';
  if (any('text_model.') || (any('embeddings.') && any('encoder.layers.'))) return 'text_encoder';
  if (any('down_blocks.') && any('time_embedding.')) return 'unet';
  return null;
}

/** A loose weights file's path for its component; '.fp16' stays in the name when the file's name had it. */
function weightsPath(component, name) {
  const fp16 = /(^|[._-])fp16([._-]|$)/i.test(name) ? '.fp16' : '';
  const stem = component === 'text_encoder' ? 'model' : 'diffusion_pytorch_model';
  return `${component}/${stem}${fp16}.safetensors`;
}

/**
 * Where one loose file goes: { path } (a place in the diffusers layout), { spare: true } (not needed), or
 * { why } (not recognised, with the reason).
 */
export async function placeFile(file) {
  const byName = placeByName(file.name);
  if (byName === 'spare') return { spare: true };
  if (byName) return { path: byName };
  if (/\.json$/i.test(file.name)) {
    if (file.size > MAX_CONFIG_BYTES) return { why: 'too large for a config' };
    let config;
    try {
      config = JSON.parse(await file.text());
    } catch {
      return { why: 'not valid JSON' };
    }
    const component = configComponent(config);
    if (component === 'spare') return { spare: true };
    return component ? { path: CONFIG_PATHS[component] } : { why: 'not the config of an SD1.5 part' };
  }
  if (/\.safetensors$/i.test(file.name)) {
    let keys;
    try {
      keys = await safetensorsKeys(file);
    } catch (e) {
      return { why: `not a safetensors file (${e.message})` };
    }
    const component = weightsComponent(keys);
    if (component) return { path: weightsPath(component, file.name) };
    const checkpoint = keys.some((key) => key.startsWith('model.diffusion_model.'));
    return { why: checkpoint ? 'a single-file checkpoint, not diffusers' : 'not the weights of an SD1.5 part' };
  }
  if (/\.(bin|ckpt|pt|pth|pickle)$/i.test(file.name)) return { why: 'fpi reads safetensors weights only' };
  return { why: 'not a model file' };
}

/**
 * Builds the model's file map from loose Files (picked with <input multiple>, or dropped), which have lost
 * their folders: each goes to its place by name and content (placeFile). Returns { files, name, missing,
 * unknown, clashes }: unknown lists "name (why)" for the files that were not recognised, clashes "path: a, b"
 * for places that several files claim (the map then holds none of them, so that missing names the place too).
 */
export async function looseFiles(picked) {
  const claims = new Map(); // path → Files
  const unknown = [];
  for (const file of picked) {
    const place = await placeFile(file);
    if (place.path) claims.set(place.path, [...(claims.get(place.path) ?? []), file]);
    else if (place.why) unknown.push(`${file.name} (${place.why})`);
  }
  const files = new Map();
  const clashes = [];
  for (const [path, claimants] of claims) {
    if (claimants.length === 1) files.set(path, claimants[0]);
    else clashes.push(`${path}: ${claimants.map((file) => file.name).join(', ')}`);
  }
  return { files, name: 'model', missing: missingFiles((p) => files.has(p)), unknown, clashes };
}

/**
 * A user's model URL as the base the files are under: absolute, ending in '/'. A Hugging Face repository page
 * (https://huggingface.co/org/name, or .../tree/main) becomes its file base (.../resolve/main/).
 */
export function modelBase(text, relativeTo) {
  const url = new URL(text.trim(), relativeTo);
  if (url.hostname === 'huggingface.co') {
    const [org, name, kind, rev = 'main'] = url.pathname.split('/').filter(Boolean);
    if (org && name && (kind === undefined || kind === 'tree')) url.pathname = `/${org}/${name}/resolve/${rev}/`;
  }
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  url.search = '';
  url.hash = '';
  return url.href;
}

/** The Cache Storage cache that holds downloaded weights. Bump the version to drop every user's old copies. */
export const CACHE_NAME = 'fpi-weights-v1';

/**
 * Fetches the model files under `base` (see modelBase) into Cache Storage, reusing what is cached already, and
 * returns { files: Map<path, Blob>, cached, downloaded, bytes }. Bodies are streamed into the cache, never held
 * whole in memory, and the Blobs come back from the cache (disk-backed). `report(text, done, total)` hears each
 * file's progress (total is 0 when the server sends no content-length). Throws an Error with a one-line message.
 */
export async function fetchModel(base, report) {
  // Cache Storage needs a secure context; without it, files are fetched into (possibly in-memory) Blobs.
  const cache = globalThis.caches ? await caches.open(CACHE_NAME) : null;
  const files = new Map();
  const count = { cached: 0, downloaded: 0, bytes: 0 };
  for (const alternatives of MODEL_FILES) {
    // A cached alternative wins over downloading another one: a reload never downloads.
    const cachedAlt = cache && (await findCached(cache, base, alternatives));
    const order = cachedAlt ? [cachedAlt] : alternatives;
    let found = false;
    for (const paths of order) {
      const blobs = [];
      for (const path of paths) {
        const blob = await fetchFile(cache, base + path, path, report, count);
        if (!blob) break; // not on the server: try the next alternative
        blobs.push([path, blob]);
      }
      if (blobs.length === paths.length) {
        for (const [path, blob] of blobs) files.set(path, blob);
        found = true;
        break;
      }
    }
    if (!found) throw new Error(`the model at ${base} lacks ${describe(alternatives)}`);
  }
  return { files, ...count };
}

/** The first alternative whose files are all in the cache, or null. */
async function findCached(cache, base, alternatives) {
  for (const paths of alternatives) {
    let all = true;
    for (const path of paths) all = all && (await cache.match(base + path)) !== undefined;
    if (all) return paths;
  }
  return null;
}

/**
 * One file as a Blob: from the cache, else downloaded into it. Null when the server answers 404 (or 403, which
 * some buckets send for missing keys). Other failures throw.
 */
async function fetchFile(cache, url, path, report, count) {
  const hit = cache && (await cache.match(url));
  if (hit) {
    const blob = await hit.blob();
    count.cached += 1;
    count.bytes += blob.size;
    report(`${path}: from cache (${formatBytes(blob.size)})`, 1, 1);
    return blob;
  }
  let response;
  try {
    response = await fetch(url, { cache: 'no-store' });
  } catch (e) {
    throw new Error(`could not fetch ${url}: ${e.message} (offline, or the server does not allow cross-origin requests)`);
  }
  if (response.status === 404 || response.status === 403) return null;
  if (!response.ok) throw new Error(`could not fetch ${url}: HTTP ${response.status} ${response.statusText}`);

  // Count the bytes as they stream through on their way into the cache.
  const total = Number(response.headers.get('content-length')) || 0;
  let done = 0;
  let last = 0;
  const counter = new TransformStream({
    transform(chunk, controller) {
      done += chunk.byteLength;
      const now = Date.now();
      if (now - last > 100) {
        last = now;
        const of = total ? ` of ${formatBytes(total)}` : '';
        report(`downloading ${path}: ${formatBytes(done)}${of}`, done, total); // total 0: an open-ended bar
      }
      controller.enqueue(chunk);
    },
  });
  // Only the content type is kept: the stored body is decoded, so content-length/-encoding would not describe it.
  const headers = { 'content-type': response.headers.get('content-type') ?? 'application/octet-stream' };
  const body = new Response(response.body.pipeThrough(counter), { headers });
  let blob;
  if (cache) {
    try {
      await cache.put(url, body); // resolves once the whole body is stored; a broken download stores nothing
    } catch (e) {
      throw new Error(`could not store ${path} in the browser's cache: ${e.message} (free some disk space?)`);
    }
    blob = await (await cache.match(url)).blob();
  } else {
    blob = await body.blob();
  }
  count.downloaded += 1;
  count.bytes += blob.size;
  report(`${path}: downloaded (${formatBytes(blob.size)})`, 1, 1);
  return blob;
}

/** 1234567 → "1.2 MB". */
export function formatBytes(n) {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}
