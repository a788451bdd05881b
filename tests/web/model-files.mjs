#!/usr/bin/env node
// Gathering models and VAEs (web/model-files.js: looseFiles, modelFromFiles, modelFromFolder, vaeFromFiles and
// their helpers), parsing the URL field (hubId, parseLocation) and fetchModel's requests, in Node, with the tiny
// model's real files and a few made-up ones (and tests/fixtures/single-file/ when it is there):
//
//   node tests/web/model-files.mjs        (or node --test tests/web/)
//
// node:test runs the tests and sets a non-zero exit code when one fails. Needs no browser: Node's File and Blob
// stand in for the page's.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  CHECKPOINT_CONFIGS, PICKLE, VAE_FILES, fetchModel, hubId, isCheckpoint, isVaeCheckpoint, looseFiles, missingFiles,
  modelFromFiles, modelFromFolder, parseLocation, placeFile, presentFiles, safetensorsKeys, vaeFromFiles,
  weightsComponent,
} from '../../web/model-files.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const tiny = path.join(root, 'tests/fixtures/tiny-sd');
const singleFile = path.join(root, 'tests/fixtures/single-file');

/** Whether tests/fixtures/tiny-sd has a file. */
const inTiny = (rel) => fs.existsSync(path.join(tiny, rel));
/** The files of tests/fixtures/tiny-sd that Model.load needs (by web/model-files.js's MODEL_FILES). */
const TINY_FILES = presentFiles(inTiny);

/** A fixture file as a File named `name` (its own name by default), read lazily from disk. */
async function fixture(rel, name = path.basename(rel)) {
  return new File([await fs.openAsBlob(path.join(tiny, rel))], name);
}

/** A safetensors file with these tensor names (no data: the header is all that is read). */
function safetensors(name, keys) {
  const header = Object.fromEntries(keys.map((key) => [key, { dtype: 'F32', shape: [0], data_offsets: [0, 0] }]));
  const json = new TextEncoder().encode(JSON.stringify(header));
  const length = new Uint8Array(8);
  new DataView(length.buffer).setBigUint64(0, BigInt(json.length), true);
  return new File([length, json], name);
}

const json = (name, value) => new File([JSON.stringify(value)], name);

/** The sorted keys of a looseFiles result's file map. */
const places = (result) => [...result.files.keys()].sort();

test('the tiny model has every file Model.load needs', () => {
  assert.deepEqual(missingFiles(inTiny), []);
  assert.equal(TINY_FILES.length, 9, `tiny-sd's model files: ${TINY_FILES.join(', ')}`);
});

test("the tiny model's files, as a picker gives them (names only) in a shuffled order, go to their places", async () => {
  const files = await Promise.all([...TINY_FILES].reverse().map((rel) => fixture(rel)));
  const result = await looseFiles(files);
  assert.deepEqual(places(result), [...TINY_FILES].sort());
  for (const rel of TINY_FILES) {
    assert.equal(result.files.get(rel).size, fs.statSync(path.join(tiny, rel)).size, `${rel} holds its own file`);
  }
  assert.deepEqual([result.missing, result.unknown, result.clashes], [[], [], []], 'nothing missing, unknown or clashing');
});

test("the folder's spare files are left out quietly", async () => {
  const spare = ['tokenizer/tokenizer_config.json', 'tokenizer/special_tokens_map.json', 'model_index.json'];
  const result = await looseFiles(await Promise.all([...TINY_FILES, ...spare].map((rel) => fixture(rel))));
  assert.equal(result.files.size, TINY_FILES.length);
  assert.deepEqual([result.missing, result.unknown], [[], []]);
});

test("renamed files are placed by content; '.fp16' stays only where the name had it", async () => {
  const files = await Promise.all([
    fixture('unet/config.json', 'unet-config.json'),
    fixture('unet/diffusion_pytorch_model.safetensors', 'unet_fp16.safetensors'),
    fixture('vae/config.json', 'config (1).json'),
    fixture('vae/diffusion_pytorch_model.safetensors', 'weights.safetensors'),
    fixture('text_encoder/config.json', 'clip.json'),
    fixture('text_encoder/model.fp16.safetensors', 'clip.safetensors'),
    fixture('tokenizer/vocab.json'),
    fixture('tokenizer/merges.txt'),
    fixture('scheduler/scheduler_config.json', 'sched.json'),
  ]);
  const result = await looseFiles(files);
  const expected = [
    'unet/config.json', 'unet/diffusion_pytorch_model.fp16.safetensors', 'vae/config.json',
    'vae/diffusion_pytorch_model.safetensors', 'text_encoder/config.json', 'text_encoder/model.safetensors',
    'tokenizer/vocab.json', 'tokenizer/merges.txt', 'scheduler/scheduler_config.json',
  ];
  assert.deepEqual(places(result), expected.sort());
  assert.deepEqual(result.missing, [], 'and the set is complete');
});

test('safetensors headers: only the header is read, and the keys decide', async () => {
  const file = await fixture('vae/diffusion_pytorch_model.safetensors');
  const ranges = [];
  const spy = { name: file.name, size: file.size, slice: (a, b) => (ranges.push([a, b]), file.slice(a, b)) };
  const keys = await safetensorsKeys(spy);
  const n = Number(new DataView(await file.slice(0, 8).arrayBuffer()).getBigUint64(0, true));
  assert.equal(ranges.length, 2, `safetensorsKeys reads ${JSON.stringify(ranges)}`);
  assert.ok(ranges.every(([a, b]) => b !== undefined && b <= 8 + n), `${JSON.stringify(ranges)} within the header (${8 + n} bytes)`);
  assert.equal(weightsComponent(keys), 'vae', 'the VAE (encoder.down_blocks and decoder.) is the VAE');
  const clip = ['embeddings.token_embedding.weight', 'encoder.layers.0.mlp.fc1.weight', 'final_layer_norm.weight'];
  assert.equal(weightsComponent(clip), 'text_encoder', 'CLIP without the text_model. prefix is the text encoder');
  assert.equal(weightsComponent(['encoder.down_blocks.0.resnets.0.conv1.weight', 'quant_conv.weight']), 'vae', 'a VAE with quant_conv');
  assert.equal(weightsComponent(['down_blocks.0.resnets.0.conv1.weight']), null, 'down_blocks without time_embedding is nothing');
});

test("configs without _class_name: transformers' CLIP config by model_type alone", async () => {
  const byType = await placeFile(json('config.json', { model_type: 'clip_text_model', hidden_size: 768 }));
  assert.deepEqual(byType, { path: 'text_encoder/config.json' });
  const ddim = await placeFile(json('config.json', { _class_name: 'DDIMScheduler' }));
  assert.deepEqual(ddim, { path: 'scheduler/scheduler_config.json' });
});

test('unrecognised files are named with the reason; clashes name both files; what lacks is reported', async () => {
  const files = await Promise.all(TINY_FILES.map((rel) => fixture(rel)));
  const extra = [
    new File(['hello'], 'notes.txt'),
    new File(['x'.repeat(100)], 'pytorch_model.bin'),
    new File(['not safetensors at all'], 'broken.safetensors'),
    json('other.json', { _class_name: 'ControlNetModel' }),
  ];
  const result = await looseFiles([...files, ...extra]);
  assert.equal(result.files.size, TINY_FILES.length);
  assert.equal(result.unknown.length, 4, `4 unrecognised files: ${result.unknown.join(', ')}`);
  assert.ok(result.unknown.includes(`pytorch_model.bin (${PICKLE})`), 'a pickle is called one, with what to do');

  const clash = await looseFiles([...files, await fixture('unet/config.json', 'unet-copy.json')]);
  assert.deepEqual(clash.clashes, ['unet/config.json: config.json, unet-copy.json'], 'two UNet configs clash');

  const noVae = await looseFiles(files.filter((file, i) => !TINY_FILES[i].startsWith('vae/')));
  assert.equal(noVae.missing.length, 2);
  assert.ok(noVae.missing.every((m) => m.startsWith('vae/')), `without the VAE: lacks ${noVae.missing.join(', ')}`);
});

test('fp16 and f32 weights of one component are two places, not a clash (Model.load prefers f32)', async () => {
  const files = await Promise.all(TINY_FILES.map((rel) => fixture(rel)));
  const fp16 = await fixture('unet/diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors');
  const both = await looseFiles([...files, fp16]);
  assert.deepEqual(both.clashes, []);
  assert.ok(both.files.has('unet/diffusion_pytorch_model.fp16.safetensors'));
});

// -------------------------------------------------------------------------------------------------------------
// Single-file checkpoints and replacement VAEs

/** A made-up SD1.x checkpoint's keys (LDM names: the UNet, the VAE and CLIP under their prefixes). */
const CHECKPOINT_KEYS = [
  'model.diffusion_model.input_blocks.0.0.weight', 'model.diffusion_model.time_embed.0.weight',
  'first_stage_model.decoder.up.0.block.0.conv1.weight', 'first_stage_model.encoder.down.0.block.0.conv1.weight',
  'cond_stage_model.transformer.text_model.embeddings.token_embedding.weight',
];
/** A made-up VAE checkpoint's keys (vae-ft-mse-840000-ema-pruned.safetensors's names). */
const VAE_CHECKPOINT_KEYS = ['encoder.down.0.block.0.conv1.weight', 'decoder.up.0.block.0.conv1.weight', 'decoder.mid.attn_1.q.weight', 'quant_conv.weight'];

/** The tiny model's config, tokenizer and scheduler files (what a checkpoint of a non-SD1.x-sized model needs along). */
const TINY_CONFIGS = CHECKPOINT_CONFIGS.filter(inTiny);

test('checkpoints and VAE checkpoints are told by their keys, not taken for diffusers parts', async () => {
  assert.ok(isCheckpoint(CHECKPOINT_KEYS));
  assert.ok(!isVaeCheckpoint(CHECKPOINT_KEYS), "a whole checkpoint's VAE keys carry first_stage_model.");
  assert.ok(isVaeCheckpoint(VAE_CHECKPOINT_KEYS));
  const diffusersVae = await safetensorsKeys(await fixture('vae/diffusion_pytorch_model.safetensors'));
  assert.ok(!isVaeCheckpoint(diffusersVae) && !isCheckpoint(diffusersVae), 'a diffusers VAE (down_blocks, mid_block) is neither');
  assert.deepEqual(await placeFile(safetensors('v1-5-pruned-emaonly.safetensors', CHECKPOINT_KEYS)), { checkpoint: true });
  assert.deepEqual(await placeFile(safetensors('vae-ft-mse.safetensors', VAE_CHECKPOINT_KEYS)), { vaeCheckpoint: true });
  assert.deepEqual(await placeFile(new File(['x'], 'v1-5-pruned-emaonly.ckpt')), { why: PICKLE });
});

test('one checkpoint alone is a model of one file, at the map root under its name', async () => {
  const { model, vae, error } = await modelFromFiles([safetensors('v1-5-pruned-emaonly.safetensors', CHECKPOINT_KEYS)]);
  assert.equal(error, null);
  assert.deepEqual([...model.files.keys()], ['v1-5-pruned-emaonly.safetensors']);
  assert.deepEqual([model.name, model.format, vae], ['v1-5-pruned-emaonly', 'checkpoint', null]);
});

test("a checkpoint with the tiny model's configs: the configs go to their diffusers places, spare files stay out", async () => {
  const configs = await Promise.all([...TINY_CONFIGS, 'model_index.json', 'tokenizer/special_tokens_map.json'].map((rel) => fixture(rel)));
  const { model, error } = await modelFromFiles([...configs, safetensors('tiny-sd.safetensors', CHECKPOINT_KEYS)]);
  assert.equal(error, null);
  assert.deepEqual([...model.files.keys()].sort(), ['tiny-sd.safetensors', ...TINY_CONFIGS].sort());
  assert.equal(model.format, 'checkpoint');
});

test('a checkpoint beside diffusers weights, or two checkpoints, is an error of one line', async () => {
  const checkpoint = safetensors('a.safetensors', CHECKPOINT_KEYS);
  const unet = await fixture('unet/diffusion_pytorch_model.safetensors');
  const mixed = await modelFromFiles([checkpoint, unet]);
  assert.match(mixed.error, /^a\.safetensors is a whole model, and the files hold diffusers weights too \(unet\/diffusion_pytorch_model\.safetensors\): pick one model$/);
  const two = await modelFromFiles([checkpoint, safetensors('b.safetensors', CHECKPOINT_KEYS)]);
  assert.equal(two.error, 'several checkpoints: a.safetensors, b.safetensors (pick one)');
  const pickle = await modelFromFiles([new File(['x'], 'v1-5-pruned-emaonly.ckpt')]);
  assert.equal(pickle.error, `not a model or a VAE: v1-5-pruned-emaonly.ckpt (${PICKLE})`);
  for (const e of [mixed, two, pickle]) assert.ok(!e.error.includes('\n') && e.model === null && e.vae === null);
});

test('a VAE beside a checkpoint is its replacement VAE: a VAE checkpoint, or a VAE config with its weights', async () => {
  const checkpoint = safetensors('sd.safetensors', CHECKPOINT_KEYS);
  const one = await modelFromFiles([checkpoint, safetensors('vae-ft-mse.safetensors', VAE_CHECKPOINT_KEYS)]);
  assert.equal(one.error, null);
  assert.deepEqual([...one.model.files.keys()], ['sd.safetensors']);
  assert.deepEqual([...one.vae.files.keys()], ['vae-ft-mse.safetensors']);
  assert.equal(one.vae.name, 'vae-ft-mse');

  const vaeFiles = await Promise.all(['vae/config.json', 'vae/diffusion_pytorch_model.safetensors'].map((rel) => fixture(rel)));
  const unetConfig = await fixture('unet/config.json');
  const two = await modelFromFiles([checkpoint, unetConfig, ...vaeFiles]);
  assert.equal(two.error, null);
  assert.deepEqual([...two.model.files.keys()].sort(), ['sd.safetensors', 'unet/config.json'], "the VAE's config is the VAE's, not the checkpoint's");
  assert.deepEqual([...two.vae.files.keys()].sort(), ['config.json', 'diffusion_pytorch_model.safetensors']);
});

test('a VAE alone (checkpoint, or config + weights) is a replacement VAE, not a model', async () => {
  const alone = await modelFromFiles([safetensors('vae-ft-mse.safetensors', VAE_CHECKPOINT_KEYS)]);
  assert.deepEqual([alone.error, alone.model, [...alone.vae.files.keys()]], [null, null, ['vae-ft-mse.safetensors']]);
  const vaeFiles = await Promise.all(['vae/config.json', 'vae/diffusion_pytorch_model.safetensors'].map((rel) => fixture(rel)));
  const folder = await modelFromFiles(vaeFiles, 'sd-vae-ft-mse');
  assert.deepEqual([folder.error, folder.model, folder.vae.name], [null, null, 'sd-vae-ft-mse']);
  // A diffusers model missing its UNet is not a VAE: it is an incomplete model.
  const noUnet = await modelFromFiles(await Promise.all(TINY_FILES.filter((rel) => !rel.startsWith('unet/')).map((rel) => fixture(rel))));
  assert.match(noUnet.error, /^the files lack unet\/config\.json, unet\/diffusion_pytorch_model/);
});

/** The tiny model's folder as the picker gives it: [tiny-sd/<path>, File] for every file in it. */
async function tinyPairs(prefix = 'tiny-sd') {
  const walk = (dir) => fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    return entry.isDirectory() ? walk(full) : [path.relative(tiny, full)];
  });
  return Promise.all(walk(tiny).map(async (rel) => [`${prefix}/${rel}`, await fixture(rel)]));
}

test('folders: a diffusers folder leaves its root files out (a checkpoint beside it too)', async () => {
  const pairs = await tinyPairs();
  pairs.push(['tiny-sd/v1-5-pruned-emaonly.safetensors', safetensors('v1-5-pruned-emaonly.safetensors', CHECKPOINT_KEYS)]);
  const { model, error } = await modelFromFolder(pairs);
  assert.equal(error, null);
  assert.deepEqual([model.name, model.format], ['tiny-sd', 'diffusers']);
  assert.ok([...model.files.keys()].every((p) => p.includes('/')), `only the parts' files: ${[...model.files.keys()].join(', ')}`);
  assert.deepEqual(missingFiles((p) => model.files.has(p)), []);
});

test('folders: a checkpoint at the root with configs at their places; several checkpoints are an error', async () => {
  const configs = await Promise.all(TINY_CONFIGS.map(async (rel) => [`/models/tiny/${rel}`, await fixture(rel)]));
  const checkpoint = ['/models/tiny/tiny.safetensors', safetensors('tiny.safetensors', CHECKPOINT_KEYS)];
  const { model, error } = await modelFromFolder([...configs, checkpoint, ['/models/tiny/.git/config', new File(['x'], 'config')]]);
  assert.equal(error, null);
  assert.deepEqual([model.name, model.format], ['tiny', 'checkpoint']);
  assert.deepEqual([...model.files.keys()].sort(), ['tiny.safetensors', ...TINY_CONFIGS].sort());

  const bare = await modelFromFolder([['ckpts/one.safetensors', safetensors('one.safetensors', CHECKPOINT_KEYS)]]);
  assert.deepEqual([...bare.model.files.keys()], ['one.safetensors'], 'a folder holding only a checkpoint');
  const two = await modelFromFolder([
    ['ckpts/one.safetensors', safetensors('one.safetensors', CHECKPOINT_KEYS)],
    ['ckpts/two.safetensors', safetensors('two.safetensors', CHECKPOINT_KEYS)],
  ]);
  assert.equal(two.error, 'ckpts holds several checkpoints (one.safetensors, two.safetensors): pick or drop the one to load');
});

test('folders: a VAE folder is a replacement VAE named after it; a folder of neither is an error', async () => {
  const vaePairs = await Promise.all(['config.json', 'diffusion_pytorch_model.safetensors'].map(async (name) => [`/sd-vae-ft-mse/${name}`, await fixture(`vae/${name}`)]));
  const vae = await modelFromFolder(vaePairs);
  assert.deepEqual([vae.error, vae.model, vae.vae.name], [null, null, 'sd-vae-ft-mse']);
  assert.deepEqual([...vae.vae.files.keys()].sort(), ['config.json', 'diffusion_pytorch_model.safetensors']);
  const photos = await modelFromFolder([['photos/cat.jpg', new File(['x'], 'cat.jpg')]]);
  assert.match(photos.error, /^photos is not a model folder: /);
  const incomplete = await modelFromFolder((await tinyPairs()).filter(([p]) => !p.startsWith('tiny-sd/vae/')));
  assert.match(incomplete.error, /^tiny-sd is not a complete diffusers model folder: it lacks vae\/config\.json/);
});

test("vaeFromFiles: a VAE's files, a whole model's vae/ (f32 preferred), a VAE checkpoint; others say why", async () => {
  const whole = await vaeFromFiles((await tinyPairs()).map(([, file]) => file), 'tiny-sd');
  assert.equal(whole.error, null);
  assert.deepEqual([...whole.vae.files.keys()].sort(), ['config.json', 'diffusion_pytorch_model.safetensors']);
  assert.equal(whole.vae.files.get('diffusion_pytorch_model.safetensors').size, fs.statSync(path.join(tiny, 'vae/diffusion_pytorch_model.safetensors')).size);
  const fp16 = await fixture('vae/diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors');
  const onlyFp16 = await vaeFromFiles([await fixture('vae/config.json'), fp16]);
  assert.deepEqual([...onlyFp16.vae.files.keys()].sort(), ['config.json', 'diffusion_pytorch_model.fp16.safetensors']);
  const ckpt = await vaeFromFiles([safetensors('vae-ft-mse-840000-ema-pruned.safetensors', VAE_CHECKPOINT_KEYS)]);
  assert.deepEqual([ckpt.vae.name, [...ckpt.vae.files.keys()]], ['vae-ft-mse-840000-ema-pruned', ['vae-ft-mse-840000-ema-pruned.safetensors']]);
  assert.match((await vaeFromFiles([await fixture('vae/config.json')])).error, /config\.json needs its weights/);
  assert.match((await vaeFromFiles([await fixture('vae/diffusion_pytorch_model.safetensors')])).error, /weights need its config\.json/);
  assert.match((await vaeFromFiles([safetensors('sd.safetensors', CHECKPOINT_KEYS)])).error, /^sd\.safetensors is a whole model's checkpoint, not a VAE$/);
  assert.match((await vaeFromFiles([new File(['x'], 'vae.pt')])).error, /^not a VAE: vae\.pt \(a PyTorch pickle/);
});

test('the single-file fixtures: tiny-sd.safetensors is a checkpoint, tiny-vae/ (and tiny-vae.safetensors) a VAE', { skip: !fs.existsSync(singleFile) && 'tests/fixtures/single-file/ is not there yet' }, async () => {
  const checkpoint = new File([await fs.openAsBlob(path.join(singleFile, 'tiny-sd.safetensors'))], 'tiny-sd.safetensors');
  const configs = await Promise.all(TINY_CONFIGS.map((rel) => fixture(rel)));
  const { model, error } = await modelFromFiles([checkpoint, ...configs]);
  assert.equal(error, null);
  assert.deepEqual([model.name, model.format, model.files.size], ['tiny-sd', 'checkpoint', 1 + TINY_CONFIGS.length]);
  const vaeDir = path.join(singleFile, 'tiny-vae');
  const vaeFiles = await Promise.all(fs.readdirSync(vaeDir).map(async (name) => new File([await fs.openAsBlob(path.join(vaeDir, name))], name)));
  const vae = await vaeFromFiles(vaeFiles, 'tiny-vae');
  assert.equal(vae.error, null);
  assert.deepEqual([vae.vae.name, [...vae.vae.files.keys()].sort()], ['tiny-vae', ['config.json', 'diffusion_pytorch_model.safetensors']]);
  if (fs.existsSync(path.join(singleFile, 'tiny-vae.safetensors'))) {
    const ldm = new File([await fs.openAsBlob(path.join(singleFile, 'tiny-vae.safetensors'))], 'tiny-vae.safetensors');
    const one = await vaeFromFiles([ldm]);
    assert.deepEqual([one.error, [...one.vae.files.keys()]], [null, ['tiny-vae.safetensors']], 'the VAE in LDM keys is one VAE file');
  }
});

// -------------------------------------------------------------------------------------------------------------
// The URL field: Hugging Face ids, URLs and paths

const PAGE = 'https://example.org/fpi/index.html';

test('hubId: ORG/NAME[@REV] with dots, dashes and underscores; nothing else', () => {
  assert.deepEqual(hubId('stable-diffusion-v1-5/stable-diffusion-v1-5'), { org: 'stable-diffusion-v1-5', name: 'stable-diffusion-v1-5', rev: 'main' });
  assert.deepEqual(hubId(' stabilityai/sd-vae-ft-mse '), { org: 'stabilityai', name: 'sd-vae-ft-mse', rev: 'main' });
  assert.deepEqual(hubId('hf_user.x/my_model-v1.5@fp16'), { org: 'hf_user.x', name: 'my_model-v1.5', rev: 'fp16' });
  assert.deepEqual(hubId('org/name@refs/pr/3'), { org: 'org', name: 'name', rev: 'refs/pr/3' });
  assert.deepEqual(hubId('models/sd15'), { org: 'models', name: 'sd15', rev: 'main' }, 'one slash, nothing around it: an id, by the rule');
  const notIds = [
    './models/sd15', 'models/sd15/', '/models/sd15', '../sd15/x', 'a/b/c', 'sd15', 'https://huggingface.co/a/b',
    'http://localhost:8080/m', 'a--b/c', 'a/b..c', '-a/b', 'a/b-', '.a/b', 'a/b.', 'a b/c', 'a/b@', '',
    `${'a'.repeat(60)}/${'b'.repeat(40)}`,
  ];
  for (const text of notIds) assert.equal(hubId(text), null, `'${text}' is not an id`);
});

test('parseLocation: ids and Hugging Face pages become file URLs; other URLs and paths stay as they are', () => {
  const base = (text) => parseLocation(text, PAGE);
  assert.deepEqual(base('stable-diffusion-v1-5/stable-diffusion-v1-5'),
    { base: 'https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/', file: null, query: '', name: 'stable-diffusion-v1-5' });
  assert.equal(base('stabilityai/sd-vae-ft-mse@v2.0').base, 'https://huggingface.co/stabilityai/sd-vae-ft-mse/resolve/v2.0/');
  assert.equal(base('org/name@refs/pr/3').base, 'https://huggingface.co/org/name/resolve/refs%2Fpr%2F3/');
  // Hugging Face pages, as before: the repository, a tree (with a folder in it), a file's page; with or without https://.
  assert.equal(base('https://huggingface.co/org/name').base, 'https://huggingface.co/org/name/resolve/main/');
  assert.equal(base('https://huggingface.co/org/name/tree/fp16').base, 'https://huggingface.co/org/name/resolve/fp16/');
  assert.deepEqual(base('https://huggingface.co/org/name/tree/main/vae'), { base: 'https://huggingface.co/org/name/resolve/main/vae/', file: null, query: '', name: 'vae' });
  assert.equal(base('huggingface.co/org/name').base, 'https://huggingface.co/org/name/resolve/main/');
  assert.equal(base('https://huggingface.co/org/name/resolve/main/').base, 'https://huggingface.co/org/name/resolve/main/', 'a file base stays');
  // Other URLs: unchanged, but for the trailing '/', the query and the fragment.
  assert.equal(base('https://models.example.com/sd15/?x=1#y').base, 'https://models.example.com/sd15/');
  assert.equal(base('http://127.0.0.1:8000/fixtures/tiny-sd').base, 'http://127.0.0.1:8000/fixtures/tiny-sd/');
  // Paths: relative to the page.
  assert.deepEqual(base('./models/x'), { base: 'https://example.org/fpi/models/x/', file: null, query: '', name: 'x' });
  assert.equal(base('models/x/').base, 'https://example.org/fpi/models/x/');
  assert.equal(base('/models/x').base, 'https://example.org/models/x/');
  assert.equal(base('models/x').base, 'https://huggingface.co/models/x/resolve/main/', 'the documented rule: one slash is an id');
});

test('parseLocation: a .safetensors URL is one file (a checkpoint); a pickle is refused in one line', () => {
  const blob = parseLocation('https://huggingface.co/org/name/blob/main/v1-5-pruned-emaonly.safetensors?download=true', PAGE);
  assert.deepEqual(blob, {
    base: 'https://huggingface.co/org/name/resolve/main/', file: 'v1-5-pruned-emaonly.safetensors', query: '?download=true', name: 'v1-5-pruned-emaonly',
  });
  assert.deepEqual(parseLocation('./ckpt/my%20model.safetensors', PAGE),
    { base: 'https://example.org/fpi/ckpt/', file: 'my model.safetensors', query: '', name: 'my model' });
  assert.throws(() => parseLocation('https://x.org/v1-5-pruned-emaonly.ckpt', PAGE), { message: `v1-5-pruned-emaonly.ckpt is ${PICKLE}` });
  assert.throws(() => parseLocation('http://[bad', PAGE), TypeError);
});

test('fetchModel: fp16 first, then f32; one file with its query, its name escaped in the URL', async (t) => {
  const asked = [];
  const present = new Set(['https://h/vae/config.json', 'https://h/vae/diffusion_pytorch_model.safetensors', 'https://h/c/my%20model.safetensors?download=true']);
  t.mock.method(globalThis, 'fetch', async (url) => {
    asked.push(url);
    return present.has(url) ? new Response('abc', { headers: { 'content-length': '3' } }) : new Response('no', { status: 404 });
  });
  const report = () => {};
  const vae = await fetchModel('https://h/vae/', report, { entries: VAE_FILES, what: 'the VAE' });
  assert.deepEqual([...vae.files.keys()], ['config.json', 'diffusion_pytorch_model.safetensors']);
  assert.deepEqual(asked, ['https://h/vae/config.json', 'https://h/vae/diffusion_pytorch_model.fp16.safetensors', 'https://h/vae/diffusion_pytorch_model.safetensors']);
  const one = await fetchModel('https://h/c/', report, { entries: [[['my model.safetensors']]], query: '?download=true' });
  assert.deepEqual([[...one.files.keys()], one.downloaded, one.bytes], [['my model.safetensors'], 1, 3]);
  await assert.rejects(fetchModel('https://h/none/', report), {
    message: "the model at https://h/none/ lacks unet/config.json (not a diffusers folder; for a single-file checkpoint give the .safetensors file's URL)",
  });
  await assert.rejects(fetchModel('https://h/none/', report, { entries: VAE_FILES, what: 'the VAE' }), { message: 'the VAE at https://h/none/ lacks config.json' });
});
