#!/usr/bin/env node
// Placing loose model files (web/model-files.js: looseFiles and its helpers) in Node, with the tiny model's real
// files and a few made-up ones:
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
  looseFiles, missingFiles, placeFile, presentFiles, safetensorsKeys, weightsComponent,
} from '../../web/model-files.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const tiny = path.join(root, 'tests/fixtures/tiny-sd');

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
    safetensors('sd15.safetensors', ['model.diffusion_model.input_blocks.0.0.weight']),
    json('other.json', { _class_name: 'ControlNetModel' }),
  ];
  const result = await looseFiles([...files, ...extra]);
  assert.equal(result.files.size, TINY_FILES.length);
  assert.equal(result.unknown.length, 5, `5 unrecognised files: ${result.unknown.join(', ')}`);
  assert.ok(result.unknown.some((u) => u.startsWith('sd15.safetensors (a single-file checkpoint')), 'a single-file checkpoint is called one');

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
