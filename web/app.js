// The page: gathers the model, the photo and the settings, and shows what the worker (worker.js) reports.
// Nothing heavy happens here; see worker.js for the message protocol.
//
// What can change lives in one object, `state`, changed only by setState, which then calls render. render mirrors
// the state on <body> for tests and styling: data-webgpu (checking | ok | missing), data-model (none | loading |
// loaded | failed), data-run (idle | running | done | cancelled | failed), data-phase (adjust | invert | sample:
// the phase the run reported last), data-edit (idle | running | done | cancelled | failed: the last edit of the
// inversion shown), data-interpolate (idle | running | done | cancelled | failed: the last interpolation) and
// data-centroid (the same, for the last centroid);
// #model-info carries data-name, data-format (diffusers | checkpoint), data-vae (the replacement
// VAE's name, '' for the model's own), data-cached and data-downloaded (the model's and the VAE's files together)
// and data-precision (f16 | f32: what the networks compute in) once a model is loaded. It also enables the controls
// and shows the boxes that fit the state.
//
// A replacement VAE (state.vae) goes with every model load until it is cleared; choosing or clearing one reloads
// the model that is loaded.
//
// After an inversion the Edit panel edits its seed with Prompt-to-Prompt, as often as wanted: the page keeps the
// seed (state.source) and sends it with every edit request.
//
// The Interpolate panel makes frames between two seeds of state.seeds: every inversion's seed joins that list, and
// so do seed files added in the panel or dropped on the page; the panel starts with the last two. The worker sends
// the frames one by one, each a PNG and its seed file, into a strip.
//
// Inversions, edits and interpolations take turns: one runs at a time.

import { CACHE_NAME, modelFromFiles, modelFromFolder, parseLocation, vaeFromFiles, walkEntry } from './model-files.js';
import { defaultPair, frameName, readSeedHeader, sampling, seedLabel } from './seeds.js';

const $ = (id) => document.getElementById(id);

/** The page's state: read it anywhere, change it only with setState. */
const state = {
  webgpu: 'checking', // checking | ok | missing
  whyNoWebGpu: '', // when missing: why, in words
  ready: false, // WebGPU and the wasm module are usable in the current worker
  model: 'none', // none | loading | loaded | failed
  modelInfo: null, // the loaded model: { name, format, vae, adapter, software, precision, shaderF16, files, cached,
  // downloaded }
  sizeStep: 64, // image sides must be multiples of this
  lastModel: null, // the last model loaded (its source, as worker.js takes it), to reload after a hard stop or a new VAE
  vae: null, // the replacement VAE: { source (as worker.js takes it), name }, or null for the model's own
  photo: null, // { file, stem }
  run: 'idle', // idle | running | done | cancelled | failed
  phase: null, // adjust | invert | sample: the phase the run reported last
  phaseStart: 0, // when that phase began (performance.now())
  job: null, // the running inversion: { stem, iterations, start }
  cancelRequested: false, // the soft cancel was sent; the Cancel button now stops at once
  source: null, // the inversion shown, which edits start from: { seed (ArrayBuffer), stem, prompt, steps, guidance }
  edit: 'idle', // idle | running | done | cancelled | failed: the last edit of that inversion
  editJob: null, // the running edit: { prompt, start }
  edited: null, // the edit shown: { prompt, mode, seconds }
  editError: '', // why the last edit failed, in one line
  seeds: [], // the seeds to interpolate between: { bytes (ArrayBuffer), name (a file name), shape, meta }
  interp: 'idle', // idle | running | done | cancelled | failed: the last interpolation
  interpJob: null, // the running interpolation: { names, method, frames, start }
  interpError: '', // why the last interpolation failed, in one line
  centroid: 'idle', // idle | running | done | cancelled | failed: the last centroid
  centroidJob: null, // the running centroid: { names, method, start }
  centroidError: '', // why the last centroid failed, in one line
  dragDepth: 0, // how deep inside the page files are being dragged (0: not dragging)
};

/** Changes the state and shows it. */
function setState(patch) {
  Object.assign(state, patch);
  render();
}

/** The state that ends a run (outcome: done | cancelled | failed), with `patch`. */
const endRun = (outcome, patch = {}) => setState({ run: outcome, job: null, cancelRequested: false, ...patch });

/** The state that ends an edit (outcome: done | cancelled | failed), with `patch`. */
const endEdit = (outcome, patch = {}) => setState({ edit: outcome, editJob: null, cancelRequested: false, ...patch });

/** The state that ends an interpolation (outcome: done | cancelled | failed), with `patch`. */
const endInterp = (outcome, patch = {}) => setState({ interp: outcome, interpJob: null, cancelRequested: false, ...patch });

/** The state that ends a centroid (outcome: done | cancelled | failed), with `patch`. */
const endCentroid = (outcome, patch = {}) => setState({ centroid: outcome, centroidJob: null, cancelRequested: false, ...patch });

/** A model is loading, or an inversion, an edit, an interpolation or a centroid is running: nothing else may start. */
const busy = () => state.model === 'loading' || state.run === 'running' || state.edit === 'running' || state.interp === 'running'
  || state.centroid === 'running';

/** Where downloaded files came from: " (9 from cache, 0 downloaded)", or '' for picked files. */
const origin = ({ cached, downloaded }) => (downloaded || cached ? ` (${cached} from cache, ${downloaded} downloaded)` : '');

/** The loaded model in one line, with the VAE it uses. */
function describeModel({ name, format, vae, adapter, software, precision, shaderF16, ...counts }) {
  const configs = counts.files - 1;
  const files = format === 'checkpoint'
    ? `a single-file checkpoint${configs > 0 ? ` with ${configs} config files` : ''}`
    : `${counts.files} files`;
  const vaeText = vae ? `VAE ${vae.name} (${vae.files} file${vae.files === 1 ? '' : 's'}${origin(vae)})` : 'its own VAE';
  const slow = software ? ' A software adapter: expect it to be slow.' : '';
  const why = precision === 'f32' && !shaderF16 ? ': this adapter has no shader-f16' : '';
  return `${name}: ${files}${origin(counts)}, ${vaeText}, on ${adapter}, running in ${precision}${why}.${slow}`;
}

/** Writes the state into the page: <body>'s data-* attributes, the controls, the boxes. */
function render() {
  const { dataset } = document.body;
  dataset.webgpu = state.webgpu;
  dataset.model = state.model;
  dataset.run = state.run;
  dataset.edit = state.edit;
  dataset.interpolate = state.interp;
  dataset.centroid = state.centroid;
  if (state.phase) dataset.phase = state.phase;
  else delete dataset.phase;

  $('webgpu-missing').hidden = state.webgpu !== 'missing';
  $('webgpu-reason').textContent = state.whyNoWebGpu;

  const modelControls = ['model-folder', 'model-files', 'model-url', 'load-url', 'vae-folder', 'vae-files', 'vae-url', 'load-vae-url'];
  for (const id of modelControls) $(id).disabled = !state.ready || busy();
  $('vae-clear').disabled = !state.ready || busy() || !state.vae;
  $('vae-clear').hidden = !state.vae;
  $('vae-name').textContent = state.vae ? state.vae.name : "none: the model's own";
  $('clear-cache').disabled = busy();
  $('precision').disabled = busy();
  $('load-box').hidden = state.model !== 'loading';
  const info = $('model-info');
  const model = state.modelInfo;
  info.textContent = model ? describeModel(model) : '';
  const data = model && {
    name: model.name,
    format: model.format,
    vae: model.vae?.name ?? '',
    cached: model.cached + (model.vae?.cached ?? 0),
    downloaded: model.downloaded + (model.vae?.downloaded ?? 0),
    precision: model.precision,
  };
  for (const key of ['name', 'format', 'vae', 'cached', 'downloaded', 'precision']) {
    if (data) info.dataset[key] = String(data[key]);
    else delete info.dataset[key];
  }

  const size = $('size');
  size.min = size.step = String(state.sizeStep);
  $('size-hint').textContent = `a multiple of ${state.sizeStep}`;
  $('photo-figure').hidden = !state.photo;

  $('invert').disabled = state.model !== 'loaded' || !state.photo || busy();
  $('cancel').disabled = state.run !== 'running';
  $('cancel').textContent = state.cancelRequested && state.run === 'running' ? 'Stop now' : 'Cancel';
  $('run-box').hidden = !['running', 'done'].includes(state.run);

  $('edit-section').hidden = !state.source;
  $('edit').disabled = state.model !== 'loaded' || !state.source || busy();
  $('edit-cancel').disabled = state.edit !== 'running';
  $('edit-cancel').textContent = state.cancelRequested && state.edit === 'running' ? 'Stop now' : 'Cancel';
  $('edit-box').hidden = !['running', 'done'].includes(state.edit);
  $('edit-error').textContent = state.editError;
  $('edit-error').hidden = !state.editError;
  $('edit-figure').hidden = !state.edited;
  $('download-edit').hidden = !state.edited;
  $('edit-caption').textContent = state.edited ? `edited: “${state.edited.prompt}” (${state.edited.mode})` : '';

  const seeds = state.seeds.length;
  $('interp-seeds').textContent = seeds
    ? `${seeds} seed${seeds === 1 ? '' : 's'} to choose from`
    : 'no seeds yet: invert a photo, or add seed files';
  for (const id of ['interp-from', 'interp-to']) $(id).disabled = seeds === 0;
  $('interpolate').disabled = state.model !== 'loaded' || seeds === 0 || busy();
  $('interp-cancel').disabled = state.interp !== 'running';
  $('interp-cancel').textContent = state.cancelRequested && state.interp === 'running' ? 'Stop now' : 'Cancel';
  $('interp-box').hidden = !['running', 'done'].includes(state.interp);
  $('interp-error').textContent = state.interpError;
  $('interp-error').hidden = !state.interpError;
  $('interp-strip-hint').hidden = $('interp-strip').childElementCount === 0;
  $('centroid').disabled = state.model !== 'loaded' || seeds < 2 || busy();
  $('centroid-error').textContent = state.centroidError;
  $('centroid-error').hidden = !state.centroidError;
  $('centroid-progress-text').hidden = state.centroid !== 'running' && state.centroid !== 'done';
  $('drop-overlay').hidden = state.dragDepth === 0;
}

let worker = null;
const blobUrls = new Map(); // element id → object URL, revoked when replaced

// ---------------------------------------------------------------------------------------------------------------
// Status line and activity log

/** Shows one line of status (kind: 'info' | 'warning' | 'error' | 'done') and adds it to the activity log. */
function setStatus(text, kind = 'info') {
  const status = $('status');
  status.textContent = text;
  status.className = kind;
  const item = document.createElement('li');
  item.className = kind;
  item.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $('log').append(item);
}

/** Reports an error: in the status line, the log and the console. */
function fail(text) {
  setStatus(text, 'error');
  console.error(`fpi: ${text}`);
}

/** 83.2 → "1:23"; 9.5 → "9.5 s". */
function clock(seconds) {
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const s = Math.round(seconds);
  const pad = (v) => String(v).padStart(2, '0');
  const [h, m] = [Math.floor(s / 3600), Math.floor(s / 60) % 60];
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/** Points an <img> or <a> at a new blob, releasing the previous one. */
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
  setState({ webgpu: 'missing', whyNoWebGpu: why });
  fail(`WebGPU is not usable here: ${why}`);
}

// ---------------------------------------------------------------------------------------------------------------
// The worker

const PHASE_LABELS = { adjust: 'adjusting', invert: 'inverting', sample: 'sampling back' };

const handlers = {
  async hello({ gpu, wasm }) {
    const main = await mainGpuCheck;
    if (!main.ok) return showNoWebGpu(main.reason);
    if (!gpu.ok) return showNoWebGpu(gpu.reason === 'no-api' ? 'no-worker' : gpu.reason, gpu.detail);
    if (!wasm.ok) {
      setState({ webgpu: 'ok', model: 'failed' });
      return fail(`${wasm.error} (build the site with bash web/build.sh)`);
    }
    setState({ webgpu: 'ok', ready: true });
    if (state.lastModel) return loadModel(state.lastModel); // after a hard stop
    setStatus(`ready (WebGPU: ${gpu.adapter || 'adapter found'}); choose a model`);
  },

  'load-status'({ text, done, total }) {
    const bar = $('load-progress');
    if (total > 0) bar.value = Math.min(done / total, 1);
    else bar.removeAttribute('value'); // indeterminate
    $('load-text').textContent = text;
  },

  loaded({ name, format, vae, adapter, software, precision, shaderF16, sizeStep, source }) {
    // Sizes must be multiples of the model's step: the chosen one goes to the nearest.
    const size = $('size');
    const value = Number(size.value);
    if (!(value >= sizeStep && value % sizeStep === 0)) {
      size.value = String(Math.max(sizeStep, Math.round(value / sizeStep) * sizeStep || 512));
    }
    setState({
      model: 'loaded', sizeStep, modelInfo: { name, format, vae, adapter, software, precision, shaderF16, ...source },
    });
    setStatus(`model loaded${vae ? ` with the VAE ${vae.name}` : ''} (adapter ${adapter}, ${precision})`, 'done');
  },

  progress(p) {
    if (p.op === 'edit') return editProgress(p);
    if (p.op === 'interpolate') return interpProgress(p);
    if (p.op === 'centroid') return centroidProgress(p);
    const { job } = state;
    if (!job) return;
    const now = performance.now();
    if (p.phase !== state.phase) setState({ phase: p.phase, phaseStart: now });
    const steps = Math.max(p.steps, 1);
    const iterations = p.phase === 'sample' ? 1 : job.iterations;
    // step counts from 0 and iteration from 1, as in fpi_core's Progress.
    const fraction = Math.min(Math.max((p.step + Math.min(p.iteration, iterations) / iterations) / steps, 0), 1);
    $('progress').value = fraction;

    const parts = [PHASE_LABELS[p.phase] ?? p.phase, `step ${p.step + 1}/${p.steps}`];
    if (iterations > 1) parts.push(`iteration ${p.iteration}/${iterations}`);
    if (typeof p.residual === 'number') parts.push(`residual ${p.residual.toExponential(2)}`);
    const phaseSeconds = (now - state.phaseStart) / 1000;
    parts.push(clock((now - job.start) / 1000));
    if (fraction > 0.05 && fraction < 1) parts.push(`about ${clock((phaseSeconds / fraction) * (1 - fraction))} left in this phase`);
    $('progress-text').textContent = parts.join(' · ');
  },

  result(r) {
    const { job } = state;
    if (!job) return;
    $('progress').value = 1;
    $('progress-text').textContent = `done in ${clock(r.seconds)}`;

    setBlob('original', r.original, 'image/png');
    setBlob('reconstruction', r.reconstruction, 'image/png');
    setBlob('download-seed', r.seed, 'application/octet-stream');
    setBlob('download-reconstruction', r.reconstruction, 'image/png');
    $('download-seed').download = `${job.stem}.seed.safetensors`;
    $('download-reconstruction').download = `${job.stem}.reconstruction.png`;

    const psnr = `PSNR ${r.psnr.toFixed(2)} dB (VAE bound ${r.vaePsnr.toFixed(2)} dB)`;
    $('psnr').textContent = psnr;
    $('metrics').textContent =
      `latent error ${r.latentError.toExponential(2)} · ${r.evaluations} UNet evaluations · ${clock(r.seconds)}`;
    // As the CLI warns: CLIP reads 77 tokens, and the rest of a longer prompt had no effect.
    const dropped = r.droppedTokens > 0
      ? `The prompt is longer than CLIP's 77 tokens: its last ${r.droppedTokens} tokens were ignored.`
      : '';
    $('prompt-warning').textContent = dropped;
    $('prompt-warning').hidden = !dropped;
    $('result').hidden = false;
    // The panel edits this inversion from now on: its target prompt, steps and guidance start as the inversion's.
    $('edit-prompt').value = job.prompt;
    $('edit-steps').value = String(job.steps);
    $('edit-guidance').value = String(job.guidance);
    const { prompt, steps, guidance } = job;
    endRun('done', { source: { seed: r.seed, stem: job.stem, prompt, steps, guidance }, edit: 'idle', edited: null, editError: '' });
    // The seed joins the Interpolate panel's list (under its download name, which the frames record as a source).
    addSeeds([{ bytes: r.seed, name: `${job.stem}.seed.safetensors` }]).catch((e) => fail(`page error: ${e.message}`));
    $('result').scrollIntoView({ behavior: 'smooth', block: 'start' });
    if (dropped) setStatus(dropped, 'warning');
    setStatus(`done: ${psnr}`, 'done');
  },

  'edit-result'(r) {
    const job = state.editJob;
    if (!job) return;
    $('edit-progress').value = 1;
    $('edit-progress-text').textContent = `done in ${clock(r.seconds)} (${r.evaluations} UNet evaluations)`;
    setBlob('edited', r.edit, 'image/png');
    setBlob('download-edit', r.edit, 'image/png');
    $('download-edit').download = `${state.source.stem}-edit.png`;
    endEdit('done', { edited: { prompt: job.prompt, mode: job.mode, seconds: r.seconds } });
    $('edit-figure').scrollIntoView({ behavior: 'smooth', block: 'nearest' });
    setStatus(`edited: “${job.prompt}” in ${clock(r.seconds)}`, 'done');
  },

  path({ frames, seconds }) {
    const job = state.interpJob;
    if (!job) return;
    $('interp-progress-text').textContent = `frame 1 of ${frames} · starting…`;
    setStatus(`the ${job.method} path is ready (${clock(seconds)}); sampling ${frames} frames…`);
  },

  frame(f) {
    const job = state.interpJob;
    if (!job) return;
    addFrame(job, f);
    $('interp-progress').value = (f.index + 1) / f.frames;
    render(); // the strip's hint
  },

  'interpolate-result'({ frames, seconds }) {
    const job = state.interpJob;
    if (!job) return;
    $('interp-progress').value = 1;
    $('interp-progress-text').textContent = `${frames} frames in ${clock(seconds)}`;
    endInterp('done');
    setStatus(`interpolated: ${frames} frames (${job.method}) in ${clock(seconds)}`, 'done');
  },

  'centroid-result'({ seed, image, seconds }) {
    const job = state.centroidJob;
    if (!job) return;
    const stem = `centroid.${job.method}`;
    setBlob('centroid-image', image, 'image/png');
    setBlob('download-centroid', image, 'image/png');
    setBlob('download-centroid-seed', seed, 'application/octet-stream');
    $('download-centroid').download = `${stem}.png`;
    $('download-centroid-seed').download = `${stem}.seed.safetensors`;
    $('centroid-figure').hidden = false;
    $('centroid-progress-text').textContent = `the centre of ${job.names.length} seeds (${job.method}) in ${clock(seconds)}`;
    endCentroid('done');
    setStatus(`centroid of ${job.names.length} seeds (${job.method}) in ${clock(seconds)}`, 'done');
  },

  cancelled({ op }) {
    if (op === 'edit') endEdit('cancelled');
    else if (op === 'interpolate') endInterp('cancelled');
    else if (op === 'centroid') endCentroid('cancelled');
    else endRun('cancelled');
    setStatus({ edit: 'edit cancelled', interpolate: 'interpolation cancelled' }[op] ?? 'cancelled');
  },

  error({ op, message }) {
    if (op === 'load') {
      setState({ model: 'failed', modelInfo: null }); // the worker drops the old model before loading
      fail(`could not load the model: ${message}`);
    } else if (op === 'invert') {
      endRun('failed');
      fail(`inversion failed: ${message}`);
    } else if (op === 'edit') {
      endEdit('failed', { editError: message });
      fail(`edit failed: ${message}`);
    } else if (op === 'interpolate') {
      endInterp('failed', { interpError: message });
      fail(`interpolation failed: ${message}`);
    } else if (op === 'centroid') {
      endCentroid('failed', { centroidError: message });
      fail(`centroid failed: ${message}`);
    } else {
      fail(message);
    }
  },
};

function startWorker() {
  setState({ ready: false });
  worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  worker.onmessage = ({ data }) => {
    const handler = handlers[data.type];
    if (handler) Promise.resolve(handler(data)).catch((e) => fail(`page error: ${e.message}`));
    else fail(`unexpected message '${data.type}' from the worker`);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    if (state.model === 'loading') setState({ model: 'failed' });
    if (state.run === 'running') endRun('failed');
    if (state.edit === 'running') endEdit('failed', { editError: 'the worker failed' });
    if (state.interp === 'running') endInterp('failed', { interpError: 'the worker failed' });
    fail(`the worker failed: ${event.message || 'it could not start (see the browser console)'}`);
  };
  worker.onmessageerror = () => fail('a message from the worker could not be read');
}

// ---------------------------------------------------------------------------------------------------------------
// Model: a picked or dropped folder, picked or dropped files, or a URL

/**
 * Starts loading `source` (a model source as worker.js takes it) with the replacement VAE, if one is chosen. `what`
 * describes the model in the status line (by default its URL, or name and file count).
 */
function loadModel(source, what = null) {
  $('load-progress').value = 0;
  $('load-text').textContent = 'starting…';
  setState({ lastModel: source, model: 'loading', modelInfo: null });
  what ??= source.kind === 'url' ? source.base + (source.file ?? '') : `${source.name} (${source.files.size} files)`;
  setStatus(`loading the model ${what}${state.vae ? ` with the VAE ${state.vae.name}` : ''}…`);
  worker.postMessage({ type: 'load', model: source, vae: state.vae?.source ?? null, precision: $('precision').value });
}

/** Sets (or, with null, clears) the replacement VAE, reloading the model that is loaded (or failed) with it. */
function setVae(vae, reload = true) {
  setState({ vae });
  if (reload && state.lastModel && state.model !== 'none') return loadModel(state.lastModel);
  setStatus(vae ? `VAE ${vae.name}: the next model loads with it` : "VAE: the model's own");
}

/** A picked or dropped model (or VAE, or both; see modelFromFiles in model-files.js) → a load, or an error. */
function useGathered({ model, vae, ignored, error }) {
  if (error) return fail(error);
  const also = ignored.length ? `, ignoring ${ignored.join(', ')}` : '';
  if (!model) return setVae({ source: { kind: 'files', files: vae.files, name: vae.name }, name: vae.name });
  if (vae) setVae({ source: { kind: 'files', files: vae.files, name: vae.name }, name: vae.name }, false);
  const what = model.format === 'checkpoint' ? `${model.name} (a single-file checkpoint${also})` : `${model.name} (${model.files.size} files${also})`;
  loadModel({ kind: 'files', ...model }, what);
}

/** A folder's [path, File] pairs → a load (see modelFromFolder). */
async function useFolder(pairs) {
  useGathered(await modelFromFolder(pairs));
}

/** Loose files → a load (see modelFromFiles). */
async function useFiles(picked) {
  setStatus(`reading ${picked.length === 1 ? picked[0].name : `${picked.length} files`}…`);
  useGathered(await modelFromFiles(picked));
}

/** A picked VAE (a folder's pairs or loose files; see vaeFromFiles) → the replacement VAE, or an error. */
async function useVaeFiles(picked, name) {
  const { vae, error } = await vaeFromFiles(picked, name);
  if (error) return fail(error);
  setVae({ source: { kind: 'files', files: vae.files, name: vae.name }, name: vae.name });
}

$('model-folder').addEventListener('change', (event) => {
  const picked = [...event.target.files];
  event.target.value = ''; // so that picking the same folder again is a change
  if (picked.length) useFolder(picked.map((file) => [file.webkitRelativePath || file.name, file])).catch((e) => fail(`could not read the folder: ${e.message}`));
});

$('model-files').addEventListener('change', (event) => {
  const picked = [...event.target.files];
  event.target.value = ''; // so that picking the same files again is a change
  if (picked.length) useFiles(picked).catch((e) => fail(`could not read the files: ${e.message}`));
});

/** The URL field's text as a source (see parseLocation), or null after saying why not. */
function urlSource(text, field) {
  if (!text.trim()) {
    fail(`enter the URL or Hugging Face id of a ${field}`);
    return null;
  }
  try {
    return { kind: 'url', ...parseLocation(text, location.href) };
  } catch (e) {
    fail(e instanceof TypeError ? `not a URL or a Hugging Face id (ORG/NAME): ${text.trim()}` : e.message);
    return null;
  }
}

$('url-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const source = urlSource($('model-url').value, 'model');
  if (!source) return;
  navigator.storage?.persist?.().catch(() => {}); // ask the browser not to evict gigabytes of weights
  loadModel(source);
});

$('vae-folder').addEventListener('change', (event) => {
  const picked = [...event.target.files];
  event.target.value = '';
  const name = picked[0]?.webkitRelativePath.split('/')[0] || undefined;
  if (picked.length) useVaeFiles(picked, name).catch((e) => fail(`could not read the VAE: ${e.message}`));
});

$('vae-files').addEventListener('change', (event) => {
  const picked = [...event.target.files];
  event.target.value = '';
  if (picked.length) useVaeFiles(picked).catch((e) => fail(`could not read the VAE: ${e.message}`));
});

$('vae-url-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const source = urlSource($('vae-url').value, 'VAE');
  if (source) setVae({ source, name: source.name });
});

$('vae-clear').addEventListener('click', () => setVae(null));
$('precision').addEventListener('change', () => {
  if (state.lastModel && state.model !== 'none') loadModel(state.lastModel);
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

/** A PNG, JPEG or WebP file, by its type or name. */
const isImage = (file) => /^image\/(png|jpeg|webp)$/.test(file.type) || /\.(png|jpe?g|webp)$/i.test(file.name);

function usePhoto(file) {
  if (!isImage(file)) {
    return fail(`${file.name} is not a PNG, JPEG or WebP image`);
  }
  const img = $('photo-preview');
  img.onload = () => ($('photo-info').textContent = `${file.name}, ${img.naturalWidth}×${img.naturalHeight}`);
  img.onerror = () => fail(`${file.name} could not be read as an image`);
  setBlob('photo-preview', file, file.type);
  setState({ photo: { file, stem: file.name.replace(/\.[^.]*$/, '') || 'image' } });
  setStatus(`photo: ${file.name}`);
}

$('image').addEventListener('change', (event) => {
  const [file] = event.target.files;
  if (file) usePhoto(file);
});

// ---------------------------------------------------------------------------------------------------------------
// Dropping a folder, model files or a photo anywhere on the page

const carriesFiles = (event) => event.dataTransfer?.types.includes('Files');
window.addEventListener('dragenter', (event) => {
  if (carriesFiles(event)) setState({ dragDepth: state.dragDepth + 1 });
});
window.addEventListener('dragleave', () => setState({ dragDepth: Math.max(state.dragDepth - 1, 0) }));
window.addEventListener('dragover', (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault(); // allow the drop
  event.dataTransfer.dropEffect = 'copy';
});
window.addEventListener('drop', (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  setState({ dragDepth: 0 });
  // Entries must be taken now: the DataTransfer is emptied once this handler returns.
  const entries = [...event.dataTransfer.items].filter((item) => item.kind === 'file').map((item) => item.webkitGetAsEntry?.());
  const files = [...event.dataTransfer.files];
  dropped(entries.filter(Boolean), files).catch((e) => fail(`could not read the drop: ${e.message}`));
});

/** A file that can be part of a model or a VAE, by its name (a pickle too, to say why it cannot). */
const isModelFile = (file) => /\.(safetensors|json|txt|ckpt|pt|pth|bin)$/i.test(file.name);

/**
 * A drop: seed files (.safetensors with a tensor `latents`, and nothing else) join the Interpolate panel's seeds; a
 * folder (or several) is a model folder (or a VAE's); several files, not all images, or one model file are the
 * model's files (or a checkpoint, or a VAE; see modelFromFiles); otherwise the (first) file is the photo.
 */
async function dropped(entries, files) {
  const folders = entries.filter((entry) => entry.isDirectory);
  if (!folders.length && files.length && files.every(isSeedName) && (await allSeeds(files))) return addSeedFiles(files);
  const model = folders.length > 0 || (files.length > 1 && !files.every(isImage)) || (files.length === 1 && isModelFile(files[0]));
  if (model && (!state.ready || busy())) return fail('a model can be dropped once WebGPU is ready and nothing runs');
  if (folders.length) {
    setStatus(`reading the folder ${folders[0].name}…`);
    const pairs = [];
    for (const folder of folders) await walkEntry(folder, pairs);
    return useFolder(pairs);
  }
  if (model) return useFiles(files);
  if (files.length) return usePhoto(files[0]);
  fail('drop a model folder, the model\'s files, a checkpoint, a VAE or a PNG, JPEG or WebP photo');
}

// ---------------------------------------------------------------------------------------------------------------
// Inverting

/**
 * The value of the number field `id`, checked against the field's own min, max and step (a whole step makes it
 * a whole number; a step above 1, as the size's, a multiple of it). Throws an Error naming the field's label.
 */
function numberField(id) {
  const input = $(id);
  const label = input.closest('label').firstChild.textContent.trim();
  const value = Number(input.value);
  const min = input.min === '' ? -Infinity : Number(input.min);
  const max = input.max === '' ? Infinity : Number(input.max);
  const step = Number(input.step);
  const whole = Number.isInteger(step); // guidance's step 0.5 is only what the arrows add
  if (input.value.trim() === '' || !Number.isFinite(value) || value < min || value > max || (whole && !Number.isInteger(value))) {
    const range = max < Infinity ? `from ${min} to ${max}` : `of at least ${min}`;
    throw new Error(`${label} must be ${whole ? 'a whole number' : 'a number'} ${range}`);
  }
  if (whole && step > 1 && value % step !== 0) throw new Error(`${label} must be a multiple of ${step} for this model`);
  return value;
}

/** The settings from the form, checked against its limits; throws an Error with a message for the status line. */
function readSettings() {
  return {
    prompt: $('prompt').value,
    size: numberField('size'),
    steps: numberField('steps'),
    method: $('method').value,
    iterations: numberField('iterations'),
    guidance: numberField('guidance'),
    adjust: numberField('adjust'),
  };
}

$('settings').addEventListener('submit', async (event) => {
  event.preventDefault();
  const { photo } = state;
  if (state.model !== 'loaded' || !photo || busy()) return;
  let settings;
  try {
    settings = readSettings();
  } catch (e) {
    return fail(e.message);
  }
  const now = performance.now();
  const iterations = settings.method === 'fpi' ? settings.iterations : 1;
  $('progress').value = 0;
  $('progress-text').textContent = 'starting…';
  setState({
    run: 'running',
    phase: null,
    phaseStart: now,
    job: { stem: photo.stem, iterations, start: now, prompt: settings.prompt, steps: settings.steps, guidance: settings.guidance },
    cancelRequested: false,
  });
  setStatus(`inverting ${photo.file.name} at ${settings.size}×${settings.size}, ${settings.steps} steps…`);
  try {
    const image = await photo.file.arrayBuffer();
    worker.postMessage({ type: 'invert', image, settings }, [image]);
  } catch (e) {
    handlers.error({ op: 'invert', message: `could not read ${photo.file.name}: ${e.message}` });
  }
});

/**
 * Cancels the running inversion, edit or interpolation: the first click softly (the worker stops after the UNet
 * evaluation in progress), the second at once (the worker ends, and a fresh one reloads the model; the seeds and the
 * frames done stay on the page).
 */
function cancelRunning() {
  const running = { invert: state.run, edit: state.edit, interpolate: state.interp, centroid: state.centroid };
  const op = Object.keys(running).find((key) => running[key] === 'running');
  if (!op) return;
  if (!state.cancelRequested) {
    worker.postMessage({ type: 'cancel' });
    setState({ cancelRequested: true });
    const after = op === 'interpolate' ? 'frame' : 'step';
    setStatus(`cancelling after the current ${after}… (Stop now ends it at once and reloads the model)`);
    return;
  }
  worker.terminate();
  const patch = { model: 'none', modelInfo: null };
  ({ invert: endRun, edit: endEdit, interpolate: endInterp, centroid: endCentroid })[op]('cancelled', patch);
  setStatus('stopped; reloading the model…');
  startWorker();
}

$('cancel').addEventListener('click', cancelRunning);

// ---------------------------------------------------------------------------------------------------------------
// Editing the inversion's seed

/** Space-separated words ('' → none). */
const words = (text) => text.split(/\s+/).filter(Boolean);

/** 'red=2 camera=0.5' → [['red', 2], ['camera', 0.5]]; throws an Error naming `field` and the entry that does not parse. */
function parseWordNumbers(text, field, example) {
  return words(text).map((entry) => {
    const match = entry.match(/^([^=]+)=(.+)$/);
    const number = Number(match?.[2]);
    if (!match || !Number.isFinite(number)) {
      throw new Error(`${field}: '${entry}' is not WORD=NUMBER (e.g. ${example})`);
    }
    return [match[1], number];
  });
}

/** The edit panel's settings as Model.edit takes them; throws an Error with a message for the status line. */
function readEditSettings() {
  const prompt = $('edit-prompt').value;
  if (!prompt.trim()) throw new Error('enter the target prompt');
  const settings = {
    prompt,
    cross_steps: numberField('edit-cross'),
    self_steps: numberField('edit-self'),
    blend: words($('edit-blend').value),
    blend_threshold: numberField('edit-threshold'),
    blend_start: numberField('edit-blend-start'),
    reweight: parseWordNumbers($('edit-reweight').value, 'reweight', 'red=2 camera=0.5'),
    cross_word_steps: parseWordNumbers($('edit-word-windows').value, 'word windows', 'guitar=0.3'),
    steps: numberField('edit-steps'),
    guidance: numberField('edit-guidance'),
  };
  const mode = $('edit-mode').value; // '' is auto: replace when the prompts' words pair up, else refine
  if (mode) settings.mode = mode;
  return settings;
}

/** Shows an edit's progress: one UNet evaluation (at batch 4) per step. */
function editProgress(p) {
  const job = state.editJob;
  if (!job) return;
  const fraction = Math.min(Math.max((p.step + 1) / Math.max(p.steps, 1), 0), 1);
  $('edit-progress').value = fraction;
  const seconds = (performance.now() - job.start) / 1000;
  const parts = ['editing', `step ${p.step + 1}/${p.steps}`, clock(seconds)];
  if (fraction > 0.05 && fraction < 1) parts.push(`about ${clock((seconds / fraction) * (1 - fraction))} left`);
  $('edit-progress-text').textContent = parts.join(' · ');
}

$('edit-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const { source } = state;
  if (state.model !== 'loaded' || !source || busy()) return;
  let settings;
  try {
    settings = readEditSettings();
  } catch (e) {
    setState({ edit: 'failed', editError: e.message });
    return fail(e.message);
  }
  $('edit-progress').value = 0;
  $('edit-progress-text').textContent = 'starting…';
  const mode = settings.mode ?? 'auto';
  setState({ edit: 'running', editJob: { prompt: settings.prompt, mode, start: performance.now() }, editError: '', cancelRequested: false });
  setStatus(`editing: “${source.prompt}” → “${settings.prompt}” (${mode}, ${settings.steps} steps)…`);
  // A copy of the seed goes to the worker (not transferred): the page keeps it for the next edit.
  worker.postMessage({ type: 'edit', seed: source.seed, settings });
});

$('edit-cancel').addEventListener('click', cancelRunning);

// ---------------------------------------------------------------------------------------------------------------
// Interpolating between two seeds

/** A .safetensors file, by its name: what may be a seed file. */
const isSeedName = (file) => /\.safetensors$/i.test(file.name);

/** Whether every File is a seed file (reading their headers only). */
async function allSeeds(files) {
  for (const file of files) {
    try {
      await readSeedHeader(file);
    } catch {
      return false;
    }
  }
  return true;
}

/** Adds seeds ({ bytes: ArrayBuffer, name }) to the list and starts the panel at the last two. */
async function addSeeds(added) {
  const entries = [];
  for (const { bytes, name } of added) entries.push({ bytes, name, ...(await readSeedHeader(new Blob([bytes]))) });
  setState({ seeds: [...state.seeds, ...entries] });
  const [from, to] = [$('interp-from'), $('interp-to')];
  for (const select of [from, to]) {
    for (let i = select.options.length; i < state.seeds.length; i += 1) select.add(new Option(seedLabel(i + 1, state.seeds[i]), String(i)));
  }
  // The Centroid control: one checkbox a seed, checked (all seeds by default).
  const boxes = $('centroid-seeds');
  for (let i = boxes.querySelectorAll('input').length; i < state.seeds.length; i += 1) {
    const label = document.createElement('label');
    const box = document.createElement('input');
    Object.assign(box, { type: 'checkbox', checked: true, value: String(i) });
    label.append(box, ` ${seedLabel(i + 1, state.seeds[i])}`);
    boxes.append(label);
  }
  const [a, b] = defaultPair(state.seeds.length);
  [from.value, to.value] = [String(a), String(b)];
  seedsChosen();
}

/** Picked or dropped seed files → the list; a file that is not a seed is reported and left out. */
async function addSeedFiles(files) {
  const added = [];
  for (const file of files) {
    try {
      await readSeedHeader(file);
      added.push({ bytes: await file.arrayBuffer(), name: file.name });
    } catch (e) {
      fail(`${file.name}: ${e.message}`);
    }
  }
  if (!added.length) return;
  await addSeeds(added);
  setStatus(`seed${added.length === 1 ? '' : 's'} added to the Interpolate panel: ${added.map((a) => a.name).join(', ')}`);
}

/**
 * The chosen seeds changed: the prompt, steps and guidance start as the first's (as the CLI's: no prompt, 50 steps
 * and guidance 1 for a file without fpi's metadata), with a warning when the two were inverted with other prompts.
 */
function seedsChosen() {
  const [a, b] = [$('interp-from'), $('interp-to')].map((select) => state.seeds[Number(select.value)]);
  if (!a || !b) return;
  const first = sampling(a.meta);
  $('interp-prompt').value = first.prompt ?? '';
  $('interp-steps').value = String(first.steps ?? 50);
  $('interp-guidance').value = String(first.guidance ?? 1);
  const other = sampling(b.meta).prompt;
  const warning = first.prompt !== null && other !== null && other !== first.prompt
    ? `The seeds were inverted with different prompts (“${first.prompt}”, “${other}”): every frame is sampled with the prompt above.`
    : '';
  $('interp-warning').textContent = warning;
  $('interp-warning').hidden = !warning;
}

$('interp-from').addEventListener('change', seedsChosen);
$('interp-to').addEventListener('change', seedsChosen);

$('interp-files').addEventListener('change', (event) => {
  const picked = [...event.target.files];
  event.target.value = ''; // so that picking the same file again is a change
  if (picked.length) addSeedFiles(picked).catch((e) => fail(`could not read the seed files: ${e.message}`));
});

let frameUrls = []; // the strip's object URLs, revoked when the next interpolation starts

/** Adds frame `index` of `frames` to the strip: its image, which downloads it (PNG), and a link to its seed file. */
function addFrame(job, { index, frames, seed, image }) {
  const url = (bytes, type) => {
    const made = URL.createObjectURL(new Blob([bytes], { type }));
    frameUrls.push(made);
    return made;
  };
  const figure = document.createElement('figure');
  figure.dataset.frame = String(index);
  const link = document.createElement('a');
  link.className = 'frame';
  link.href = url(image, 'image/png');
  link.download = frameName(job.names, job.method, index, frames, 'png');
  link.title = `download frame ${index + 1} (PNG)`;
  const img = document.createElement('img');
  img.src = link.href;
  img.alt = `frame ${index + 1} of ${frames}`;
  link.append(img);
  const caption = document.createElement('figcaption');
  const number = document.createElement('span');
  number.textContent = `${index + 1} of ${frames}`;
  const seedLink = document.createElement('a');
  seedLink.className = 'seed';
  seedLink.href = url(seed, 'application/octet-stream');
  seedLink.download = frameName(job.names, job.method, index, frames, 'seed');
  seedLink.textContent = 'seed';
  caption.append(number, seedLink);
  figure.append(link, caption);
  $('interp-strip').append(figure);
}

/** Shows an interpolation's progress: frame by frame, step by step. */
function interpProgress(p) {
  const job = state.interpJob;
  if (!job) return;
  const fraction = Math.min(Math.max((p.frame + (p.step + 1) / Math.max(p.steps, 1)) / Math.max(p.frames, 1), 0), 1);
  $('interp-progress').value = fraction;
  const seconds = (performance.now() - job.start) / 1000;
  const parts = [`frame ${p.frame + 1} of ${p.frames}`, `step ${p.step + 1}/${p.steps}`, clock(seconds)];
  if (fraction > 0.05 && fraction < 1) parts.push(`about ${clock((seconds / fraction) * (1 - fraction))} left`);
  $('interp-progress-text').textContent = parts.join(' · ');
}

$('interp-form').addEventListener('submit', (event) => {
  event.preventDefault();
  if (state.model !== 'loaded' || !state.seeds.length || busy()) return;
  const [a, b] = [$('interp-from'), $('interp-to')].map((select) => state.seeds[Number(select.value)]);
  let points;
  let options;
  try {
    if (!a || !b) throw new Error('choose the two seeds');
    points = numberField('interp-frames');
    options = { prompt: $('interp-prompt').value, steps: numberField('interp-steps'), guidance: numberField('interp-guidance') };
  } catch (e) {
    setState({ interp: 'failed', interpError: e.message });
    return fail(e.message);
  }
  const method = $('interp-method').value;
  for (const made of frameUrls) URL.revokeObjectURL(made);
  frameUrls = [];
  $('interp-strip').replaceChildren();
  $('interp-progress').value = 0;
  $('interp-progress-text').textContent = method === 'nao' ? 'finding the NAO path…' : 'starting…';
  const names = [a.name, b.name];
  setState({ interp: 'running', interpJob: { names, method, frames: points, start: performance.now() }, interpError: '', cancelRequested: false });
  setStatus(`interpolating ${names.join(' → ')}: ${points} frames (${method}, ${options.steps} steps)…`);
  // Copies of the seeds go to the worker (not transferred): the page keeps them.
  worker.postMessage({ type: 'interpolate', seeds: [a.bytes, b.bytes], names, points, method, options });
});

$('interp-cancel').addEventListener('click', cancelRunning);

// ---------------------------------------------------------------------------------------------------------------
// The centre of two or more seeds

/** Shows a centroid's sampling progress. */
function centroidProgress(p) {
  const job = state.centroidJob;
  if (!job) return;
  $('centroid-progress-text').textContent = `sampling the centroid · step ${p.step + 1}/${p.steps} · ${clock((performance.now() - job.start) / 1000)}`;
}

$('centroid-form').addEventListener('submit', (event) => {
  event.preventDefault();
  if (state.model !== 'loaded' || busy()) return;
  const chosen = [...$('centroid-seeds').querySelectorAll('input:checked')].map((box) => state.seeds[Number(box.value)]);
  let options;
  try {
    if (chosen.length < 2) throw new Error(`a centroid needs at least 2 seeds, got ${chosen.length}`);
    options = { prompt: $('interp-prompt').value, steps: numberField('interp-steps'), guidance: numberField('interp-guidance') };
  } catch (e) {
    setState({ centroid: 'failed', centroidError: e.message });
    return fail(e.message);
  }
  const method = $('centroid-method').value;
  const names = chosen.map((seed) => seed.name);
  $('centroid-figure').hidden = true;
  $('centroid-progress-text').textContent = method === 'nao' ? 'finding the NAO centroid…' : 'starting…';
  setState({ centroid: 'running', centroidJob: { names, method, start: performance.now() }, centroidError: '', cancelRequested: false });
  setStatus(`centroid of ${names.join(', ')} (${method}, ${options.steps} steps)…`);
  // Copies of the seeds go to the worker (not transferred): the page keeps them.
  worker.postMessage({ type: 'centroid', seeds: chosen.map((seed) => seed.bytes), names, method, options });
});

// ---------------------------------------------------------------------------------------------------------------
// Errors that escape everything above still reach the status line.

window.addEventListener('error', (event) => fail(`page error: ${event.message}`));
window.addEventListener('unhandledrejection', (event) => fail(`page error: ${event.reason?.message ?? event.reason}`));

startWorker();
