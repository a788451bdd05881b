// The worker: holds the wasm module and the Model, and does all the heavy work, so the page stays responsive.
//
// Protocol (postMessage, one object per message):
//   page → worker
//     { type: 'load', model: source, vae: source | null, precision }   load a model, with a replacement VAE or its
//       own, in precision 'auto' | 'f32' | 'f16' (as Model.load takes it); a source
//       is { kind: 'files', files: Map<path, File>, name, format } (picked or dropped; format 'diffusers' |
//       'checkpoint' for a model) or { kind: 'url', base, file, query, name } (see parseLocation in
//       model-files.js; fetched via Cache Storage). The maps are as Model.load takes them (see model-files.js).
//     { type: 'invert', image: ArrayBuffer, settings }      invert a photo (settings as in Model.invert)
//     { type: 'edit', seed: ArrayBuffer, settings }         edit a seed with Prompt-to-Prompt (settings as in
//       Model.edit: { prompt, mode?, cross_steps?, self_steps?, blend?, blend_threshold?, blend_start?, reweight?,
//       steps?, guidance? }). The page keeps the seed of the inversion it shows (the 'result' message's `seed`) and
//       sends a copy with every edit, so the worker keeps nothing between requests and edits survive a restart.
//     { type: 'interpolate', seeds: [ArrayBuffer, ArrayBuffer], names: [a, b], points, method, options }   frames on
//       a path between two seed files (see Model.interpolate: names are the files' names, which the frames record;
//       method 'nao' | 'slerp' | 'lerp'; options { prompt?, steps?, guidance? }), each sampled in turn (Model.reconstruct)
//     { type: 'centroid', seeds: [ArrayBuffer, …], names, method, options }   the centre of 2 or more seed files
//       (Model.centroid), sampled: centroid-result
//     { type: 'cancel' }                                    stop the running inversion, edit or interpolation after
//       its current step
//   worker → page
//     { type: 'hello', gpu: { ok, reason, detail, adapter }, wasm: { ok, error } }   once, at start
//     { type: 'load-status', text, done, total }            download and load progress
//     { type: 'loaded', name, format, vae, adapter, software, precision, shaderF16, sizeStep,
//       source: { files, cached, downloaded, bytes } } (precision: 'f16' | 'f32', what the networks run in;
//       shaderF16: whether the adapter could run f16)
//       (format: 'diffusers' | 'checkpoint'; source: the model's files; vae: the replacement VAE's { name, files,
//       cached, downloaded, bytes }, or null for the model's own; adapter: the WebGPU adapter's name; software: true
//       for a CPU or software adapter)
//     { type: 'progress', op, phase, step, steps, iteration, residual, timestep }   (op: 'invert' | 'edit' |
//       'interpolate'; the rest as the model reports them: step counts from 0, iteration from 1; an edit reports phase
//       'sample', residual null; an interpolation adds frame (from 0) and frames)
//     { type: 'result', seed, original, reconstruction (ArrayBuffers), psnr, vaePsnr, latentError,
//       evaluations (all UNet evaluations of the run), droppedTokens (prompt tokens past CLIP's 77), seconds }
//     { type: 'edit-result', edit, source (ArrayBuffers: PNGs of the target prompt's branch and of the source
//       prompt's, which is the seed's reconstruction), evaluations (UNet evaluations, at batch 4), seconds }
//     { type: 'path', frames, seconds }                      the interpolation's path is found; its frames follow
//     { type: 'frame', index, frames, seed, image (ArrayBuffers: the frame's seed file and its PNG), seconds }
//     { type: 'interpolate-result', frames, seconds }        every frame was sent
//     { type: 'centroid-result', seed, image, seconds }       the centroid's seed file and PNG (ArrayBuffers)
//     { type: 'cancelled', op }                             op: 'invert' | 'edit' | 'interpolate'
//     { type: 'error', op, message }                        op: the request that failed; message: one line
//
// Requests run one at a time in arrival order; 'cancel' jumps the queue. The cancel flag is read by the
// on_progress callback, which the model calls after each UNet evaluation: returning false makes invert(), edit()
// and reconstruct() reject with 'cancelled' (an interpolation also stops between frames).

import { MODEL_FILES, VAE_FILES, fetchModel, formatBytes } from './model-files.js';

let wasm = null; // the wasm-bindgen module, once initialised
let model = null; // the loaded Model
let cancel = false;

const post = (message, transfer = []) => self.postMessage(message, transfer);

/** An error as one line of text (wasm errors may be Error objects, strings or anything else). */
function oneLine(e) {
  let text = e instanceof Error ? e.message : String(e);
  if (e instanceof WebAssembly.RuntimeError) text = `the wasm module crashed (${text}); reload the page`;
  return text.replace(/\s+/g, ' ').trim() || 'unknown error';
}

/** Is WebGPU usable here, in the worker, where the model runs? Workers can lack it where the page has it. */
async function probeGpu() {
  if (!self.isSecureContext) return { ok: false, reason: 'insecure' };
  if (!navigator.gpu) return { ok: false, reason: 'no-api' };
  try {
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) return { ok: false, reason: 'no-adapter' };
    const info = adapter.info ?? {};
    return { ok: true, adapter: [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') };
  } catch (e) {
    return { ok: false, reason: 'no-adapter', detail: oneLine(e) };
  }
}

/**
 * Imports and initialises the wasm module (imported dynamically, so that a missing build is an error message
 * instead of a worker that silently fails to start).
 */
async function startWasm() {
  try {
    wasm = await import('./pkg/fpi_web.js');
    await wasm.default();
    return { ok: true };
  } catch (e) {
    wasm = null;
    return { ok: false, error: `could not load the wasm module pkg/fpi_web.js: ${oneLine(e)}` };
  }
}

const started = Promise.all([probeGpu(), startWasm()]).then(([gpu, wasmState]) => post({ type: 'hello', gpu, wasm: wasmState }));

/**
 * A source's files as a Map<path, Blob> (see the protocol above): picked files as they are, a URL's fetched into
 * Cache Storage. `entries` lists a folder's files (MODEL_FILES or VAE_FILES). Returns { files, name, format, counts }.
 */
async function gather(source, entries, what) {
  if (source.kind === 'files') {
    const counts = { files: source.files.size, cached: 0, downloaded: 0, bytes: 0 };
    return { files: source.files, name: source.name, format: source.format, counts };
  }
  const report = (text, done, total) => post({ type: 'load-status', text, done, total });
  const list = source.file ? [[[source.file]]] : entries;
  const { files, ...counts } = await fetchModel(source.base, report, { entries: list, what, query: source.query ?? '' });
  return { files, name: source.name, format: source.file ? 'checkpoint' : 'diffusers', counts: { files: files.size, ...counts } };
}

/** Loads the model (and its replacement VAE, if any), replacing the one loaded before. */
async function load(modelSource, vaeSource, precision) {
  if (!wasm) throw new Error('the wasm module is not loaded');
  model?.free?.();
  model = null;
  const { files, name, format, counts } = await gather(modelSource, MODEL_FILES, 'the model');
  const vae = vaeSource ? await gather(vaeSource, VAE_FILES, 'the VAE') : null;
  let last = 0;
  const onStatus = (text, done, total) => {
    // text is 'loading {part}'. Forward at most every 50 ms, and always the end of a part.
    const now = Date.now();
    if (now - last < 50 && done < total) return;
    last = now;
    const of = total ? `: ${formatBytes(done)} of ${formatBytes(total)}` : '';
    post({ type: 'load-status', text: `${text}${of}`, done, total });
  };
  // name: recorded in seed files' metadata. vae: undefined loads the model's own.
  model = await wasm.Model.load(files, name, onStatus, vae?.files, precision ?? 'auto');
  const { adapter, software_adapter: software, size_step: sizeStep, precision: dtype, shader_f16: shaderF16 } = model;
  const vaeInfo = vae ? { name: vae.name, ...vae.counts } : null;
  post({ type: 'loaded', name, format, vae: vaeInfo, adapter, software, precision: dtype, shaderF16, sizeStep, source: counts });
}

/**
 * The on_progress callback for a run of `op` ('invert' | 'edit' | 'interpolate'): forwards each report (with the
 * fields of `extra`) to the page and answers whether to go on. `count.evaluations` counts the calls (one per UNet
 * evaluation).
 */
function progressFor(op, count = { evaluations: 0 }, extra = {}) {
  return (p) => {
    count.evaluations += 1;
    // Only the protocol's fields go to the page.
    const { phase, step, steps, iteration, residual, timestep } = p;
    post({ type: 'progress', op, phase, step, steps, iteration, residual, timestep, ...extra });
    return !cancel;
  };
}

/** Runs `work` (a model call taking on_progress); a cancellation is reported to the page and gives null. */
async function cancellable(op, work) {
  try {
    return await work();
  } catch (e) {
    if (cancel && /cancelled/.test(oneLine(e))) {
      post({ type: 'cancelled', op });
      return null;
    }
    throw e;
  }
}

/** Inverts one photo and sends the result back. */
async function invert(image, settings) {
  if (!model) throw new Error('no model is loaded');
  cancel = false;
  const start = performance.now();
  const onProgress = progressFor('invert');
  const inv = await cancellable('invert', () => model.invert(new Uint8Array(image), settings, onProgress));
  if (!inv) return;
  try {
    // wasm-bindgen's getters for Vec<u8> return copies (Uint8Arrays of their own, not views of wasm memory), so
    // their buffers can be transferred as they are.
    const [seed, original, reconstruction] = [inv.seed, inv.original, inv.reconstruction].map((a) => a.buffer);
    const result = {
      type: 'result',
      seed,
      original,
      reconstruction,
      psnr: inv.psnr,
      vaePsnr: inv.vae_psnr,
      latentError: inv.latent_error,
      evaluations: inv.evaluations,
      droppedTokens: inv.dropped_tokens,
      seconds: (performance.now() - start) / 1000,
    };
    post(result, [seed, original, reconstruction]);
  } finally {
    inv.free?.();
  }
}

/** Edits a seed (the bytes of a seed file) with Prompt-to-Prompt and sends both branches back as PNGs. */
async function edit(seed, settings) {
  if (!model) throw new Error('no model is loaded');
  cancel = false;
  const start = performance.now();
  const count = { evaluations: 0 };
  const onProgress = progressFor('edit', count);
  const result = await cancellable('edit', () => model.edit(new Uint8Array(seed), settings, onProgress));
  if (!result) return;
  try {
    // Copies, as in invert(): their buffers can be transferred.
    const [edited, source] = [result.edit, result.source].map((a) => a.buffer);
    const seconds = (performance.now() - start) / 1000;
    post({ type: 'edit-result', edit: edited, source, evaluations: count.evaluations, seconds }, [edited, source]);
  } finally {
    result.free?.();
  }
}

/**
 * Makes the frames' seed files between two seeds (Model.interpolate), then samples them one by one
 * (Model.reconstruct: each seed file records its prompt, steps and guidance), sending each frame as it is done.
 */
async function interpolate({ seeds, names, points, method, options }) {
  if (!model) throw new Error('no model is loaded');
  cancel = false;
  const start = performance.now();
  const seconds = () => (performance.now() - start) / 1000;
  const [a, b] = seeds.map((bytes) => new Uint8Array(bytes));
  const frames = model.interpolate(a, b, names, points, method, options);
  post({ type: 'path', frames: frames.length, seconds: seconds() });
  for (let index = 0; index < frames.length; index += 1) {
    // Sampling does not give the event loop a turn until its end, so a 'cancel' sent during a frame is read here.
    await new Promise((resolve) => setTimeout(resolve, 0));
    if (cancel) return post({ type: 'cancelled', op: 'interpolate' });
    const seed = frames[index];
    const onProgress = progressFor('interpolate', undefined, { frame: index, frames: frames.length });
    const png = await cancellable('interpolate', () => model.reconstruct(seed, onProgress));
    if (!png) return;
    // Both are Uint8Arrays of their own (copies out of wasm memory), so their buffers can be transferred.
    post({ type: 'frame', index, frames: frames.length, seed: seed.buffer, image: png.buffer, seconds: seconds() }, [seed.buffer, png.buffer]);
  }
  post({ type: 'interpolate-result', frames: frames.length, seconds: seconds() });
}

/** Makes the centre of 2 or more seeds (Model.centroid) and samples it (Model.reconstruct). */
async function centroid({ seeds, names, method, options }) {
  if (!model) throw new Error('no model is loaded');
  cancel = false;
  const start = performance.now();
  const seed = model.centroid(seeds.map((bytes) => new Uint8Array(bytes)), names, method, options);
  const png = await cancellable('centroid', () => model.reconstruct(seed, progressFor('centroid')));
  if (!png) return;
  const seconds = (performance.now() - start) / 1000;
  post({ type: 'centroid-result', seed: seed.buffer, image: png.buffer, seconds }, [seed.buffer, png.buffer]);
}

async function handle(message) {
  await started;
  switch (message.type) {
    case 'load':
      return load(message.model, message.vae, message.precision);
    case 'invert':
      return invert(message.image, message.settings);
    case 'edit':
      return edit(message.seed, message.settings);
    case 'interpolate':
      return interpolate(message);
    case 'centroid':
      return centroid(message);
    default:
      throw new Error(`unknown request ${message.type}`);
  }
}

// One request at a time; a failure is reported and does not stop the queue.
let queue = Promise.resolve();
self.onmessage = ({ data }) => {
  if (data.type === 'cancel') {
    cancel = true;
    return;
  }
  queue = queue
    .then(() => handle(data))
    .catch((e) => post({ type: 'error', op: data.type, message: oneLine(e) }));
};

// Anything that escapes the handlers still reaches the page's status line.
self.addEventListener('unhandledrejection', (event) => post({ type: 'error', op: 'worker', message: oneLine(event.reason) }));
