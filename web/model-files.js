// Gathering a model as the Map<path, Blob> that Model.load takes, and a replacement VAE as the Map it takes beside.
//
// A model is a diffusers folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a single-file checkpoint:
// one .safetensors with LDM keys (model.diffusion_model.…) at the map's root under its file name, optionally with
// config files at their diffusers places (unet/config.json, …; for a model that is not SD1.x-sized). A replacement
// VAE is a VAE folder (config.json + diffusion_pytorch_model[.fp16].safetensors at the map's root) or one VAE
// checkpoint (LDM keys encoder.…/decoder.…) under its file name.
//
// Four sources, one result: a folder picked with <input webkitdirectory>, a folder dropped on the page (walked
// through webkitGetAsEntry), loose files picked or dropped (placed by name and content, see looseFiles), and a
// URL or Hugging Face id (see parseLocation; fetched by the worker into Cache Storage, so a reload reads the
// weights from disk instead of downloading them again). No weights are read here: a File or a cache-backed Blob is
// only a handle, and Rust reads the tensors it needs with blob.slice(a, b). Placing files reads small configs and
// safetensors headers only (a checkpoint of 2-4 GB included).

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

/** A replacement VAE's files at a URL, as MODEL_FILES: a diffusers VAE folder (stabilityai/sd-vae-ft-mse's layout). */
export const VAE_FILES = [
  [['config.json']],
  [['diffusion_pytorch_model.fp16.safetensors'], ['diffusion_pytorch_model.safetensors']],
];

/**
 * The files that may go with a single-file checkpoint, at their diffusers places: without them Model.load uses
 * SD1.x's own configuration and CLIP tokenizer; with them (a model that is not SD1.x-sized), those.
 */
export const CHECKPOINT_CONFIGS = [
  'unet/config.json', 'vae/config.json', 'text_encoder/config.json', 'tokenizer/vocab.json', 'tokenizer/merges.txt',
  'tokenizer/tokenizer.json', 'scheduler/scheduler_config.json',
];

/** The one-line reason a PyTorch pickle (.ckpt, .pt, .pth, .bin) is refused. */
export const PICKLE = 'a PyTorch pickle, which the page cannot read: convert it to .safetensors';
const PICKLE_NAME = /\.(ckpt|pt|pth|bin|pickle)$/i;

/** 'v1-5-pruned-emaonly.safetensors' → 'v1-5-pruned-emaonly'. */
const stem = (name) => name.replace(/\.[^.]*$/, '') || name;

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
 * (embeddings.token_embedding.weight, encoder.layers.0...). A VAE in LDM keys (encoder.down.0…) is a 'vae' here
 * too: see isVaeCheckpoint.
 */
export function weightsComponent(keys) {
  const any = (...prefixes) => keys.some((key) => prefixes.some((prefix) => key.startsWith(prefix)));
  if (any('decoder.', 'quant_conv.', 'post_quant_conv.')) return 'vae';
  if (any('text_model.') || (any('embeddings.') && any('encoder.layers.'))) return 'text_encoder';
  if (any('down_blocks.') && any('time_embedding.')) return 'unet';
  return null;
}

/** A whole model's single-file checkpoint (SD1.x's v1-5-pruned-emaonly.safetensors, and its kin): LDM keys. */
export const isCheckpoint = (keys) => keys.some((key) => key.startsWith('model.diffusion_model.'));

/**
 * A VAE's own checkpoint in LDM keys (vae-ft-mse-840000-ema-pruned.safetensors): encoder.down.0…, decoder.up.0…,
 * decoder.mid.…, where diffusers has encoder.down_blocks.0…, decoder.up_blocks.0…, decoder.mid_block.….
 */
export const isVaeCheckpoint = (keys) => keys.some((key) => /^(en|de)coder\.(down|up|mid)\./.test(key));

/** A loose weights file's path for its component; '.fp16' stays in the name when the file's name had it. */
function weightsPath(component, name) {
  const fp16 = /(^|[._-])fp16([._-]|$)/i.test(name) ? '.fp16' : '';
  const stem = component === 'text_encoder' ? 'model' : 'diffusion_pytorch_model';
  return `${component}/${stem}${fp16}.safetensors`;
}

/**
 * Where one loose file goes: { path } (a place in the diffusers layout), { checkpoint: true } (a whole model in
 * one file), { vaeCheckpoint: true } (a VAE in one file, LDM keys), { spare: true } (not needed), or { why } (not
 * recognised, with the reason).
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
    if (isCheckpoint(keys)) return { checkpoint: true };
    const component = weightsComponent(keys);
    if (component === 'vae' && isVaeCheckpoint(keys)) return { vaeCheckpoint: true };
    if (component) return { path: weightsPath(component, file.name) };
    return { why: 'not the weights of an SD1.5 part' };
  }
  if (PICKLE_NAME.test(file.name)) return { why: PICKLE };
  return { why: 'not a model file' };
}

/**
 * Places loose Files (picked with <input multiple>, or dropped), which have lost their folders: each goes to its
 * place by name and content (placeFile). Returns { files, name, missing, unknown, clashes, checkpoints,
 * vaeCheckpoints }: files maps the diffusers places to their Files; missing describes the diffusers places none
 * fills; unknown lists "name (why)" for the files that were not recognised; clashes "path: a, b" for places that
 * several files claim (files then holds none of them, so that missing names the place too); checkpoints and
 * vaeCheckpoints are the single-file models and VAEs among them (see modelFromFiles for what wins).
 */
export async function looseFiles(picked) {
  const claims = new Map(); // path → Files
  const unknown = [];
  const checkpoints = [];
  const vaeCheckpoints = [];
  for (const file of picked) {
    const place = await placeFile(file);
    if (place.path) claims.set(place.path, [...(claims.get(place.path) ?? []), file]);
    else if (place.checkpoint) checkpoints.push(file);
    else if (place.vaeCheckpoint) vaeCheckpoints.push(file);
    else if (place.why) unknown.push(`${file.name} (${place.why})`);
  }
  const files = new Map();
  const clashes = [];
  for (const [path, claimants] of claims) {
    if (claimants.length === 1) files.set(path, claimants[0]);
    else clashes.push(`${path}: ${claimants.map((file) => file.name).join(', ')}`);
  }
  const missing = missingFiles((p) => files.has(p));
  return { files, name: 'model', missing, unknown, clashes, checkpoints, vaeCheckpoints };
}

// ---------------------------------------------------------------------------------------------------------------
// What the user gave: a model, a VAE, or both
//
// modelFromFolder and modelFromFiles answer { model, vae, ignored, error }: model is { files, name, format:
// 'diffusers' | 'checkpoint' } or null, vae (a replacement VAE found among the files) { files, name } or null,
// ignored the "name (why)" of files not used, error a one-line message (model and vae are then null).

const failed = (error) => ({ model: null, vae: null, ignored: [], error });

/** A checkpoint's model: the file at the map's root under its name, with the configs found at their places. */
function checkpointModel(name, file, configs) {
  const files = new Map([[name, file]]);
  for (const path of CHECKPOINT_CONFIGS) if (configs.has(path)) files.set(path, configs.get(path));
  return { files, name: stem(name), format: 'checkpoint' };
}

/** The diffusers VAE among placed files (vae/config.json and its weights, f32 preferred), as a VAE map, or null. */
function diffusersVae(files, name) {
  const config = files.get('vae/config.json');
  const names = ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors'];
  const weights = names.find((w) => files.has(`vae/${w}`));
  if (!config || !weights) return null;
  return { files: new Map([['config.json', config], [weights, files.get(`vae/${weights}`)]]), name };
}

/** The diffusers weights among placed files. */
const weightsOf = (files) => [...files.keys()].filter((path) => path.endsWith('.safetensors'));

/**
 * What loose Files are (see looseFiles): one checkpoint is a model, with the configs among the files (and a VAE
 * beside it, in one file or as vae/config.json + VAE weights, is its replacement VAE); a VAE alone (one file, or
 * config + weights, and nothing else) is a replacement VAE; other files are a diffusers model, which must be
 * complete (and a VAE checkpoint among them is its replacement VAE). `name` names a VAE that comes as diffusers
 * files (a dropped VAE folder's name).
 */
export async function modelFromFiles(picked, name = 'vae') {
  const { files, missing, unknown, clashes, checkpoints, vaeCheckpoints } = await looseFiles(picked);
  const ignored = unknown;
  const names = (list) => list.map((file) => file.name).join(', ');
  if (checkpoints.length > 1) return failed(`several checkpoints: ${names(checkpoints)} (pick one)`);
  if (vaeCheckpoints.length > 1) return failed(`several VAE checkpoints: ${names(vaeCheckpoints)} (pick one)`);
  if (clashes.length) return failed(`several files claim the same place: ${clashes.join('; ')} (pick one of each)`);
  const [vaeFile] = vaeCheckpoints;
  let vae = vaeFile ? { files: new Map([[vaeFile.name, vaeFile]]), name: stem(vaeFile.name) } : null;

  if (checkpoints.length === 1) {
    const [checkpoint] = checkpoints;
    // VAE weights beside a checkpoint (with their config) are a replacement VAE; other diffusers weights clash.
    const others = weightsOf(files).filter((path) => !path.startsWith('vae/'));
    if (others.length) {
      const also = others.join(', ');
      return failed(`${checkpoint.name} is a whole model, and the files hold diffusers weights too (${also}): pick one model`);
    }
    const vaeWeights = weightsOf(files).filter((path) => path.startsWith('vae/'));
    if (vaeWeights.length) {
      if (vae) return failed(`two replacement VAEs: ${vaeFile.name} and ${vaeWeights.join(', ')} (pick one)`);
      vae = diffusersVae(files, name);
      if (!vae) return failed(`VAE weights beside ${checkpoint.name} need their config.json (or leave them out)`);
      files.delete('vae/config.json'); // the replacement VAE's, not the checkpoint's
    }
    return { model: checkpointModel(checkpoint.name, checkpoint, files), vae, ignored, error: null };
  }

  // Files of the VAE only (nothing else placed, or nothing at all beside a VAE checkpoint): a replacement VAE.
  const onlyVae = [...files.keys()].every((path) => path.startsWith('vae/'));
  if (onlyVae && (vae || diffusersVae(files, name))) {
    // A VAE alone: diffusers VAE files beside a VAE checkpoint are one VAE too many.
    if (vae && diffusersVae(files, name)) return failed(`two VAEs: ${vaeFile.name} and a VAE's config and weights (pick one)`);
    return { model: null, vae: vae ?? diffusersVae(files, name), ignored, error: null };
  }
  if (files.size === 0) {
    return failed(ignored.length ? `not a model or a VAE: ${ignored.join(', ')}` : 'no files');
  }
  if (missing.length) {
    const unrecognised = ignored.length ? `; not recognised: ${ignored.join(', ')}` : '';
    const what = "pick all of the model's files, its folder, or a single-file checkpoint";
    return failed(`the files lack ${missing.join(', ')}${unrecognised} (${what})`);
  }
  return { model: { files, name: 'model', format: 'diffusers' }, vae, ignored, error: null };
}

/** A diffusers folder's parts, for messages. */
const PARTS = 'unet/, vae/, text_encoder/, tokenizer/, scheduler/';

/**
 * What a picked or dropped folder is, from its [path, File] pairs (as folderFiles takes them): a complete diffusers
 * folder (files at its root, such as a checkpoint beside the diffusers parts, are left out); else one
 * .safetensors checkpoint at its root, with the configs at their diffusers places; else, for a folder with no
 * unet/config.json, its files as loose files (a VAE folder; see modelFromFiles).
 */
export async function modelFromFolder(pairs) {
  if (pairs.length === 0) return failed('the folder is empty');
  const { files, name, missing } = folderFiles(pairs);
  if (missing.length === 0) {
    const parts = new Map([...files].filter(([path]) => path.includes('/')));
    return { model: { files: parts, name, format: 'diffusers' }, vae: null, ignored: [], error: null };
  }
  const checkpoints = [];
  for (const [path, file] of files) {
    if (path.includes('/') || !/\.safetensors$/i.test(path)) continue;
    const keys = await safetensorsKeys(file).catch(() => []);
    if (isCheckpoint(keys)) checkpoints.push(path);
  }
  if (checkpoints.length > 1) {
    return failed(`${name} holds several checkpoints (${checkpoints.join(', ')}): pick or drop the one to load`);
  }
  if (checkpoints.length === 1) {
    return { model: checkpointModel(checkpoints[0], files.get(checkpoints[0]), files), vae: null, ignored: [], error: null };
  }
  const pickles = [...files.keys()].filter((path) => !path.includes('/') && PICKLE_NAME.test(path));
  if (files.has('unet/config.json') || missing.length <= 2) {
    if (missing.length > 2) {
      return failed(`${name} is not a diffusers model folder: pick the one that holds ${PARTS.replace(/, (?=\w+\/$)/, ' and ')}`);
    }
    return failed(`${name} is not a complete diffusers model folder: it lacks ${missing.join(', ')}`);
  }
  const visible = pairs.filter(([path]) => !path.split('/').some((part) => part.startsWith('.')));
  const loose = await modelFromFiles(visible.map(([, file]) => file), name);
  if (!loose.error) return loose;
  if (pickles.length) return failed(`${name}: ${pickles.join(', ')} is ${PICKLE}`);
  return failed(`${name} is not a model folder: pick a diffusers folder (${PARTS}), a folder with a single-file checkpoint, or the checkpoint itself`);
}

/**
 * A replacement VAE from picked files or a folder's [path, File] pairs: one VAE checkpoint (LDM keys), or a VAE's
 * config.json and weights (f32 preferred when both; a whole diffusers model's vae/ serves too). Returns
 * { vae: { files, name }, error: null } or { vae: null, error }.
 */
export async function vaeFromFiles(picked, name) {
  const { files, unknown, checkpoints, vaeCheckpoints } = await looseFiles(picked);
  const no = (error) => ({ vae: null, error });
  if (vaeCheckpoints.length > 1) return no(`several VAE checkpoints: ${vaeCheckpoints.map((f) => f.name).join(', ')} (pick one)`);
  if (vaeCheckpoints.length === 1) {
    const [file] = vaeCheckpoints;
    return { vae: { files: new Map([[file.name, file]]), name: stem(file.name) }, error: null };
  }
  const vae = diffusersVae(files, name ?? 'vae');
  if (vae) return { vae, error: null };
  if (files.has('vae/config.json')) return no("the VAE's config.json needs its weights (diffusion_pytorch_model.safetensors)");
  if (weightsOf(files).some((path) => path.startsWith('vae/'))) return no("the VAE's weights need its config.json (pick both, or the VAE's folder)");
  if (checkpoints.length) return no(`${checkpoints[0].name} is a whole model's checkpoint, not a VAE`);
  const why = unknown.length ? `: ${unknown.join(', ')}` : '';
  return no(`not a VAE${why} (pick a VAE folder, its two files, or a VAE .safetensors)`);
}

// ---------------------------------------------------------------------------------------------------------------
// URLs and Hugging Face ids

export const HUB = 'https://huggingface.co';

/**
 * One part of a Hugging Face id (as huggingface_hub checks them): word characters, '-' and '.', not at either end,
 * no '--' or '..'.
 */
const HUB_PART = /^(?!.*(--|\.\.))\w(?:[\w.-]*\w)?$/;

/**
 * A Hugging Face id, ORG/NAME or ORG/NAME@REV, as { org, name, rev } (rev 'main' when not given), or null. The rule
 * that tells an id from a relative path: an id is exactly two parts and one '/', nothing before or after (no
 * scheme, no leading './' or '/', no trailing '/'); anything else is a URL or a path. So 'models/sd15' is an id,
 * and './models/sd15' or 'models/sd15/' the folder next to the page.
 */
export function hubId(text) {
  const match = text.trim().match(/^([^/@\s]+)\/([^/@\s]+)(?:@(\S+))?$/);
  if (!match) return null;
  const [, org, name, rev = 'main'] = match;
  if (!HUB_PART.test(org) || !HUB_PART.test(name) || org.length + name.length + 1 > 96) return null;
  return { org, name, rev };
}

/**
 * Where to fetch a model (or a VAE) that the user named in the URL field: { base, file, name }. base is the folder
 * URL (absolute, ending in '/'); file is null for a folder of diffusers layout, else the name of the one
 * .safetensors file at base (a URL whose path ends in .safetensors: a single-file checkpoint). name names the model
 * (the repository's or folder's name; a file's name without .safetensors).
 *   - ORG/NAME[@REV] (see hubId) is https://huggingface.co/ORG/NAME/resolve/REV/;
 *   - a Hugging Face page (https:// may be left out) becomes its files' URL: …/ORG/NAME and …/tree/REV[/PATH] →
 *     …/resolve/REV[/PATH]/, …/blob/REV/PATH → …/resolve/REV/PATH;
 *   - anything else is a URL, absolute or relative to `relativeTo` (the page).
 * Throws an Error for what is not a URL, and for a PyTorch pickle's URL.
 */
export function parseLocation(text, relativeTo) {
  const id = hubId(text);
  // 'huggingface.co/ORG/NAME' without its scheme means the site, not a folder named huggingface.co.
  const trimmed = text.trim().replace(/^(www\.)?huggingface\.co\//i, 'https://huggingface.co/');
  const url = id
    ? new URL(`${HUB}/${id.org}/${id.name}/resolve/${encodeURIComponent(id.rev)}/`)
    : new URL(trimmed, relativeTo);
  if (url.hostname === 'huggingface.co') {
    const [org, repo, kind, rev = 'main', ...rest] = url.pathname.split('/').filter(Boolean);
    const repos = org && repo && !['datasets', 'spaces', 'api'].includes(org);
    if (repos && (kind === undefined || kind === 'tree')) url.pathname = ['', org, repo, 'resolve', rev, ...rest, ''].join('/');
    if (repos && kind === 'blob') url.pathname = ['', org, repo, 'resolve', rev, ...rest].join('/');
  }
  url.hash = '';
  const last = url.pathname.split('/').pop();
  const fileName = decodeURIComponent(last);
  if (PICKLE_NAME.test(fileName)) throw new Error(`${fileName} is ${PICKLE}`);
  if (/\.safetensors$/i.test(fileName)) {
    // A file: its query stays (a signed URL needs it; Hugging Face ignores ?download=true).
    return { base: new URL('.', url).href, file: fileName, query: url.search, name: stem(fileName) };
  }
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  url.search = '';
  return { base: url.href, file: null, query: '', name: nameOf(url) };
}

/** A folder URL's name: its last part, or on Hugging Face the repository's name, or the last part of a path in it. */
function nameOf(url) {
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  if (url.hostname === 'huggingface.co' && parts[2] === 'resolve') return parts.length > 4 ? parts.at(-1) : parts[1];
  return parts.at(-1) ?? url.hostname;
}

/** The Cache Storage cache that holds downloaded weights. Bump the version to drop every user's old copies. */
export const CACHE_NAME = 'fpi-weights-v1';

/**
 * Fetches the files under `base` (see parseLocation) into Cache Storage, reusing what is cached already, and
 * returns { files: Map<path, Blob>, cached, downloaded, bytes }. `entries` lists them as MODEL_FILES does (the
 * default; VAE_FILES for a VAE folder; [[[name]]] for one file), `what` names them in messages ('the model') and
 * `query` goes after each file's URL. Bodies are streamed into the cache, never held whole in memory, and the
 * Blobs come back from the cache (disk-backed). `report(text, done, total)` hears each file's progress (total is
 * 0 when the server sends no content-length). Throws an Error with a one-line message.
 */
export async function fetchModel(base, report, { entries = MODEL_FILES, what = 'the model', query = '' } = {}) {
  // Cache Storage needs a secure context; without it, files are fetched into (possibly in-memory) Blobs.
  const cache = globalThis.caches ? await caches.open(CACHE_NAME) : null;
  const url = (path) => base + path.split('/').map(encodeURIComponent).join('/') + query;
  const files = new Map();
  const count = { cached: 0, downloaded: 0, bytes: 0 };
  for (const alternatives of entries) {
    // A cached alternative wins over downloading another one: a reload never downloads.
    const cachedAlt = cache && (await findCached(cache, url, alternatives));
    const order = cachedAlt ? [cachedAlt] : alternatives;
    let found = false;
    for (const paths of order) {
      const blobs = [];
      for (const path of paths) {
        const blob = await fetchFile(cache, url(path), path, report, count);
        if (!blob) break; // not on the server: try the next alternative
        blobs.push([path, blob]);
      }
      if (blobs.length === paths.length) {
        for (const [path, blob] of blobs) files.set(path, blob);
        found = true;
        break;
      }
    }
    if (!found) {
      // The first file of a diffusers folder missing: perhaps the repository holds a single-file checkpoint.
      const hint = entries === MODEL_FILES && files.size === 0
        ? " (not a diffusers folder; for a single-file checkpoint give the .safetensors file's URL)"
        : '';
      throw new Error(`${what} at ${base} lacks ${describe(alternatives)}${hint}`);
    }
  }
  return { files, ...count };
}

/** The first alternative whose files are all in the cache, or null. */
async function findCached(cache, url, alternatives) {
  for (const paths of alternatives) {
    let all = true;
    for (const path of paths) all = all && (await cache.match(url(path))) !== undefined;
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
