// SanaPool: sharded decoding spread over worker devices (cpu, wasm, and cuda where it runs), retry of a crashed worker's task,
// the retry limit, abort, and batch rendering through the API.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createBackend, deviceCount, probeBackends } from '../../ts/backends/registry.js';
import type { JsonValue } from '../../ts/io/json.js';
import { AutoencoderDC } from '../../ts/models/autoencoder-dc.js';
import { demoModelDir } from '../../ts/paths.js';
import { createSanaPool, readRenderJobs, SanaPool, slug, type PoolEvent } from '../../ts/pool/sana-pool.js';
import { maxRelDiff, randomDcae, randomLatents } from '../fixtures/random-dcae.js';
import { golden as goldenFixture, needs } from '../fixtures/shared.js';
import { SafetensorsFile } from '../../ts/io/safetensors.js';
import { writeFileSync } from 'node:fs';

const root = mkdtempSync(join(tmpdir(), 'sana-pool-'));
const cudaProbe = probeBackends().find((p) => p.name === 'cuda')!;
afterAll(() => rmSync(root, { recursive: true, force: true }));

const MIXED: Record<string, JsonValue> = {
  in_channels: 3, latent_channels: 8, attention_head_dim: 4,
  decoder_block_types: ['EfficientViTBlock', 'ResBlock', 'ResBlock', 'EfficientViTBlock'],
  decoder_block_out_channels: [8, 8, 16, 16], decoder_layers_per_block: [1, 1, 1, 2],
  decoder_qkv_multiscales: [[3], [], [], [5]],
  encoder_block_types: 'ResBlock', encoder_block_out_channels: [8, 8, 16, 16], encoder_layers_per_block: [1, 1, 1, 1],
  encoder_qkv_multiscales: [[], [], [], []],
};

async function untiled(dir: string, z: Float32Array, shape: [number, number, number, number]): Promise<Float32Array> {
  const be = await createBackend('cpu');
  const vae = AutoencoderDC.fromFolder(dir, be);
  try {
    return vae.decode(z, shape);
  } finally {
    vae.dispose();
    be.dispose();
  }
}

describe('sharded decode on a pool', () => {
  let dir: string;
  beforeAll(() => {
    dir = randomDcae(join(root, 'mixed'), MIXED, 3);
  });

  // with a GPU the pool runs on it too (two workers on one GPU, and a GPU beside a cpu worker)
  if (!cudaProbe.available) it.skip(`devices cuda:0,cuda:0 and cuda:0,cpu: ${cudaProbe.reason}`);
  const cudaDevices = cudaProbe.available ? [['cuda:0,cuda:0'], ['cuda:0,cpu']] : [];
  it.each([['cpu,cpu'], ['wasm,wasm'], ['cpu,wasm'], ...cudaDevices])('devices %s: equals the untiled decode, every pass spread over both workers', async (devices) => {
    const shape: [number, number, number, number] = [1, 8, 7, 9];
    const z = randomLatents(8 * 7 * 9, 5);
    const ref = await untiled(dir, z, shape);
    await using pool = await createSanaPool({ model: dir, kind: 'vae', devices });
    const used = new Set<string>();
    const out = await pool.decode(z, shape, { grid: [3, 3], onProgress: (e) => e.status === 'task-done' && used.add(e.device) });
    expect(maxRelDiff(out, ref)).toBeLessThan(2e-5);
    expect([...used].sort()).toEqual(pool.devices.map((d) => d.label).sort());
  });

  it.skipIf(!goldenFixture.present)(needs(goldenFixture, "mode 'tiled': the tiles are tasks on the workers and the blend matches diffusers' tiled output (golden dcae_tiny)"), async () => {
    const golden = join(goldenFixture.dir, 'dcae_tiny');
    const inputs = SafetensorsFile.open(join(golden, 'inputs.safetensors'));
    const z = inputs.read('tiled_latent_14x20');
    inputs.close();
    const outputs = SafetensorsFile.open(join(golden, 'outputs.safetensors'));
    const expected = outputs.read('tiled_decoded_14x20').data as Float32Array;
    const untiled = outputs.read('untiled_decoded_14x20').data as Float32Array;
    outputs.close();
    await using pool = await createSanaPool({ model: golden, kind: 'vae', devices: 'cpu,wasm' });
    const used = new Set<string>();
    const tiling = { tileSampleMinHeight: 64, tileSampleMinWidth: 64, tileSampleStrideHeight: 48, tileSampleStrideWidth: 48 };
    const out = await pool.decode(z.data as Float32Array, z.info.shape as [number, number, number, number], { mode: 'tiled', tiling, onProgress: (e) => e.status === 'task-done' && used.add(e.device) });
    expect(used.size).toBe(2);
    expect(maxRelDiff(out, expected)).toBeLessThan(1e-5);
    expect(maxRelDiff(out, untiled)).toBeGreaterThan(1e-3); // the seams really are blended, not exact
  });

  it('a worker killed mid-task: its shard is retried on the other worker and the image is complete and identical', async () => {
    const vaeDir = join(demoModelDir(), 'vae');
    const shape: [number, number, number, number] = [1, 32, 16, 16];
    const z = randomLatents(32 * 16 * 16, 9);
    await using pool = await createSanaPool({ model: vaeDir, kind: 'vae', devices: 'cpu,cpu', threadsPerWorker: 1 });
    const clean = await pool.decode(z, shape, { grid: [2, 2] });
    const events: PoolEvent[] = [];
    let killed = false;
    const out = await pool.decode(z, shape, {
      grid: [2, 2],
      onProgress: (e) => {
        events.push(e);
        // the last pass (conv stages at full resolution) has the longest tasks: kill the first worker that starts one
        if (!killed && e.status === 'task-start' && e.label.startsWith('decoder.up_blocks.2')) {
          killed = true;
          void pool.terminateWorker(pool.devices.findIndex((d) => d.label === e.device));
        }
      },
    });
    const retries = events.filter((e) => e.status === 'task-retry');
    expect(killed).toBe(true);
    expect(retries.length).toBeGreaterThanOrEqual(1);
    expect(out).toEqual(clean);
    expect(maxRelDiff(out, await untiled(vaeDir, z, shape))).toBeLessThan(2e-5);
  });

  it('a task that keeps failing ends the run with an error naming it, after maxAttempts tries', async () => {
    await using pool = await createSanaPool({ model: dir, kind: 'vae', devices: 'cpu,cpu', maxAttempts: 2 });
    const shape: [number, number, number, number] = [1, 8, 6, 6];
    let tries = 0;
    const run = pool.decode(randomLatents(8 * 36, 2), shape, {
      grid: [1, 1],
      onProgress: (e) => {
        if (e.status === 'task-start') {
          tries++;
          void pool.terminateWorker(pool.devices.findIndex((d) => d.label === e.device));
        }
      },
    });
    await expect(run).rejects.toMatchObject({ code: 'ERR_SANA_WORKER_FAILED', message: expect.stringMatching(/task decoder\.conv_in .* shard 1\/1 failed 2 time\(s\)/) });
    expect(tries).toBe(2);
    // the pool still works afterwards (the killed workers were replaced)
    const z = randomLatents(8 * 36, 3);
    expect(maxRelDiff(await pool.decode(z, shape, { grid: [2, 2] }), await untiled(dir, z, shape))).toBeLessThan(2e-5);
  });

  it('rejects bad devices with a clear error', async () => {
    const gpus = deviceCount('cuda');
    if (!cudaProbe.available) await expect(createSanaPool({ model: dir, kind: 'vae', devices: 'cuda:0' })).rejects.toMatchObject({ code: 'ERR_SANA_BACKEND_UNAVAILABLE', message: `device cuda:0 is unavailable: ${cudaProbe.reason}` });
    else await expect(createSanaPool({ model: dir, kind: 'vae', devices: `cuda:${gpus}` })).rejects.toMatchObject({ code: 'ERR_SANA_INVALID_OPTION', message: expect.stringContaining(`(this machine has ${gpus})`) });
    await expect(createSanaPool({ model: dir, kind: 'vae', devices: 'cpu,wasm:1' })).rejects.toMatchObject({ code: 'ERR_SANA_INVALID_OPTION' });
    await expect(createSanaPool({ model: dir, kind: 'vae', devices: 'gpu' })).rejects.toMatchObject({ code: 'ERR_SANA_INVALID_OPTION' });
    await expect(createSanaPool({ model: join(root, 'missing'), kind: 'vae', devices: 'cpu' })).rejects.toMatchObject({ code: 'ERR_SANA_MODEL_FORMAT' });
  });
});

describe('batch rendering through the API', () => {
  const prompts = ['a red circle on a blue background', 'a green square on a white background', 'a yellow triangle on a black background',
    'a white circle on a red background', 'a blue square on a yellow background', 'a black triangle on a green background'];
  let pool: SanaPool;
  beforeAll(async () => {
    pool = await createSanaPool({ devices: 'cpu,cpu', threadsPerWorker: 1 });
  });
  afterAll(async () => {
    await pool.dispose();
    expect(pool.threadCount).toBe(0);
  });

  it('renders every job once, named by index, seed and prompt, spread over both workers', async () => {
    const outDir = join(root, 'render');
    const summary = await pool.render(prompts.map((prompt) => ({ prompt })), { outDir, seed: 10 });
    const names = prompts.map((p, i) => `${String(i + 1).padStart(4, '0')}-seed${10 + i}-${slug(p)}.png`);
    expect(readdirSync(outDir).sort()).toEqual(names);
    expect(summary.rendered.length).toBe(6);
    expect(summary.perDevice.every((d) => d.images > 0 && d.imagesPerMinute > 0)).toBe(true);
    const again = await pool.render(prompts.map((prompt) => ({ prompt })), { outDir, seed: 10 });
    expect([again.rendered.length, again.skipped.length]).toEqual([0, 6]);
  });

  it('abort mid-batch rejects promptly and leaves only whole files', async () => {
    const outDir = join(root, 'aborted');
    const abort = new AbortController();
    const t0 = performance.now();
    let abortedAt = 0;
    const run = pool.render(prompts.map((prompt) => ({ prompt })), {
      outDir, steps: 200, signal: abort.signal,
      onProgress: (e) => {
        if (e.status === 'worker' && e.event.status === 'step' && e.event.step === 5 && !abortedAt) {
          abortedAt = performance.now();
          abort.abort();
        }
      },
    });
    await expect(run).rejects.toMatchObject({ code: 'ERR_SANA_ABORTED' });
    expect(performance.now() - abortedAt).toBeLessThan(2000);
    expect(abortedAt - t0).toBeGreaterThan(0);
    for (const f of (() => { try { return readdirSync(outDir); } catch { return []; } })()) expect(f).toMatch(/^\d{4}-seed\d+-[a-z0-9-]+\.png$/);
    expect(pool.threadCount).toBeLessThanOrEqual(2);
  });

  it('a worker killed while loading: the load is reported, retried on its replacement, and the pool renders afterwards', async () => {
    const events: PoolEvent[] = [];
    await pool.load({
      force: true,
      onProgress: (e) => {
        events.push(e);
        if (e.status === 'load-start' && e.device === 'cpu#0' && e.attempt === 1) void pool.terminateWorker(0);
      },
    });
    expect(events).toContainEqual(expect.objectContaining({ status: 'load-retry', device: 'cpu#0', attempt: 1 }));
    expect(events.filter((e) => e.status === 'load-done').map((e) => (e as { device: string }).device).sort()).toEqual(['cpu#0', 'cpu#1']);
    const summary = await pool.render(prompts.slice(0, 2).map((prompt) => ({ prompt })), { outDir: join(root, 'reloaded'), steps: 2 });
    expect(summary.rendered.length).toBe(2);
  });

  it('a worker that dies on every load try: ERR_SANA_WORKER_FAILED naming the device after maxAttempts; the pool still renders', async () => {
    let tries = 0;
    const load = pool.load({
      force: true,
      onProgress: (e) => {
        if (e.status === 'load-start' && e.device === 'cpu#1') {
          tries++;
          void pool.terminateWorker(1);
        }
      },
    });
    await expect(load).rejects.toMatchObject({ code: 'ERR_SANA_WORKER_FAILED', message: expect.stringMatching(/^cpu#1: loading .* failed 3 time\(s\)/) });
    expect(tries).toBe(pool.maxAttempts);
    // the replacement worker loads the model with its first task
    const summary = await pool.render(prompts.slice(2, 4).map((prompt) => ({ prompt })), { outDir: join(root, 'after-failed-load'), steps: 2 });
    expect(summary.rendered.length).toBe(2);
  });

  it('reads prompt files: text with comments, JSON Lines with per-image settings, and names the bad line', () => {
    const txt = join(root, 'p.txt');
    writeFileSync(txt, '# my prompts\na red circle on a blue background\n\n  a green square  \n');
    expect(readRenderJobs(txt)).toEqual([{ prompt: 'a red circle on a blue background' }, { prompt: 'a green square' }]);
    const jsonl = join(root, 'p.jsonl');
    writeFileSync(jsonl, '{"prompt": "a red circle", "seed": 7, "steps": 4}\n{"prompt": "x", "sead": 1}\n');
    expect(() => readRenderJobs(jsonl)).toThrow(/p\.jsonl:2: unknown key "sead"/);
    writeFileSync(jsonl, '{"prompt": "a red circle", "seed": 7, "steps": 4}\n');
    expect(readRenderJobs(jsonl)).toEqual([{ prompt: 'a red circle', seed: 7, steps: 4 }]);
    writeFileSync(txt, '# nothing\n');
    expect(() => readRenderJobs(txt)).toThrow(/holds no prompts/);
  });
});
