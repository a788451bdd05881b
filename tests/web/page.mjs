#!/usr/bin/env node
// The web page, end to end in headless Chromium (WebGPU on SwiftShader where there is no GPU):
//
//   node tests/web/page.mjs [SITE]        (SITE, or $FPI_SITE, default target/site: what web/build.sh made)
//
// It serves SITE (and tests/fixtures/tiny-sd under /fixtures/tiny-sd/) from a small built-in server, then
//   1. loads the tiny model from its URL twice, with a page reload between: downloaded, then read from the
//      browser's cache ($FPI_WEB_SKIP_URL=1 skips this);
//   2. loads it from its nine files picked as loose files (#model-files), which the page must place in the
//      diffusers layout by name and content ($FPI_WEB_SKIP_FILES=1 skips this);
//   3. loads it again by picking its folder (#model-folder), inverts the case in tests/fixtures/web-case.json,
//      downloads the seed and checks it and the PSNR against the native run in tests/fixtures/reference/
//      (web-case.safetensors: relative L2 ≤ 1e-4; web-case.json's psnr: within 0.05 dB), and the seed's metadata
//      against the case: every key, with the case's settings, the model's name as the page gives it and fpi's
//      version;
//   4. edits that inversion's seed in the Edit panel: first with a blend word in neither prompt, which must fail
//      with the one-line error naming it (data-edit="failed"), then with the case's prompt with one word swapped
//      (EDIT_PROMPT, steps the seed's), which must finish (data-edit="done") and download a PNG of the case's size
//      that differs from the reconstruction;
//   4b. interpolates in the Interpolate panel: adds two seed files the test writes (target/web-test/gaussian.seed
//      .safetensors, Gaussian noise of the seed's shape recording another prompt, and small.seed.safetensors, of
//      another shape and without metadata); the last two added (the panel's default pair) fail with the one-line
//      error about their sizes (data-interpolate="failed"); then the inversion's seed → gaussian, 3 frames by NAO
//      (steps the seed's): the progress line counts "frame i of 3", three frames appear, each downloads a PNG of the
//      case's size and a seed file that records the case's settings, the model and its derivation; the end frames'
//      latents are the two seeds', the first frame's PNG is the reconstruction (within 1/255), and the frames differ
//      ($FPI_WEB_SKIP_INTERPOLATE=1 skips this and 4c);
//   4c. the Centroid control: the centre of those two seeds (method mean, steps the seed's) must finish
//      (data-centroid="done"), download a PNG of the case's size and a seed file recording the case's settings, the
//      model and the derivation {operation: centroid, method: mean, sources}, whose latents are (a + b)/√2 (1e-6);
//   5. loads the tiny model as one checkpoint (tests/fixtures/single-file/tiny-sd.safetensors, LDM keys) picked
//      with the tiny model's config, tokenizer and scheduler files (#model-files; it is not SD1.x-sized), and
//      makes the same edit of the same seed: the PNG must be the folder's (within 1/255 per value); then picks the
//      replacement VAE tests/fixtures/single-file/tiny-vae/ (#vae-folder, another random VAE), which reloads the
//      checkpoint with it, and edits once more: the PNG must differ ($FPI_WEB_SKIP_SINGLE_FILE=1 skips this).
// Exit code 0 is a pass. Outputs in target/web-test/: seed.safetensors, reconstruction.png, edit.png,
// frame-{0,1,2}.png and .seed.safetensors, centroid.png and .seed.safetensors, edit-checkpoint.png, edit-vae.png, finished.png (after the inversion),
// edited.png (after the edit) and interpolated.png (after the interpolation), or failed.png.
// Chromium runs with the flags the wasm32 tests use (crates/fpi-web/webdriver.json).
// Environment: FPI_CHROMIUM (default: webdriver.json's binary), FPI_WEB_TIMEOUT_S (the inversion's limit, default
// 600), FPI_WEB_REFERENCE (the folder of web-case.safetensors and web-case.json, default tests/fixtures/reference).

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { CHECKPOINT_CONFIGS, presentFiles } from '../../web/model-files.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const site = path.resolve(process.argv[2] ?? process.env.FPI_SITE ?? path.join(root, 'target/site'));
const fixtures = path.join(root, 'tests/fixtures');
const tinyModel = path.join(fixtures, 'tiny-sd');
const singleFile = path.join(fixtures, 'single-file');
const referenceDir = path.resolve(process.env.FPI_WEB_REFERENCE ?? path.join(fixtures, 'reference'));
const outDir = path.join(root, 'target/web-test');
const chromeOptions = readJson(path.join(root, 'crates/fpi-web/webdriver.json'))['goog:chromeOptions'];
const chromiumPath = process.env.FPI_CHROMIUM ?? chromeOptions.binary;
const invertTimeout = Number(process.env.FPI_WEB_TIMEOUT_S ?? 600) * 1000;
const loadTimeout = 300_000;

const MAX_SEED_ERROR = 1e-4;
const MAX_PSNR_DIFF = 0.05;
/** The largest difference (of 255) allowed between the checkpoint's edit and the folder's: the same model. */
const MAX_CHECKPOINT_DIFF = 1;

/** The tiny model's files that Model.load needs (web/model-files.js's list, as tests/fixtures/tiny-sd has them). */
const TINY_FILES = presentFiles((rel) => fs.existsSync(path.join(tinyModel, rel)));
/** The tiny model's config, tokenizer and scheduler files: what its checkpoint needs along (it is not SD1.x-sized). */
const TINY_CONFIGS = CHECKPOINT_CONFIGS.filter((rel) => fs.existsSync(path.join(tinyModel, rel)));

/** The edit's target prompt: the case's ("a man with a camera") with one word swapped. */
const EDIT_PROMPT = 'a man with a guitar';
/** A blend word in neither prompt, and the start of the error the page must show for it. */
const BAD_BLEND = 'dog';
const BAD_BLEND_ERROR = `blend word "${BAD_BLEND}" is in neither prompt`;

/** The interpolation's frames, method, and the prompt the test's second seed records. */
const FRAMES = 3;
const PATH_METHOD = 'nao';
const GAUSSIAN_PROMPT = 'a man with a guitar';
const SIZES_ERROR = 'seeds of different sizes cannot be combined';

/** The settings a seed's metadata records, as web-case.json names them. */
const SETTINGS = ['prompt', 'steps', 'guidance', 'method', 'iterations', 'adjust', 'size'];

function readJson(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

const t0 = Date.now();
const log = (text) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${text}`);

class Failure extends Error {}
const check = (ok, message) => {
  if (!ok) throw new Failure(message);
};

// -------------------------------------------------------------------------------------------------------------
// A static file server: SITE at /, the tiny model at /fixtures/tiny-sd/.

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.txt': 'text/plain; charset=utf-8',
  '.safetensors': 'application/octet-stream',
};

function serve() {
  const mounts = [
    ['/fixtures/tiny-sd/', tinyModel],
    ['/', site],
  ];
  const server = http.createServer((req, res) => {
    const urlPath = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const [prefix, dir] = mounts.find(([p]) => urlPath.startsWith(p));
    let file = path.join(dir, urlPath.slice(prefix.length));
    if (!file.startsWith(dir)) return res.writeHead(403).end();
    if (urlPath.endsWith('/')) file = path.join(file, 'index.html');
    fs.stat(file, (err, stat) => {
      if (err || !stat.isFile()) return res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      res.writeHead(200, {
        'content-type': MIME[path.extname(file)] ?? 'application/octet-stream',
        'content-length': stat.size,
        'cache-control': 'no-store',
      });
      if (req.method === 'HEAD') return res.end();
      fs.createReadStream(file).pipe(res);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// -------------------------------------------------------------------------------------------------------------
// Seed files

/** A safetensors file's tensor 'latents' (F32) and metadata. */
function readSeed(file) {
  const buf = fs.readFileSync(file);
  check(buf.length >= 8, `${file}: too short for safetensors`);
  const n = Number(buf.readBigUInt64LE(0));
  check(8 + n <= buf.length, `${file}: header length ${n} runs past the end (${buf.length} bytes)`);
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const tensor = header.latents;
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  check(tensor, `${file}: no tensor 'latents' (tensors: ${names.join(', ') || 'none'})`);
  check(tensor.dtype === 'F32', `${file}: 'latents' is ${tensor.dtype}, not F32`);
  const count = tensor.shape.reduce((a, b) => a * b, 1);
  const [begin, end] = tensor.data_offsets;
  const bytes = buf.subarray(8 + n + begin, 8 + n + end);
  check(bytes.length === count * 4, `${file}: 'latents' has ${bytes.length} bytes for shape [${tensor.shape}]`);
  const values = new Float32Array(count);
  for (let i = 0; i < count; i += 1) values[i] = bytes.readFloatLE(4 * i);
  return { shape: tensor.shape, values, meta: header.__metadata__ ?? {} };
}

/** A seed file's bytes: `values` (F32) as `latents` of `shape`, with `meta` (an object of strings) or none. */
function seedBytes(shape, values, meta) {
  const header = { latents: { dtype: 'F32', shape, data_offsets: [0, values.length * 4] } };
  if (meta) header.__metadata__ = meta;
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([length, Buffer.from(json), Buffer.from(Float32Array.from(values).buffer)]);
}

/** `n` standard normal values from a fixed seed (an LCG and Box–Muller): the same file every run. */
function gaussian(n) {
  let state = 12345;
  const uniform = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state + 0.5) / 2 ** 32;
  };
  return Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform()));
}

/** ‖a − b‖ / ‖b‖. */
function relativeError(a, b) {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < b.length; i += 1) {
    diff += (a[i] - b[i]) ** 2;
    norm += b[i] ** 2;
  }
  return Math.sqrt(diff) / Math.sqrt(norm);
}

// -------------------------------------------------------------------------------------------------------------
// PNG files (8-bit, not interlaced: what fpi writes)

/** A PNG's size and pixels: { width, height, channels, pixels (Uint8Array, rows without filter bytes) }. */
function readPng(file) {
  const buf = fs.readFileSync(file);
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  check(buf.length > 33 && buf.subarray(0, 8).equals(signature), `${file}: not a PNG`);
  check(buf.toString('latin1', 12, 16) === 'IHDR', `${file}: the first chunk is not IHDR`);
  const [width, height] = [buf.readUInt32BE(16), buf.readUInt32BE(20)];
  const [depth, colour, interlace] = [buf[24], buf[25], buf[28]];
  const channels = { 0: 1, 2: 3, 4: 2, 6: 4 }[colour];
  check(depth === 8 && channels && interlace === 0, `${file}: depth ${depth}, colour type ${colour}, interlace ${interlace} (not 8-bit grey/RGB(A), plain)`);
  const idat = [];
  for (let at = 8; at + 8 <= buf.length;) {
    const length = buf.readUInt32BE(at);
    const type = buf.toString('latin1', at + 4, at + 8);
    if (type === 'IDAT') idat.push(buf.subarray(at + 8, at + 8 + length));
    if (type === 'IEND') break;
    at += 12 + length;
  }
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  check(raw.length === height * (stride + 1), `${file}: ${raw.length} bytes of image data for ${width}×${height}`);
  // Undo the per-row filters (PNG spec §9).
  const pixels = new Uint8Array(height * stride);
  for (let y = 0; y < height; y += 1) {
    const filter = raw[y * (stride + 1)];
    for (let x = 0; x < stride; x += 1) {
      const v = raw[y * (stride + 1) + 1 + x];
      const a = x >= channels ? pixels[y * stride + x - channels] : 0;
      const b = y > 0 ? pixels[(y - 1) * stride + x] : 0;
      const c = x >= channels && y > 0 ? pixels[(y - 1) * stride + x - channels] : 0;
      const paeth = () => {
        const p = a + b - c;
        const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      };
      const predictor = [0, a, b, (a + b) >> 1][filter] ?? (filter === 4 ? paeth() : undefined);
      check(predictor !== undefined, `${file}: unknown filter ${filter} in row ${y}`);
      pixels[y * stride + x] = (v + predictor) & 0xff;
    }
  }
  return { width, height, channels, pixels };
}

// -------------------------------------------------------------------------------------------------------------
// The page

/** Opens (or reloads) the page and waits for its WebGPU check; fails when WebGPU is missing. */
async function openPage(page, url) {
  await page.goto(url);
  await page.waitForFunction(() => document.body.dataset.webgpu !== 'checking', null, { timeout: 60_000 });
  const state = await pageState(page);
  if (state.webgpu === 'missing') {
    const reason = await page.textContent('#webgpu-reason');
    throw new Failure(`the page says WebGPU is missing: ${reason} (Chromium needs --enable-unsafe-webgpu)`);
  }
  // The wasm module may still be starting: wait for the worker's answer.
  await page.waitForFunction(
    () => !document.getElementById('model-folder').disabled || document.getElementById('status').className === 'error',
    null,
    { timeout: 60_000 },
  );
  const ready = await pageState(page);
  check(ready.statusKind !== 'error', `the page did not get ready: ${ready.status}`);
}

async function pageState(page) {
  return page.evaluate(() => ({
    webgpu: document.body.dataset.webgpu,
    model: document.body.dataset.model,
    run: document.body.dataset.run,
    status: document.getElementById('status').textContent,
    statusKind: document.getElementById('status').className,
    progress: document.getElementById('progress-text').textContent,
  }));
}

/** Waits until the model loaded (or failing, says why). */
async function waitModel(page) {
  await page.waitForFunction(
    () => ['loaded', 'failed'].includes(document.body.dataset.model) || document.getElementById('status').className === 'error',
    null,
    { timeout: loadTimeout },
  );
  const state = await pageState(page);
  check(state.model === 'loaded', `the model did not load: ${state.status}`);
  return page.evaluate(() => ({ ...document.getElementById('model-info').dataset, text: document.getElementById('model-info').textContent }));
}

/** Loads the tiny model by URL, reloads, loads it again: the second time every file must come from the cache. */
async function checkUrlLoading(page, origin) {
  const load = async () => {
    await page.fill('#model-url', `${origin}/fixtures/tiny-sd/`);
    await page.click('#load-url');
    return waitModel(page);
  };
  const first = await load();
  log(`URL load: ${first.text}`);
  check(Number(first.downloaded) > 0 && Number(first.cached) === 0, `a fresh profile should download: ${first.text}`);
  await openPage(page, origin + '/');
  const second = await load();
  log(`URL load after a reload: ${second.text}`);
  check(Number(second.downloaded) === 0 && Number(second.cached) === Number(first.downloaded),
    `after a reload every file should come from the cache: ${second.text}`);
}

/** Loads the tiny model from its files picked without their folders: the page places them by name and content. */
async function checkFilesLoading(page) {
  const start = Date.now();
  await page.setInputFiles('#model-files', TINY_FILES.map((rel) => path.join(tinyModel, rel)));
  const info = await waitModel(page);
  log(`files load: ${info.text} (${((Date.now() - start) / 1000).toFixed(1)} s)`);
  check(info.text.includes(`${TINY_FILES.length} files`), `the model should come from ${TINY_FILES.length} files: ${info.text}`);
}

/** Loads the tiny model by picking its folder; returns the page's #model-info (name, text) and the seconds it took. */
async function loadFolder(page) {
  const start = Date.now();
  await page.setInputFiles('#model-folder', tinyModel);
  const info = await waitModel(page);
  const seconds = (Date.now() - start) / 1000;
  log(`folder load: ${info.text} (${seconds.toFixed(1)} s)`);
  check(info.name === path.basename(tinyModel), `the page names the model '${info.name}', not after its folder`);
  // SwiftShader has no shader-f16: auto runs in f32 and the page says why.
  check(info.precision === 'f32' && info.text.includes('running in f32: this adapter has no shader-f16'),
    `without shader-f16 the page should run and say f32: ${info.text}`);
  return { ...info, seconds };
}

/** Enters the case's photo and settings, inverts and waits for the result: { psnr, seconds }. */
async function invertCase(page, testCase) {
  await page.setInputFiles('#image', path.join(fixtures, testCase.image));
  await page.fill('#prompt', testCase.prompt);
  await page.selectOption('#method', testCase.method);
  for (const id of ['size', 'steps', 'iterations', 'guidance', 'adjust']) await page.fill(`#${id}`, String(testCase[id]));

  const start = Date.now();
  await page.click('#invert');
  let state = await pageState(page);
  let shown = '';
  let lastShown = 0;
  while (state.run === 'running' && state.statusKind !== 'error') {
    check(Date.now() - start < invertTimeout, `no result after ${invertTimeout / 1000} s: ${state.progress}`);
    if (state.progress !== shown && Date.now() - lastShown > 15_000) {
      log(`progress: ${state.progress}`);
      [shown, lastShown] = [state.progress, Date.now()];
    }
    await page.waitForTimeout(500);
    state = await pageState(page);
  }
  const seconds = (Date.now() - start) / 1000;
  check(state.run === 'done', `the inversion did not finish: ${state.status}`);
  const psnrText = await page.textContent('#psnr');
  log(`${psnrText}; ${await page.textContent('#metrics')}`);
  const psnr = Number(psnrText.match(/-?\d+(\.\d+)?/)?.[0]);
  check(Number.isFinite(psnr), `no PSNR in '${psnrText}'`);
  return { psnr, seconds };
}

/** Downloads the seed as a user would, under the name the page gives it (after the photo); returns its path. */
async function downloadSeed(page, testCase) {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-seed')]);
  const stem = path.basename(testCase.image).replace(/\.[^.]*$/, '');
  check(download.suggestedFilename() === `${stem}.seed.safetensors`,
    `the seed downloads as ${download.suggestedFilename()}, not ${stem}.seed.safetensors`);
  const seedFile = path.join(outDir, 'seed.safetensors');
  await download.saveAs(seedFile);
  return seedFile;
}

/** Downloads what the link `selector` offers, checks its file name and saves it as target/web-test/`saveAs`. */
async function download(page, selector, name, saveAs) {
  const [file] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
  check(file.suggestedFilename() === name, `${selector} downloads as ${file.suggestedFilename()}, not ${name}`);
  const target = path.join(outDir, saveAs);
  await file.saveAs(target);
  return target;
}

/** The edit panel's state: data-edit, its error line, its progress text and the status line. */
async function editState(page) {
  return page.evaluate(() => ({
    edit: document.body.dataset.edit,
    error: document.getElementById('edit-error').textContent,
    errorShown: !document.getElementById('edit-error').hidden,
    progress: document.getElementById('edit-progress-text').textContent,
    status: document.getElementById('status').textContent,
  }));
}

/** Clicks Edit and waits until the edit ends (data-edit leaves 'running'), logging its progress; its end state. */
async function runEdit(page) {
  const start = Date.now();
  await page.click('#edit');
  let state = await editState(page);
  let [shown, lastShown] = ['', 0];
  while (state.edit === 'running') {
    check(Date.now() - start < invertTimeout, `no edit after ${invertTimeout / 1000} s: ${state.progress}`);
    if (state.progress !== shown && Date.now() - lastShown > 15_000) {
      log(`edit progress: ${state.progress}`);
      [shown, lastShown] = [state.progress, Date.now()];
    }
    await page.waitForTimeout(250);
    state = await editState(page);
  }
  return { ...state, seconds: (Date.now() - start) / 1000 };
}

/**
 * The Edit panel on the inversion just made: it starts with the case's prompt; a blend word in neither prompt
 * fails with one line naming it; the prompt with one word swapped (steps left at the seed's) gives an edit, a PNG
 * of the case's size that differs from the reconstruction. Returns the edit's seconds.
 */
async function editCase(page, testCase) {
  const stem = path.basename(testCase.image).replace(/\.[^.]*$/, '');
  check(await page.isVisible('#edit-section'), 'the Edit panel is not shown after the inversion');
  const start = await page.evaluate(() => ({
    prompt: document.getElementById('edit-prompt').value,
    steps: document.getElementById('edit-steps').value,
    edit: document.body.dataset.edit,
  }));
  check(start.prompt === testCase.prompt, `the edit's target prompt starts as '${start.prompt}', not the source prompt '${testCase.prompt}'`);
  check(Number(start.steps) === testCase.steps, `the edit's steps start at ${start.steps}, not the seed's ${testCase.steps}`);
  check(start.edit === 'idle', `data-edit is '${start.edit}' before any edit, not 'idle'`);

  await page.fill('#edit-prompt', EDIT_PROMPT);
  await page.fill('#edit-blend', BAD_BLEND);
  const bad = await runEdit(page);
  log(`edit with blend word '${BAD_BLEND}': data-edit=${bad.edit}: ${bad.error}`);
  check(bad.edit === 'failed', `an edit with the blend word '${BAD_BLEND}' ended with data-edit=${bad.edit}, not failed: ${bad.status}`);
  check(bad.errorShown && bad.error.includes(BAD_BLEND_ERROR), `the edit's error line '${bad.error}' does not say '${BAD_BLEND_ERROR}'`);
  check(!/\n/.test(bad.error), `the edit's error is not one line: ${JSON.stringify(bad.error)}`);

  await page.fill('#edit-blend', '');
  const good = await runEdit(page);
  check(good.edit === 'done', `the edit did not finish (data-edit=${good.edit}): ${good.error || good.status}`);
  check(!good.errorShown, `the edit finished but the error line still shows '${good.error}'`);
  check(await page.isVisible('#edited'), 'the edited image is not shown');
  const caption = await page.textContent('#edit-caption');
  log(`edit '${EDIT_PROMPT}': ${good.progress}; caption: ${caption}`);

  const editFile = await download(page, '#download-edit', `${stem}-edit.png`, 'edit.png');
  const recFile = await download(page, '#download-reconstruction', `${stem}.reconstruction.png`, 'reconstruction.png');
  const [edited, reconstruction] = [readPng(editFile), readPng(recFile)];
  check(edited.width === testCase.size && edited.height === testCase.size,
    `the edit is ${edited.width}×${edited.height}, not ${testCase.size}×${testCase.size}`);
  check(edited.channels === reconstruction.channels && edited.pixels.length === reconstruction.pixels.length,
    `the edit (${edited.width}×${edited.height}×${edited.channels}) and the reconstruction (${reconstruction.width}×${reconstruction.height}×${reconstruction.channels}) differ in shape`);
  let [sum, changed] = [0, 0];
  for (let i = 0; i < edited.pixels.length; i += 1) {
    const d = Math.abs(edited.pixels[i] - reconstruction.pixels[i]);
    sum += d;
    if (d > 0) changed += 1;
  }
  const mean = sum / edited.pixels.length;
  log(`edit vs reconstruction: mean |Δ| ${mean.toFixed(2)} of 255, ${changed} of ${edited.pixels.length} values differ`);
  check(changed > 0, `the edit for '${EDIT_PROMPT}' equals the reconstruction`);
  return good.seconds;
}

/** The Interpolate panel's state: data-interpolate, its error and warning lines, its progress text, the frames shown. */
async function interpState(page) {
  return page.evaluate(() => ({
    interp: document.body.dataset.interpolate,
    error: document.getElementById('interp-error').textContent,
    errorShown: !document.getElementById('interp-error').hidden,
    warning: document.getElementById('interp-warning').hidden ? '' : document.getElementById('interp-warning').textContent,
    progress: document.getElementById('interp-progress-text').textContent,
    frames: document.querySelectorAll('#interp-strip figure').length,
    status: document.getElementById('status').textContent,
  }));
}

/** Clicks Interpolate and waits until the interpolation ends; its end state, the progress lines seen and its seconds. */
async function runInterpolation(page) {
  const start = Date.now();
  await page.click('#interpolate');
  let state = await interpState(page);
  const seen = new Set();
  while (state.interp === 'running') {
    check(Date.now() - start < invertTimeout, `no interpolation after ${invertTimeout / 1000} s: ${state.progress}`);
    seen.add(state.progress);
    await page.waitForTimeout(100);
    state = await interpState(page);
  }
  return { ...state, seen: [...seen], seconds: (Date.now() - start) / 1000 };
}

/**
 * The Interpolate panel (step 4b above): seeds of different sizes fail in one line; the inversion's seed →
 * gaussian.seed.safetensors in FRAMES frames gives FRAMES PNGs and seeds, the end frames the two seeds. `seed` is
 * the inversion's (readSeed), `modelName` the page's name of the model. Returns the interpolation's seconds.
 */
async function interpolateCase(page, testCase, seed, modelName) {
  const stem = path.basename(testCase.image).replace(/\.[^.]*$/, '');
  const count = seed.values.length;
  const gaussianFile = path.join(outDir, 'gaussian.seed.safetensors');
  const smallFile = path.join(outDir, 'small.seed.safetensors');
  const other = gaussian(count);
  fs.writeFileSync(gaussianFile, seedBytes(seed.shape, other, { ...seed.meta, prompt: GAUSSIAN_PROMPT }));
  const [, c, h, w] = seed.shape;
  fs.writeFileSync(smallFile, seedBytes([1, c, h / 2, w / 2], gaussian((c * h * w) / 4), null));

  const listed = () => page.$$eval('#interp-from option', (options) => options.map((o) => o.textContent));
  const before = await listed();
  check(before.length === 1 && before[0].includes(`${stem}.seed.safetensors`), `the panel should list the inversion's seed alone: ${JSON.stringify(before)}`);
  await page.setInputFiles('#interp-files', [gaussianFile, smallFile]);
  await page.waitForFunction(() => document.querySelectorAll('#interp-from option').length === 3, null, { timeout: 10_000 });
  await page.fill('#interp-frames', String(FRAMES));
  await page.selectOption('#interp-method', PATH_METHOD);
  const bad = await runInterpolation(page);
  log(`interpolation gaussian → small: data-interpolate=${bad.interp}: ${bad.error}`);
  check(bad.interp === 'failed', `seeds of different sizes ended with data-interpolate=${bad.interp}, not failed: ${bad.status}`);
  check(bad.errorShown && bad.error.includes(SIZES_ERROR), `the interpolation's error line '${bad.error}' does not say '${SIZES_ERROR}'`);
  check(!/\n/.test(bad.error), `the interpolation's error is not one line: ${JSON.stringify(bad.error)}`);

  await page.selectOption('#interp-from', '0');
  await page.selectOption('#interp-to', '1');
  const fields = await page.evaluate(() => ({
    prompt: document.getElementById('interp-prompt').value,
    steps: document.getElementById('interp-steps').value,
    guidance: document.getElementById('interp-guidance').value,
    warning: document.getElementById('interp-warning').hidden ? '' : document.getElementById('interp-warning').textContent,
  }));
  check(fields.prompt === testCase.prompt && Number(fields.steps) === testCase.steps && Number(fields.guidance) === testCase.guidance,
    `the panel's prompt, steps and guidance should start as the first seed's: ${JSON.stringify(fields)}`);
  check(fields.warning.includes(GAUSSIAN_PROMPT), `no warning that the seeds' prompts differ: '${fields.warning}'`);

  const run = await runInterpolation(page);
  check(run.interp === 'done', `the interpolation did not finish (data-interpolate=${run.interp}): ${run.error || run.status}`);
  check(!run.errorShown, `the interpolation finished but the error line still shows '${run.error}'`);
  check(run.frames === FRAMES, `${run.frames} frames shown, not ${FRAMES}`);
  const counted = run.seen.filter((line) => new RegExp(`^frame [1-${FRAMES}] of ${FRAMES} · step `).test(line));
  check(counted.length > 0, `the progress line never said 'frame i of ${FRAMES}': ${JSON.stringify(run.seen)}`);
  log(`interpolation ${stem} → gaussian, ${FRAMES} frames (${PATH_METHOD}): ${run.progress} (${run.seconds.toFixed(1)} s; e.g. '${counted.at(-1)}')`);

  const frames = [];
  for (let i = 0; i < FRAMES; i += 1) {
    const name = `${stem}-to-gaussian.${PATH_METHOD}.${i + 1}-of-${FRAMES}`;
    const figure = `#interp-strip figure[data-frame="${i}"]`;
    const png = readPng(await download(page, `${figure} a.frame`, `${name}.png`, `frame-${i}.png`));
    const frameSeed = readSeed(await download(page, `${figure} a.seed`, `${name}.seed.safetensors`, `frame-${i}.seed.safetensors`));
    check(png.width === testCase.size && png.height === testCase.size, `frame ${i} is ${png.width}×${png.height}, not ${testCase.size}×${testCase.size}`);
    check(JSON.stringify(frameSeed.shape) === JSON.stringify(seed.shape), `frame ${i}'s seed has shape [${frameSeed.shape}], not [${seed.shape}]`);
    const { derivation, ...settings } = frameSeed.meta;
    checkMetadata(settings, testCase, modelName);
    const want = { operation: 'interpolation', method: PATH_METHOD, sources: [`${stem}.seed.safetensors`, 'gaussian.seed.safetensors'], frame: i, frames: FRAMES };
    check(derivation && isDeepStrictEqual(JSON.parse(derivation), want),
      `frame ${i}'s derivation is ${derivation}, not ${JSON.stringify(want)}`);
    frames.push({ png, seed: frameSeed });
  }
  const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
  check(same(frames[0].seed.values, seed.values), "the first frame's latents are not the inversion's seed");
  check(same(frames[FRAMES - 1].seed.values, Float32Array.from(other)), "the last frame's latents are not gaussian.seed.safetensors'");
  const first = pngDiff(frames[0].png, readPng(path.join(outDir, 'reconstruction.png')));
  log(`first frame vs the reconstruction: max |Δ| ${first.max}, ${first.changed} of ${first.of} values differ`);
  check(first.max <= MAX_CHECKPOINT_DIFF, `the first frame differs from the seed's reconstruction by up to ${first.max} of 255`);
  for (let i = 1; i < FRAMES; i += 1) {
    check(pngDiff(frames[i].png, frames[i - 1].png).changed > 0, `frames ${i - 1} and ${i} are the same image`);
  }
  return run.seconds;
}

/**
 * The Centroid control (step 4c above): the centre (mean) of the two seeds the interpolation used, with the seeds'
 * steps, must finish, download a PNG of the case's size, and a seed whose derivation names the method and the two
 * seeds and whose latents are (a + b)/√2. Returns its seconds.
 */
async function centroidCase(page, testCase, seed, modelName) {
  const stem = path.basename(testCase.image).replace(/\.[^.]*$/, '');
  const other = readSeed(path.join(outDir, 'gaussian.seed.safetensors'));
  const boxes = await page.$$eval('#centroid-seeds input', (inputs) => inputs.map((box) => box.checked));
  check(boxes.length === 3 && boxes.every(Boolean), `the centroid's seeds should be the 3 seeds, all checked: ${JSON.stringify(boxes)}`);
  await page.uncheck('#centroid-seeds input[value="2"]'); // small.seed.safetensors: another size
  await page.selectOption('#centroid-method', 'mean');
  const start = Date.now();
  await page.click('#centroid');
  const centroidState = () => page.evaluate(() => ({
    centroid: document.body.dataset.centroid,
    error: document.getElementById('centroid-error').textContent,
    status: document.getElementById('status').textContent,
  }));
  let state = await centroidState();
  while (state.centroid === 'running') {
    check(Date.now() - start < invertTimeout, `no centroid after ${invertTimeout / 1000} s`);
    await page.waitForTimeout(100);
    state = await centroidState();
  }
  const seconds = (Date.now() - start) / 1000;
  check(state.centroid === 'done', `the centroid did not finish (data-centroid=${state.centroid}): ${state.error || state.status}`);
  const png = readPng(await download(page, '#download-centroid', 'centroid.mean.png', 'centroid.png'));
  check(png.width === testCase.size && png.height === testCase.size, `the centroid is ${png.width}×${png.height}, not ${testCase.size}×${testCase.size}`);
  const made = readSeed(await download(page, '#download-centroid-seed', 'centroid.mean.seed.safetensors', 'centroid.seed.safetensors'));
  const { derivation, ...settings } = made.meta;
  checkMetadata(settings, testCase, modelName);
  const want = { operation: 'centroid', method: 'mean', sources: [`${stem}.seed.safetensors`, 'gaussian.seed.safetensors'] };
  check(derivation && isDeepStrictEqual(JSON.parse(derivation), want), `the centroid's derivation is ${derivation}, not ${JSON.stringify(want)}`);
  check(made.values.length === seed.values.length, `the centroid has ${made.values.length} latents, not ${seed.values.length}`);
  let worst = 0;
  for (let i = 0; i < made.values.length; i += 1) {
    worst = Math.max(worst, Math.abs(made.values[i] - (seed.values[i] + other.values[i]) / Math.SQRT2));
  }
  check(worst <= 1e-6, `the centroid's latents differ from (a + b)/√2 by up to ${worst}`);
  log(`centroid (mean) of ${stem} and gaussian: ${seconds.toFixed(1)} s, latents within ${worst.toExponential(1)} of (a + b)/√2`);
  return seconds;
}

/** How two PNGs of one shape differ: { max, mean } of |Δ| over all values (of 255), and how many differ. */
function pngDiff(a, b) {
  check(a.width === b.width && a.height === b.height && a.channels === b.channels,
    `${a.width}×${a.height}×${a.channels} and ${b.width}×${b.height}×${b.channels} differ in shape`);
  let [max, sum, changed] = [0, 0, 0];
  for (let i = 0; i < a.pixels.length; i += 1) {
    const d = Math.abs(a.pixels[i] - b.pixels[i]);
    [max, sum, changed] = [Math.max(max, d), sum + d, changed + (d > 0)];
  }
  return { max, mean: sum / a.pixels.length, changed, of: a.pixels.length };
}

/**
 * Waits until the model loaded with #model-info's data-`key` = `value` (a load that the page starts after reading
 * files, while the previous model still shows as loaded), or failed; returns #model-info's data and text.
 */
async function waitModelWith(page, key, value) {
  await page.waitForFunction(
    ([k, v]) => (document.body.dataset.model === 'loaded' && document.getElementById('model-info').dataset[k] === v)
      || document.body.dataset.model === 'failed' || document.getElementById('status').className === 'error',
    [key, value],
    { timeout: loadTimeout },
  );
  return waitModel(page);
}

/** The edit of the seed shown, as editCase's second one (EDIT_PROMPT, no blend), saved as target/web-test/`saveAs`. */
async function editAgain(page, testCase, saveAs) {
  const stem = path.basename(testCase.image).replace(/\.[^.]*$/, '');
  await page.fill('#edit-prompt', EDIT_PROMPT);
  await page.fill('#edit-blend', '');
  const run = await runEdit(page);
  check(run.edit === 'done', `the edit did not finish (data-edit=${run.edit}): ${run.error || run.status}`);
  return { png: readPng(await download(page, '#download-edit', `${stem}-edit.png`, saveAs)), seconds: run.seconds };
}

/**
 * The tiny model as one checkpoint with its configs (step 5 above): the same edit as the folder's gives the same
 * PNG; a replacement VAE changes it. Returns the seconds of each part.
 */
async function checkSingleFile(page, testCase) {
  const folderEdit = readPng(path.join(outDir, 'edit.png'));
  let start = Date.now();
  await page.setInputFiles('#model-files', [path.join(singleFile, 'tiny-sd.safetensors'), ...TINY_CONFIGS.map((rel) => path.join(tinyModel, rel))]);
  const info = await waitModelWith(page, 'format', 'checkpoint');
  const load = (Date.now() - start) / 1000;
  log(`checkpoint load: ${info.text} (${load.toFixed(1)} s)`);
  check(info.name === 'tiny-sd' && info.vae === '', `the checkpoint should be 'tiny-sd' with its own VAE: ${info.text}`);
  check(await page.isEnabled('#edit'), 'the Edit panel does not edit the seed with the new model');

  const edit = await editAgain(page, testCase, 'edit-checkpoint.png');
  const same = pngDiff(edit.png, folderEdit);
  log(`checkpoint's edit vs the folder's: max |Δ| ${same.max}, ${same.changed} of ${same.of} values differ (${edit.seconds.toFixed(1)} s)`);
  check(same.max <= MAX_CHECKPOINT_DIFF, `the checkpoint's edit differs from the folder's by up to ${same.max} of 255 (limit ${MAX_CHECKPOINT_DIFF}): not the same model`);

  start = Date.now();
  await page.setInputFiles('#vae-folder', path.join(singleFile, 'tiny-vae'));
  const withVae = await waitModelWith(page, 'vae', 'tiny-vae');
  const reload = (Date.now() - start) / 1000;
  log(`with the replacement VAE: ${withVae.text} (${reload.toFixed(1)} s)`);
  check(withVae.format === 'checkpoint' && withVae.name === 'tiny-sd', `choosing a VAE should reload the checkpoint: ${withVae.text}`);
  const vaeEdit = await editAgain(page, testCase, 'edit-vae.png');
  const other = pngDiff(vaeEdit.png, edit.png);
  log(`edit with tiny-vae vs the model's own VAE: mean |Δ| ${other.mean.toFixed(2)} of 255, ${other.changed} of ${other.of} values differ (${vaeEdit.seconds.toFixed(1)} s)`);
  check(other.changed > 0, 'the replacement VAE did not change the edit');
  return { load, edit: edit.seconds, reload, vaeEdit: vaeEdit.seconds };
}

/** The version fpi records in seeds: the workspace's, from Cargo.toml. */
function fpiVersion() {
  const toml = fs.readFileSync(path.join(root, 'Cargo.toml'), 'utf8');
  const version = toml.match(/^\[workspace\.package\][^[]*?^version\s*=\s*"([^"]+)"/m)?.[1];
  check(version, 'Cargo.toml has no [workspace.package] version');
  return version;
}

/**
 * The seed's metadata holds exactly the case's settings (tolerance only when the case sets one; DDIM records 1
 * iteration), the model's name as the page gives it, fpi's version, and for an inverted seed (not a derived one)
 * the precision the networks ran in. Metadata values are strings: numbers are compared as numbers.
 */
function checkMetadata(meta, testCase, modelName, precision) {
  const expected = Object.fromEntries(SETTINGS.map((key) => [key, testCase[key]]));
  if (testCase.method === 'ddim') expected.iterations = 1;
  if (testCase.tolerance !== undefined) expected.tolerance = testCase.tolerance;
  Object.assign(expected, { model: modelName, fpi_version: fpiVersion() });
  if (precision !== undefined) expected.precision = precision;
  for (const [key, want] of Object.entries(expected)) {
    check(key in meta, `the seed's metadata lacks ${key} (it has: ${Object.keys(meta).join(', ') || 'nothing'})`);
    const got = typeof want === 'number' ? Number(meta[key]) : meta[key];
    check(got === want, `the seed's ${key} is ${JSON.stringify(meta[key])}, not ${JSON.stringify(want)}`);
  }
  const unexpected = Object.keys(meta).filter((key) => !(key in expected));
  check(unexpected.length === 0, `the seed's metadata has keys the case does not set: ${unexpected.join(', ')}`);
}

/** The seed and the PSNR against the native run of the case (tests/fixtures/reference/web-case.*). */
function compareWithNative(seed, run, loadSeconds) {
  const refSeedFile = path.join(referenceDir, 'web-case.safetensors');
  const refJsonFile = path.join(referenceDir, 'web-case.json');
  for (const file of [refSeedFile, refJsonFile]) check(fs.existsSync(file), `${path.relative(root, file)} is missing (the native run of the case)`);
  const reference = readSeed(refSeedFile);
  check(JSON.stringify(seed.shape) === JSON.stringify(reference.shape),
    `the seed's shape is [${seed.shape}], the reference's [${reference.shape}]`);
  const error = relativeError(seed.values, reference.values);
  const refPsnr = readJson(refJsonFile).psnr;
  console.log(
    `\nweb page: PSNR ${run.psnr.toFixed(2)} dB (native ${refPsnr.toFixed(2)} dB), seed [${seed.shape}] ` +
      `relative error ${error.toExponential(2)} vs native; model load ${loadSeconds.toFixed(1)} s, ` +
      `inversion ${run.seconds.toFixed(1)} s, all ${((Date.now() - t0) / 1000).toFixed(1)} s`,
  );
  check(error <= MAX_SEED_ERROR, `the seed differs from the native one by ${error.toExponential(2)} (limit ${MAX_SEED_ERROR})`);
  check(Math.abs(run.psnr - refPsnr) <= MAX_PSNR_DIFF,
    `PSNR ${run.psnr} dB differs from the native ${refPsnr} dB by more than ${MAX_PSNR_DIFF}`);
}

/** Headless Chromium with crates/fpi-web/webdriver.json's flags, and a page that logs its errors as they happen. */
async function openBrowser() {
  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromeOptions.args });
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on('console', (msg) => {
    if (msg.type() === 'error') log(`console error: ${msg.text()}`);
  });
  page.on('pageerror', (error) => log(`page error: ${error.message}`));
  page.on('response', (response) => {
    // The page probes alternatives under /fixtures/ (fp16 weights first, then f32): 404s there are expected.
    if (response.status() >= 400 && !response.url().includes('/fixtures/')) log(`HTTP ${response.status()} for ${response.url()}`);
  });
  return { browser, page };
}

/** Takes a full-page screenshot into target/web-test/, with the sticky status line in its place. */
async function screenshot(page, name) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(outDir, name), fullPage: true });
}

async function main() {
  for (const file of ['index.html', 'app.js', 'worker.js', 'model-files.js', 'pkg/fpi_web.js']) {
    check(fs.existsSync(path.join(site, file)), `${path.join(site, file)} is missing: build the site with bash web/build.sh`);
  }
  const testCase = readJson(path.join(fixtures, 'web-case.json'));
  fs.mkdirSync(outDir, { recursive: true });
  const frames = Array.from({ length: FRAMES }, (_, i) => [`frame-${i}.png`, `frame-${i}.seed.safetensors`]).flat();
  const outputs = ['seed.safetensors', 'reconstruction.png', 'edit.png', ...frames, 'centroid.png', 'centroid.seed.safetensors', 'edit-checkpoint.png', 'edit-vae.png', 'finished.png', 'edited.png', 'interpolated.png', 'failed.png'];
  for (const old of outputs) fs.rmSync(path.join(outDir, old), { force: true });

  const server = await serve();
  const origin = `http://127.0.0.1:${server.address().port}`;
  log(`serving ${site} at ${origin}`);
  const { browser, page } = await openBrowser();
  try {
    await openPage(page, origin + '/');
    log('WebGPU ok');
    if (process.env.FPI_WEB_SKIP_URL !== '1') {
      await checkUrlLoading(page, origin);
      await openPage(page, origin + '/');
    }
    if (process.env.FPI_WEB_SKIP_FILES !== '1') {
      await checkFilesLoading(page);
      await openPage(page, origin + '/');
    }
    const model = await loadFolder(page);
    const run = await invertCase(page, testCase);
    const seedFile = await downloadSeed(page, testCase);
    await screenshot(page, 'finished.png');
    log(`saved ${path.relative(root, seedFile)} and target/web-test/finished.png`);
    const seed = readSeed(seedFile);
    // SwiftShader has no shader-f16, so the page runs in f32 (checked with the model line above).
    checkMetadata(seed.meta, testCase, model.name, 'f32');
    compareWithNative(seed, run, model.seconds);

    const editSeconds = await editCase(page, testCase);
    await screenshot(page, 'edited.png');
    log('saved target/web-test/edit.png, reconstruction.png and edited.png');
    console.log(`web page: edit "${EDIT_PROMPT}" ${editSeconds.toFixed(1)} s, all ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    if (process.env.FPI_WEB_SKIP_INTERPOLATE !== '1') {
      const interpSeconds = await interpolateCase(page, testCase, seed, model.name);
      await screenshot(page, 'interpolated.png');
      console.log(`web page: interpolation, ${FRAMES} frames (${PATH_METHOD}) ${interpSeconds.toFixed(1)} s, all ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      const centroidSeconds = await centroidCase(page, testCase, seed, model.name);
      console.log(`web page: centroid (mean) ${centroidSeconds.toFixed(1)} s, all ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
    if (process.env.FPI_WEB_SKIP_SINGLE_FILE !== '1') {
      const t = await checkSingleFile(page, testCase);
      console.log(
        `web page: checkpoint load ${t.load.toFixed(1)} s, its edit ${t.edit.toFixed(1)} s; with tiny-vae: reload ` +
          `${t.reload.toFixed(1)} s, edit ${t.vaeEdit.toFixed(1)} s; all ${((Date.now() - t0) / 1000).toFixed(1)} s`,
      );
    }
    console.log('PASS');
  } catch (e) {
    await screenshot(page, 'failed.png').catch(() => {});
    throw e;
  } finally {
    await browser.close();
    server.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    const shot = fs.existsSync(path.join(outDir, 'failed.png')) ? ' (screenshot: target/web-test/failed.png)' : '';
    console.log(`FAIL: ${e instanceof Failure ? e.message : e.stack ?? e}${shot}`);
    process.exit(1);
  },
);
