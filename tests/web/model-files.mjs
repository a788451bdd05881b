#!/usr/bin/env node
// Placing loose model files (web/model-files.js: looseFiles and its helpers) in Node, with the tiny model's real
// files and a few made-up ones:
//
//   node tests/web/model-files.mjs
//
// Exit code 0 is a pass. Needs no browser: Node's File and Blob stand in for the page's.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { looseFiles, placeFile, safetensorsKeys, weightsComponent } from '../../web/model-files.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const tiny = path.join(root, 'tests/fixtures/tiny-sd');

let failures = 0;
const check = (ok, message) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${message}`);
  if (!ok) failures += 1;
};
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/// A fixture file as a File named `name` (its own name by default), read lazily from disk.
async function fixture(rel, name = path.basename(rel)) {
  return new File([await fs.openAsBlob(path.join(tiny, rel))], name);
}

/// A safetensors file with these tensor names (no data: the header is all that is read).
function safetensors(name, keys) {
  const header = Object.fromEntries(keys.map((key) => [key, { dtype: 'F32', shape: [0], data_offsets: [0, 0] }]));
  const json = new TextEncoder().encode(JSON.stringify(header));
  const length = new Uint8Array(8);
  new DataView(length.buffer).setBigUint64(0, BigInt(json.length), true);
  return new File([length, json], name);
}

const json = (name, value) => new File([JSON.stringify(value)], name);

const NINE = [
  'unet/config.json', 'unet/diffusion_pytorch_model.safetensors', 'vae/config.json',
  'vae/diffusion_pytorch_model.safetensors', 'text_encoder/config.json', 'text_encoder/model.fp16.safetensors',
  'tokenizer/vocab.json', 'tokenizer/merges.txt', 'scheduler/scheduler_config.json',
];

// The nine files of tests/fixtures/tiny-sd, as a picker gives them (names only), in a shuffled order.
{
  const files = await Promise.all([...NINE].reverse().map((rel) => fixture(rel)));
  const result = await looseFiles(files);
  check(same([...result.files.keys()].sort(), [...NINE].sort()), `the tiny model's 9 files go to their places: ${[...result.files.keys()].join(', ')}`);
  const wrong = NINE.filter((rel) => result.files.get(rel)?.size !== fs.statSync(path.join(tiny, rel)).size);
  check(wrong.length === 0, `each place holds its own file${wrong.length ? ` (not: ${wrong.join(', ')})` : ''}`);
  check(result.missing.length === 0 && result.unknown.length === 0 && result.clashes.length === 0,
    `nothing missing, unknown or clashing (${JSON.stringify(result.missing)} ${JSON.stringify(result.unknown)} ${JSON.stringify(result.clashes)})`);
}

// With the spare files of the folder: left out quietly.
{
  const spare = ['tokenizer/tokenizer_config.json', 'tokenizer/special_tokens_map.json', 'model_index.json'];
  const files = await Promise.all([...NINE, ...spare].map((rel) => fixture(rel)));
  const result = await looseFiles(files);
  check(result.files.size === 9 && result.unknown.length === 0 && result.missing.length === 0,
    `tokenizer_config.json, special_tokens_map.json and model_index.json are left out quietly (${result.unknown})`);
}

// Renamed files are placed by content; '.fp16' stays only where the name had it.
{
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
  check(same([...result.files.keys()].sort(), expected.sort()), `renamed files are placed by content: ${[...result.files.keys()].join(', ')}`);
  check(result.missing.length === 0, `and the set is complete (${result.missing})`);
}

// Safetensors headers: only the header is read, and the keys decide.
{
  const file = await fixture('vae/diffusion_pytorch_model.safetensors');
  const ranges = [];
  const spy = { name: file.name, size: file.size, slice: (a, b) => (ranges.push([a, b]), file.slice(a, b)) };
  const keys = await safetensorsKeys(spy);
  const n = Number(new DataView(await file.slice(0, 8).arrayBuffer()).getBigUint64(0, true));
  check(ranges.every(([a, b]) => b !== undefined && b <= 8 + n) && ranges.length === 2,
    `safetensorsKeys reads ${JSON.stringify(ranges)} of ${file.size} bytes (header ${8 + n})`);
  check(weightsComponent(keys) === 'vae', 'the VAE (encoder.down_blocks and decoder.) is the VAE');
  check(weightsComponent(['embeddings.token_embedding.weight', 'encoder.layers.0.mlp.fc1.weight', 'final_layer_norm.weight']) === 'text_encoder',
    'CLIP without the text_model. prefix is the text encoder');
  check(weightsComponent(['encoder.down_blocks.0.resnets.0.conv1.weight', 'quant_conv.weight']) === 'vae', 'a VAE with quant_conv is the VAE');
  check(weightsComponent(['down_blocks.0.resnets.0.conv1.weight']) === null, 'down_blocks without time_embedding is nothing');
}

// Configs without _class_name: transformers' CLIP config by architectures or model_type alone.
{
  const byType = await placeFile(json('config.json', { model_type: 'clip_text_model', hidden_size: 768 }));
  check(byType.path === 'text_encoder/config.json', `model_type clip_text_model → ${JSON.stringify(byType)}`);
  const ddim = await placeFile(json('config.json', { _class_name: 'DDIMScheduler' }));
  check(ddim.path === 'scheduler/scheduler_config.json', `_class_name DDIMScheduler → ${JSON.stringify(ddim)}`);
}

// Unrecognised files are named with the reason; clashes name both files; what lacks is reported.
{
  const files = await Promise.all([...NINE].map((rel) => fixture(rel)));
  const extra = [
    new File(['hello'], 'notes.txt'),
    new File(['x'.repeat(100)], 'pytorch_model.bin'),
    new File(['not safetensors at all'], 'broken.safetensors'),
    safetensors('sd15.safetensors', ['model.diffusion_model.input_blocks.0.0.weight']),
    json('other.json', { _class_name: 'ControlNetModel' }),
  ];
  const result = await looseFiles([...files, ...extra]);
  check(result.files.size === 9 && result.unknown.length === 5, `5 unrecognised files: ${result.unknown.join(', ')}`);
  check(result.unknown.some((u) => u.startsWith('sd15.safetensors (a single-file checkpoint')), 'a single-file checkpoint is called one');

  const clash = await looseFiles([...files, await fixture('unet/config.json', 'unet-copy.json')]);
  check(same(clash.clashes, ['unet/config.json: config.json, unet-copy.json']), `two UNet configs clash: ${clash.clashes}`);

  const noVae = await looseFiles(files.filter((_, i) => ![2, 3].includes(i)));
  check(noVae.missing.length === 2 && noVae.missing.every((m) => m.startsWith('vae/')), `without the VAE: lacks ${noVae.missing.join(', ')}`);

  // fp16 and f32 weights of one component are two places, not a clash (Model.load prefers f32).
  const both = await looseFiles([...files, await fixture('unet/diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors')]);
  check(both.clashes.length === 0 && both.files.has('unet/diffusion_pytorch_model.fp16.safetensors'), 'fp16 and f32 UNet weights side by side');
}

console.log(failures ? `FAIL: ${failures} checks failed` : 'PASS');
process.exit(failures ? 1 : 0);
