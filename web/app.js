// The page: gathers the model, the photo and the settings, and shows what the worker (worker.js) reports.
// Nothing heavy happens here; see worker.js for the message protocol.
//
// State for tests and styling is mirrored on <body>: data-webgpu (checking | ok | missing), data-model
// (none | loading | loaded | failed) and data-run (idle | running | done | cancelled | failed).

import { CACHE_NAME, folderFiles, looseFiles, modelBase, walkEntry } from './model-files.js';

const $ = (id) => document.getElementById(id);
const body = document.body;

let worker = null;
let ready = false; // WebGPU and the wasm module are usable
let loading = false;
let modelLoaded = false;
let sizeStep = 64;
let running = false;
let cancelRequested = false;
let lastModel = null; // the last load request, to reload after a hard stop
let photo = null; // { file, stem }
let run = null; // { stem, iterations, start, phase, phaseStart } of the running inversion
const blobUrls = new Map(); // element id → object URL, revoked when replaced

// ---------------------------------------------------------------------------------------------------------------
// Status line and activity log

/// Shows one line of status (kind: 'info' | 'error' | 'done') and adds it to the activity log.
function setStatus(text, kind = 'info') {
  const status = $('status');
  status.textContent = text;
  status.className = kind;
  const item = document.createElement('li');
  item.className = kind;
  item.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $('log').append(item);
}

/// Reports an error: in the status line, the log and the console.
function fail(text) {
  setStatus(text, 'error');
  console.error(`fpi: ${text}`);
}

/// 83.2 → "1:23"; 9.5 → "9.5 s".
function clock(seconds) {
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const s = Math.round(seconds);
  const pad = (v) => String(v).padStart(2, '0');
  const [h, m] = [Math.floor(s / 3600), Math.floor(s / 60) % 60];
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/// Points an <img> or <a> at a new blob, releasing the previous one.
function setBlob(id, bytes, type) {
  const url = URL.createObjectURL(new Blob([bytes], { type }));
  if (blobUrls.has(id)) URL.revokeObjectURL(blobUrls.get(id));
  blobUrls.set(id, url);
  const el = $(id);
  if (el.tagName === 'IMG') el.src = url;
  else el.href = url;
}

// Small images (the test model's 32 px) are scaled up as crisp pixels rather than blurred. ('load' does not
// bubble, so this listens in the capture phase.)
document.addEventListener('load', ({ target }) => {
  if (target.tagName === 'IMG') target.classList.toggle('pixelated', target.naturalWidth < 256);
}, true);

/// Enables exactly the controls that make sense now.
function update() {
  const busy = loading || running;
  for (const id of ['model-folder', 'model-files', 'model-url', 'load-url']) $(id).disabled = !ready || busy;
  $('clear-cache').disabled = busy;
  $('invert').disabled = !modelLoaded || !photo || busy;
  $('cancel').disabled = !running;
  $('cancel').textContent = cancelRequested ? 'Stop now' : 'Cancel';
}

// ---------------------------------------------------------------------------------------------------------------
// WebGPU detection: the page checks here, the worker checks where the model runs.

const WHY_NO_WEBGPU = {
  insecure: () => `This page was opened from ${location.origin}, which is not a secure context, so WebGPU is off.`,
  'no-api': () => 'This browser does not offer WebGPU (navigator.gpu is missing).',
  'no-adapter': () => 'This browser has WebGPU, but it offered no graphics adapter (a blocked driver, or a failed GPU process).',
  'no-worker': () => 'This browser offers WebGPU to pages but not to web workers, where fpi runs.',
};

async function mainGpu() {
  if (!window.isSecureContext) return { ok: false, reason: 'insecure' };
  if (!navigator.gpu) return { ok: false, reason: 'no-api' };
  const adapter = await navigator.gpu.requestAdapter().catch(() => null);
  return adapter ? { ok: true } : { ok: false, reason: 'no-adapter' };
}
const mainGpuCheck = mainGpu();

function showNoWebGpu(reason, detail) {
  const why = WHY_NO_WEBGPU[reason]() + (detail ? ` (${detail})` : '');
  $('webgpu-reason').textContent = why;
  $('webgpu-missing').hidden = false;
  body.dataset.webgpu = 'missing';
  fail(`WebGPU is not usable here: ${why}`);
}

// ---------------------------------------------------------------------------------------------------------------
// The worker

const handlers = {
  async hello({ gpu, wasm }) {
    const main = await mainGpuCheck;
    if (!main.ok) return showNoWebGpu(main.reason);
    if (!gpu.ok) return showNoWebGpu(gpu.reason === 'no-api' ? 'no-worker' : gpu.reason, gpu.detail);
    body.dataset.webgpu = 'ok';
    if (!wasm.ok) {
      body.dataset.model = 'failed';
      return fail(`${wasm.error} (build the site with bash web/build.sh)`);
    }
    ready = true;
    update();
    if (lastModel) return loadModel(lastModel); // after a hard stop
    setStatus(`ready (WebGPU: ${gpu.adapter || 'adapter found'}); choose a model`);
  },

  'load-status'({ text, done, total }) {
    const bar = $('load-progress');
    if (total > 0) bar.value = Math.min(done / total, 1);
    else bar.removeAttribute('value'); // indeterminate
    $('load-text').textContent = text;
  },

  loaded({ name, adapter, sizeStep: step, source }) {
    loading = false;
    modelLoaded = true;
    sizeStep = step;
    body.dataset.model = 'loaded';
    $('load-box').hidden = true;

    // Sizes must be multiples of the model's step.
    const size = $('size');
    size.step = String(step);
    size.min = String(step);
    const value = Number(size.value);
    if (!(value >= step && value % step === 0)) size.value = String(Math.max(step, Math.round(value / step) * step || 512));
    $('size-hint').textContent = `a multiple of ${step}`;

    const origin = source.downloaded || source.cached ? ` (${source.cached} from cache, ${source.downloaded} downloaded)` : '';
    const slow = /swiftshader|llvmpipe|lavapipe|software|basic render|\(cpu\b/i.test(adapter)
      ? ' A software adapter: expect it to be slow.'
      : '';
    const info = $('model-info');
    info.textContent = `${name}: ${source.files} files${origin}, on ${adapter}.${slow}`;
    info.dataset.cached = String(source.cached);
    info.dataset.downloaded = String(source.downloaded);
    setStatus(`model loaded (adapter ${adapter})`, 'done');
    update();
  },

  progress(p) {
    if (!run) return;
    const now = performance.now();
    if (p.phase !== run.phase) Object.assign(run, { phase: p.phase, phaseStart: now });
    const steps = Math.max(p.steps, 1);
    // The model may not report the iterations per step: the settings know them (1 when sampling).
    const iterations = p.phase === 'sample' ? 1 : Math.max(p.iterations ?? run.iterations, 1);
    // step counts from 0 and iteration from 1, as in fpi_core's Progress.
    const fraction = Math.min(Math.max((p.step + Math.min(p.iteration ?? 1, iterations) / iterations) / steps, 0), 1);
    $('progress').value = fraction;

    const label = { adjust: 'adjusting', invert: 'inverting', sample: 'sampling back' }[p.phase] ?? p.phase;
    const parts = [label, `step ${p.step + 1}/${p.steps}`];
    if (iterations > 1) parts.push(`iteration ${p.iteration}/${iterations}`);
    if (typeof p.residual === 'number') parts.push(`residual ${p.residual.toExponential(2)}`);
    const phaseSeconds = (now - run.phaseStart) / 1000;
    parts.push(clock((now - run.start) / 1000));
    if (fraction > 0.05 && fraction < 1) parts.push(`about ${clock((phaseSeconds / fraction) * (1 - fraction))} left in this phase`);
    $('progress-text').textContent = parts.join(' · ');
    body.dataset.phase = p.phase;
  },

  result(r) {
    running = false;
    cancelRequested = false;
    body.dataset.run = 'done';
    $('progress').value = 1;
    $('progress-text').textContent = `done in ${clock(r.seconds)}`;

    setBlob('original', r.original, 'image/png');
    setBlob('reconstruction', r.reconstruction, 'image/png');
    setBlob('download-seed', r.seed, 'application/octet-stream');
    setBlob('download-reconstruction', r.reconstruction, 'image/png');
    $('download-seed').download = `${run.stem}.seed.safetensors`;
    $('download-reconstruction').download = `${run.stem}.reconstruction.png`;

    const psnr = `PSNR ${r.psnr.toFixed(2)} dB (VAE bound ${r.vaePsnr.toFixed(2)} dB)`;
    $('psnr').textContent = psnr;
    $('metrics').textContent =
      `latent error ${r.latentError.toExponential(2)} · ${r.evaluations} UNet evaluations · ${clock(r.seconds)}`;
    $('result').hidden = false;
    $('result').scrollIntoView({ behavior: 'smooth', block: 'start' });
    setStatus(`done: ${psnr}`, 'done');
    run = null;
    update();
  },

  cancelled() {
    running = false;
    cancelRequested = false;
    run = null;
    body.dataset.run = 'cancelled';
    $('run-box').hidden = true;
    setStatus('cancelled');
    update();
  },

  error({ op, message }) {
    if (op === 'load-files' || op === 'load-url') {
      loading = false;
      modelLoaded = false; // the worker drops the old model before loading
      body.dataset.model = 'failed';
      $('load-box').hidden = true;
      fail(`could not load the model: ${message}`);
    } else if (op === 'invert') {
      running = false;
      cancelRequested = false;
      run = null;
      body.dataset.run = 'failed';
      $('run-box').hidden = true;
      fail(`inversion failed: ${message}`);
    } else {
      fail(message);
    }
    update();
  },
};

function startWorker() {
  ready = false;
  worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  worker.onmessage = ({ data }) => {
    const handler = handlers[data.type];
    if (handler) Promise.resolve(handler(data)).catch((e) => fail(`page error: ${e.message}`));
    else fail(`unexpected message '${data.type}' from the worker`);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    if (loading) body.dataset.model = 'failed';
    if (running) body.dataset.run = 'failed';
    loading = running = false;
    fail(`the worker failed: ${event.message || 'it could not start (see the browser console)'}`);
    update();
  };
  worker.onmessageerror = () => fail('a message from the worker could not be read');
}

// ---------------------------------------------------------------------------------------------------------------
// Model: a picked or dropped folder, picked or dropped files, or a URL

/// Starts loading; `what` describes the model in the status line (by default its URL, or name and file count).
function loadModel(request, what = null) {
  lastModel = request;
  loading = true;
  modelLoaded = false;
  body.dataset.model = 'loading';
  $('load-box').hidden = false;
  $('load-progress').value = 0;
  $('load-text').textContent = 'starting…';
  $('model-info').textContent = '';
  what ??= request.type === 'load-url' ? request.base : `${request.name} (${request.files.size} files)`;
  setStatus(`loading the model ${what}…`);
  worker.postMessage(request);
  update();
}

/// A folder's [path, File] pairs → a load request, or an error when it is not a model folder.
function useFolder(pairs) {
  if (pairs.length === 0) return fail('the folder is empty');
  const { files, name, missing } = folderFiles(pairs);
  if (missing.length > 2) {
    return fail(`${name} is not a diffusers model folder: pick the one that holds unet/, vae/, text_encoder/, tokenizer/ and scheduler/`);
  }
  if (missing.length) return fail(`${name} is not a complete diffusers model folder: it lacks ${missing.join(', ')}`);
  loadModel({ type: 'load-files', files, name });
}

/// Loose model files (not a folder) → a load request, or an error naming the files that do not fit.
async function useFiles(picked) {
  setStatus(`reading ${picked.length} files…`);
  const { files, name, missing, unknown, clashes } = await looseFiles(picked);
  if (clashes.length) return fail(`several files claim the same place: ${clashes.join('; ')} (pick one of each)`);
  if (missing.length) {
    const unrecognised = unknown.length ? `; not recognised: ${unknown.join(', ')}` : '';
    return fail(`the files lack ${missing.join(', ')}${unrecognised} (pick all of the model's files, or its folder)`);
  }
  const ignored = unknown.length ? `, ignoring ${unknown.join(', ')}` : '';
  loadModel({ type: 'load-files', files, name }, `from ${files.size} files${ignored}`);
}

$('model-folder').addEventListener('change', (event) => {
  const picked = [...event.target.files];
  event.target.value = ''; // so that picking the same folder again is a change
  if (picked.length) useFolder(picked.map((file) => [file.webkitRelativePath || file.name, file]));
});

$('model-files').addEventListener('change', (event) => {
  const picked = [...event.target.files];
  event.target.value = ''; // so that picking the same files again is a change
  if (picked.length) useFiles(picked).catch((e) => fail(`could not read the files: ${e.message}`));
});

$('url-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('model-url').value;
  if (!text.trim()) return fail('enter the URL of a model folder');
  let base;
  try {
    base = modelBase(text, location.href);
  } catch {
    return fail(`not a URL: ${text}`);
  }
  navigator.storage?.persist?.().catch(() => {}); // ask the browser not to evict gigabytes of weights
  loadModel({ type: 'load-url', base });
});

$('clear-cache').addEventListener('click', async () => {
  if (!self.caches) return fail('this page has no Cache Storage (not a secure context)');
  const cache = await caches.open(CACHE_NAME);
  const n = (await cache.keys()).length;
  await caches.delete(CACHE_NAME);
  setStatus(n ? `forgot ${n} downloaded files` : 'no downloaded weights were kept');
});

// ---------------------------------------------------------------------------------------------------------------
// Photo

/// A PNG, JPEG or WebP file, by its type or name.
const isImage = (file) => /^image\/(png|jpeg|webp)$/.test(file.type) || /\.(png|jpe?g|webp)$/i.test(file.name);

function usePhoto(file) {
  if (!isImage(file)) {
    return fail(`${file.name} is not a PNG, JPEG or WebP image`);
  }
  photo = { file, stem: file.name.replace(/\.[^.]*$/, '') || 'image' };
  const img = $('photo-preview');
  img.onload = () => ($('photo-info').textContent = `${file.name}, ${img.naturalWidth}×${img.naturalHeight}`);
  img.onerror = () => fail(`${file.name} could not be read as an image`);
  setBlob('photo-preview', file, file.type);
  $('photo-figure').hidden = false;
  setStatus(`photo: ${file.name}`);
  update();
}

$('image').addEventListener('change', (event) => {
  const [file] = event.target.files;
  if (file) usePhoto(file);
});

// ---------------------------------------------------------------------------------------------------------------
// Dropping a folder, model files or a photo anywhere on the page

let dragDepth = 0;
const carriesFiles = (event) => event.dataTransfer?.types.includes('Files');
window.addEventListener('dragenter', (event) => {
  if (!carriesFiles(event)) return;
  dragDepth += 1;
  $('drop-overlay').hidden = false;
});
window.addEventListener('dragleave', () => {
  dragDepth = Math.max(dragDepth - 1, 0);
  if (dragDepth === 0) $('drop-overlay').hidden = true;
});
window.addEventListener('dragover', (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault(); // allow the drop
  event.dataTransfer.dropEffect = 'copy';
});
window.addEventListener('drop', (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  $('drop-overlay').hidden = true;
  // Entries must be taken now: the DataTransfer is emptied once this handler returns.
  const entries = [...event.dataTransfer.items].filter((item) => item.kind === 'file').map((item) => item.webkitGetAsEntry?.());
  const files = [...event.dataTransfer.files];
  dropped(entries.filter(Boolean), files).catch((e) => fail(`could not read the drop: ${e.message}`));
});

/// A drop: a folder (or several) is a model folder; several loose files, not all images, are the model's files;
/// otherwise the (first) file is the photo.
async function dropped(entries, files) {
  const folders = entries.filter((entry) => entry.isDirectory);
  const model = folders.length > 0 || (files.length > 1 && !files.every(isImage));
  if (model && (!ready || loading || running)) return fail('a model can be dropped once WebGPU is ready and nothing runs');
  if (folders.length) {
    setStatus(`reading the folder ${folders[0].name}…`);
    const pairs = [];
    for (const folder of folders) await walkEntry(folder, pairs);
    return useFolder(pairs);
  }
  if (model) return useFiles(files);
  if (files.length) return usePhoto(files[0]);
  fail('drop a model folder, the model\'s files or a PNG, JPEG or WebP photo');
}

// ---------------------------------------------------------------------------------------------------------------
// Inverting

/// The settings from the form, checked; throws an Error with a message for the status line.
function readSettings() {
  const integer = (id, min, max = Infinity) => {
    const v = Number($(id).value);
    if (!Number.isInteger(v) || v < min || v > max) {
      const name = $(id).closest('label').firstChild.textContent.trim().toLowerCase();
      throw new Error(`${name} must be a whole number ${max < Infinity ? `from ${min} to ${max}` : `of at least ${min}`}`);
    }
    return v;
  };
  const size = integer('size', sizeStep);
  if (size % sizeStep !== 0) throw new Error(`size must be a multiple of ${sizeStep} for this model`);
  const steps = integer('steps', 1, 1000);
  const guidance = Number($('guidance').value);
  if (!(guidance >= 1)) throw new Error('guidance must be at least 1');
  return {
    prompt: $('prompt').value,
    size,
    steps,
    method: $('method').value,
    iterations: integer('iterations', 1, 1000),
    guidance,
    adjust: integer('adjust', 0, steps),
  };
}

$('settings').addEventListener('submit', async (event) => {
  event.preventDefault();
  if (!modelLoaded || !photo || running || loading) return;
  let settings;
  try {
    settings = readSettings();
  } catch (e) {
    return fail(e.message);
  }
  running = true;
  cancelRequested = false;
  const now = performance.now();
  const iterations = settings.method === 'fpi' ? settings.iterations : 1;
  run = { stem: photo.stem, iterations, start: now, phase: null, phaseStart: now };
  body.dataset.run = 'running';
  delete body.dataset.phase;
  $('run-box').hidden = false;
  $('progress').value = 0;
  $('progress-text').textContent = 'starting…';
  update();
  setStatus(`inverting ${photo.file.name} at ${settings.size}×${settings.size}, ${settings.steps} steps…`);
  try {
    const image = await photo.file.arrayBuffer();
    worker.postMessage({ type: 'invert', image, settings }, [image]);
  } catch (e) {
    handlers.error({ op: 'invert', message: `could not read ${photo.file.name}: ${e.message}` });
  }
});

$('cancel').addEventListener('click', () => {
  if (!running) return;
  if (!cancelRequested) {
    // Soft: the worker stops after the UNet evaluation in progress.
    cancelRequested = true;
    worker.postMessage({ type: 'cancel' });
    setStatus('cancelling after the current step… (Stop now ends it at once and reloads the model)');
    update();
    return;
  }
  // Hard: end the worker (and the model with it), start a fresh one and reload the model.
  worker.terminate();
  running = cancelRequested = modelLoaded = false;
  run = null;
  body.dataset.run = 'cancelled';
  body.dataset.model = 'none';
  $('run-box').hidden = true;
  setStatus('stopped; reloading the model…');
  startWorker();
  update();
});

// ---------------------------------------------------------------------------------------------------------------
// Errors that escape everything above still reach the status line.

window.addEventListener('error', (event) => fail(`page error: ${event.message}`));
window.addEventListener('unhandledrejection', (event) => fail(`page error: ${event.reason?.message ?? event.reason}`));

startWorker();
update();
