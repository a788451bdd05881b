#!/usr/bin/env node
// The Interpolate panel's seed helpers (web/seeds.js: readSeedHeader, sampling, seedStem, seedLabel, defaultPair,
// frameName), in Node, with the native seed of the page's case (tests/fixtures/reference/web-case.safetensors) and
// made-up files:
//
//   node tests/web/seeds.mjs        (or node --test tests/web/)
//
// node:test runs the tests and sets a non-zero exit code when one fails.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { defaultPair, frameName, readSeedHeader, sampling, seedLabel, seedStem } from '../../web/seeds.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const webCase = path.join(root, 'tests/fixtures/reference/web-case.safetensors');

/** A safetensors file's bytes with this header (tensor data left out: only the header is read). */
function withHeader(header) {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const length = new Uint8Array(8);
  new DataView(length.buffer).setBigUint64(0, BigInt(json.length), true);
  return new Blob([length, json]);
}

const latents = (dtype, shape) => ({ latents: { dtype, shape, data_offsets: [0, 0] } });

test('readSeedHeader: a seed file written by fpi gives its shape and settings', async () => {
  const { shape, meta } = await readSeedHeader(await fs.openAsBlob(webCase));
  assert.deepEqual(shape, [1, 4, 16, 16]);
  assert.equal(meta.prompt, 'a man with a camera');
  assert.deepEqual(sampling(meta), { prompt: 'a man with a camera', steps: 4, guidance: 2 });
});

test('readSeedHeader: a seed without metadata reads; other files are errors that say why', async () => {
  assert.deepEqual(await readSeedHeader(withHeader(latents('F32', [1, 4, 8, 8]))), { shape: [1, 4, 8, 8], meta: {} });
  const cases = [
    [new Blob(['abc']), 'too short for a safetensors file'],
    [new Blob([new Uint8Array(8).fill(255), 'x']), 'not a safetensors file'],
    [withHeader({ 'model.diffusion_model.x': { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }), 'no tensor named `latents`: not a seed file'],
    [withHeader(latents('F16', [1, 4, 8, 8])), '`latents` is F16, expected F32'],
    [withHeader(latents('F32', [2, 4, 8, 8])), '`latents` has shape [2,4,8,8], expected [1, C, h, w]'],
    [withHeader(latents('F32', [4, 8, 8])), '`latents` has shape [4,8,8], expected [1, C, h, w]'],
  ];
  for (const [blob, message] of cases) await assert.rejects(readSeedHeader(blob), { message });
  const notJson = new Uint8Array(10);
  new DataView(notJson.buffer).setBigUint64(0, 2n, true);
  notJson.set([0x7b, 0x7b], 8);
  await assert.rejects(readSeedHeader(new Blob([notJson])), { message: 'not a safetensors file (its header is not JSON)' });
});

test('sampling: what the metadata says, null where it says nothing', () => {
  assert.deepEqual(sampling({}), { prompt: null, steps: null, guidance: null });
  assert.deepEqual(sampling({ prompt: '', steps: '50', guidance: 'many' }), { prompt: '', steps: 50, guidance: null });
});

test('seedStem, seedLabel: seeds named by their files and described by their metadata', () => {
  assert.equal(seedStem('camera.seed.safetensors'), 'camera');
  assert.equal(seedStem('frame.SAFETENSORS'), 'frame');
  assert.equal(seedStem('.seed.safetensors'), 'seed');
  const meta = { prompt: 'a cat', size: '512', steps: '50' };
  assert.equal(seedLabel(1, { name: 'cat.seed.safetensors', shape: [1, 4, 64, 64], meta }), '1. cat.seed.safetensors: “a cat”, 512 px, 50 steps');
  assert.equal(seedLabel(2, { name: 'noise.safetensors', shape: [1, 4, 64, 48], meta: {} }), '2. noise.safetensors: latents 4×64×48');
  const derivation = JSON.stringify({ operation: 'interpolation', method: 'nao', sources: ['a', 'b'], frame: 2, frames: 9 });
  assert.equal(seedLabel(3, { name: 'f.safetensors', shape: [1, 4, 4, 4], meta: { prompt: '', derivation } }), '3. f.safetensors: no prompt, latents 4×4×4, frame 3 of 9 (nao)');
});

test('defaultPair: the last two seeds, the older first; one seed twice', () => {
  assert.equal(defaultPair(0), null);
  assert.deepEqual(defaultPair(1), [0, 0]);
  assert.deepEqual(defaultPair(2), [0, 1]);
  assert.deepEqual(defaultPair(5), [3, 4]);
});

test('frameName: both seeds, the method and the frame from 1, padded to the count', () => {
  const names = ['camera.seed.safetensors', 'dog.safetensors'];
  assert.equal(frameName(names, 'nao', 0, 9, 'png'), 'camera-to-dog.nao.1-of-9.png');
  assert.equal(frameName(names, 'lerp', 9, 12, 'seed'), 'camera-to-dog.lerp.10-of-12.seed.safetensors');
  assert.equal(frameName(names, 'slerp', 2, 100, 'png'), 'camera-to-dog.slerp.003-of-100.png');
});
