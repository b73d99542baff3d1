// SanaPipeline (worker-backed) on the tiny pipeline of test/fixtures: loading with per-component backends and
// byte progress, the event loop kept free during generation, images of
// the requested size, seed determinism, the progress contract, abort, option validation.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { SanaError } from '../../ts/errors.js';
import { SanaPipeline, type ProgressEvent } from '../../ts/pipeline/sana-pipeline.js';
import { golden, needs, peer } from '../fixtures/shared.js';
import { tinyPipeline } from '../fixtures/tiny-pipeline.js';

const dir = mkdtempSync(join(tmpdir(), 'sana-gen-'));
let pipe: SanaPipeline;

const loadEvents: ProgressEvent[] = [];
beforeAll(async () => {
  if (!golden.present) return;
  pipe = await SanaPipeline.fromPretrained(tinyPipeline(dir), { backend: { textEncoder: 'wasm', transformer: 'auto', vae: 'auto' }, onProgress: (e) => loadEvents.push(e) });
});
afterAll(async () => {
  await pipe?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const base = { useResolutionBinning: false, width: 64, height: 48, steps: 3, maxSequenceLength: 8, complexHumanInstruction: null } as const;

describe.skipIf(!golden.present || !peer.present)(needs(golden.present ? peer : golden, 'SanaPipeline memory'), () => {
  it('dispose frees the models: resident memory returns near the baseline', async () => {
    // a pipeline whose transformer is the 600M-width 2-layer peer (220 MB of weights; loads, never runs)
    const folder = tinyPipeline(join(dir, 'big'));
    rmSync(join(folder, 'transformer'), { recursive: true });
    execFileSync(process.execPath, [join(peer.dir, 'make-weights.mjs'), join(peer.dir, 'sana_transformer_medium_2l'), join(folder, 'transformer')], { stdio: 'ignore' });
    const before = process.memoryUsage().rss;
    const big = await SanaPipeline.fromPretrained(folder, { backend: 'cpu' });
    const loaded = process.memoryUsage().rss;
    await big.dispose();
    const after = process.memoryUsage().rss;
    expect(loaded - before).toBeGreaterThan(180 * 2 ** 20);
    expect(after - before).toBeLessThan(60 * 2 ** 20);
  });

  it("dtype 'bf16' holds fp32 weights as bf16 (and the DC-AE as f16), with warnings saying so", async () => {
    const half = await SanaPipeline.fromPretrained(dir, { backend: 'wasm', dtype: 'bf16' });
    try {
      expect(half.warnings.some((w) => w.startsWith('vae: reduced-precision mode: AutoencoderDC weights are held as f16'))).toBe(true);
      expect((await half.generate('a red cube', { ...base, seed: 3 })).images).toHaveLength(1);
    } finally {
      await half.dispose();
    }
    await expect(SanaPipeline.fromPretrained(dir, { dtype: 'fp8' as never })).rejects.toMatchObject({ code: 'ERR_SANA_INVALID_OPTION' });
  });

  it('await using disposes the pipeline', async () => {
    let disposed: SanaPipeline;
    {
      await using p = await SanaPipeline.fromPretrained(join(dir), { backend: 'wasm' });
      disposed = p;
    }
    await expect(disposed.generate('a', base)).rejects.toMatchObject({ code: 'ERR_SANA_DISPOSED' });
  });
});

describe.skipIf(!golden.present)(needs(golden, 'SanaPipeline loading'), () => {
  it('reports load progress in bytes, rising, never above the total, ending at it', () => {
    const components = loadEvents.map((e) => (e as { component: string }).component);
    expect([...new Set(components)]).toEqual(['text_encoder', 'transformer', 'vae']);
    expect(loadEvents.length).toBeGreaterThan(3); // within components too, not only at their ends
    let last = 0;
    for (const e of loadEvents) {
      if (e.status !== 'load') throw new Error(`unexpected ${e.status}`);
      expect(e.loaded).toBeGreaterThanOrEqual(last);
      expect(e.loaded).toBeLessThanOrEqual(e.total);
      last = e.loaded;
    }
    expect(last).toBe((loadEvents[0] as { total: number }).total);
  });

  it('places components on the requested backends and says what runs where', () => {
    expect(pipe.backendInfo.textEncoder.name).toBe('wasm');
    expect(['cpu', 'wasm']).toContain(pipe.backendInfo.transformer.name);
    expect(pipe.backendInfo.transformer.selection?.requested).toBe('auto');
  });

  it('an explicitly requested backend that is unavailable fails loading with the probe reason', async () => {
    const err = await SanaPipeline.fromPretrained(join(dir), { backend: { vae: 'cuda' as never } }).catch((e) => e);
    expect(err).toBeInstanceOf(SanaError);
  });
});

describe.skipIf(!golden.present)(needs(golden, 'SanaPipeline.generate'), () => {
  it('runs off the main thread: the event loop keeps ticking during generation', async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const t0 = performance.now();
    await pipe.generate('a red cube', { ...base, steps: 12, seed: 5 });
    clearInterval(timer);
    const ms = performance.now() - t0;
    expect(ticks).toBeGreaterThanOrEqual(Math.floor(ms / 5 / 4)); // at least a quarter of the ideal tick count
  });

  it('returns images of the requested size that encode to valid PNGs', async () => {
    const r = await pipe.generate(['a red cube', 'sunset'], { ...base, seed: 42 });
    expect(r.images).toHaveLength(2);
    expect(r.generatedSize).toEqual({ width: 64, height: 48 });
    const png = PNG.sync.read(await r.images[0].toPNG());
    expect([png.width, png.height]).toEqual([64, 48]);
    expect(r.images[0].data.length).toBe(64 * 48 * 3);
    expect(new Set(r.images[0].data).size).toBeGreaterThan(16); // not a constant image
    expect(r.timings.stepMs).toHaveLength(3);
  });

  it('a list of seeds gives each image its own generator (diffusers with a list of torch.Generators)', async () => {
    const both = await pipe.generate(['a red cube', 'sunset'], { ...base, seed: [11, 12] });
    const first = await pipe.generate('a red cube', { ...base, seed: 11 });
    const second = await pipe.generate('sunset', { ...base, seed: 12 });
    expect(Buffer.from(both.images[0].data).equals(Buffer.from(first.images[0].data))).toBe(true);
    expect(Buffer.from(both.images[1].data).equals(Buffer.from(second.images[0].data))).toBe(true);
    const err = await pipe.generate(['a', 'sunset'], { ...base, seed: [1] }).catch((e) => e);
    expect(err.message).toMatch(/^Expected 2 seeds \(one per image\) for seed but received \[1\]$/);
  });

  it('the same seed gives the same image; another seed another one', async () => {
    const a = await pipe.generate('a red cube', { ...base, seed: 7 });
    const b = await pipe.generate('a red cube', { ...base, seed: 7 });
    const c = await pipe.generate('a red cube', { ...base, seed: 8 });
    expect(Buffer.from(a.images[0].data).equals(Buffer.from(b.images[0].data))).toBe(true);
    expect(Buffer.from(a.images[0].data).equals(Buffer.from(c.images[0].data))).toBe(false);
  });

  it('progress: encode, steps 1..n rising by one, decode, done', async () => {
    const events: ProgressEvent[] = [];
    await pipe.generate('a red cube', { ...base, steps: 4, seed: 1, onProgress: (e) => events.push(e) });
    expect(events.map((e) => e.status)).toEqual(['encode', 'step', 'step', 'step', 'step', 'decode', 'done']);
    const binned: ProgressEvent[] = [];
    const r = await pipe.generate('a', { ...base, steps: 1, seed: 1, useResolutionBinning: false, width: 40, height: 48, onProgress: (e) => binned.push(e) });
    expect(r.images[0].width).toBe(40);
    expect(binned.some((e) => e.status === 'warning')).toBe(false); // no binning, no change, no warning
    expect(events.filter((e) => e.status === 'step').map((e) => (e as { step: number }).step)).toEqual([1, 2, 3, 4]);
  });

  it('abort mid-run rejects with ERR_SANA_ABORTED and the pipeline still works', async () => {
    const ac = new AbortController();
    const run = pipe.generate('a red cube', { ...base, steps: 20, seed: 1, signal: ac.signal, onProgress: (e) => e.status === 'step' && e.step === 2 && ac.abort() });
    await expect(run).rejects.toMatchObject({ code: 'ERR_SANA_ABORTED' });
    const again = await pipe.generate('a red cube', { ...base, seed: 1 });
    expect(again.images).toHaveLength(1);
  });

  it('bad options are rejected before any work with one message template', async () => {
    const cases: [object, RegExp][] = [
      [{ steps: 0 }, /^Expected an integer from 1 to 1000 for steps but received 0$/],
      [{ width: 70 }, /^Expected multiples of 8 .* for width, height but received "70x48"$/],
      [{ guidanceScale: -1 }, /^Expected a finite number >= 0 for guidanceScale but received -1$/],
      [{ seed: -3 }, /^Expected an integer from 0 to 2\^64 − 1 for seed but received -3$/],
      [{ scheduler: 'ddim' }, /^Expected flow-dpm-solver or flow-euler for scheduler but received "ddim"$/],
    ];
    for (const [opt, msg] of cases) {
      const err = await pipe.generate('a', { ...base, ...opt }).catch((e) => e);
      expect(err).toBeInstanceOf(SanaError);
      expect(err.code).toBe('ERR_SANA_INVALID_OPTION');
      expect(err.message).toMatch(msg);
    }
  });

  it("outputType 'latent' returns the final latents, 'float' the image in [0, 1]", async () => {
    const lat = await pipe.generate('a red cube', { ...base, seed: 2, outputType: 'latent' });
    expect(lat.images).toHaveLength(0);
    expect(lat.tensor!.shape).toEqual([1, 16, 48 / 8, 64 / 8]);
    const flt = await pipe.generate('a red cube', { ...base, seed: 2, outputType: 'float' });
    expect(flt.tensor!.shape).toEqual([1, 3, 48, 64]);
    expect(flt.tensor!.data.every((v) => v >= 0 && v <= 1)).toBe(true);
  });

  it('resolution binning needs a transformer sample_size with a bin table', async () => {
    const err = await pipe.generate('a', { ...base, useResolutionBinning: true }).catch((e) => e);
    expect(err.message).toMatch(/Expected a transformer sample_size of 16, 32, 64 or 128 for resolution binning but received 8/);
  });
});

describe.skipIf(!golden.present)(needs(golden, 'SanaPipeline decode modes'), () => {
  const size = { ...base, width: 128, height: 96, seed: 4, outputType: 'float' } as const;
  const decodeEvent = (events: ProgressEvent[]) => events.find((e) => e.status === 'decode') as Extract<ProgressEvent, { status: 'decode' }>;

  it("'sharded' equals 'full'; 'tiled' with tiles smaller than the image blends seams (close, not equal)", async () => {
    const run = async (opts: object) => {
      const events: ProgressEvent[] = [];
      const r = await pipe.generate('a red cube', { ...size, ...opts, onProgress: (e) => events.push(e) });
      return { data: r.tensor!.data, event: decodeEvent(events), events };
    };
    const full = await run({ decode: 'full' });
    const sharded = await run({ decode: 'sharded', decodeMemoryBudget: 64 * 1024 });
    const tiled = await run({ decode: 'tiled', tiling: { tileSampleMinHeight: 64, tileSampleMinWidth: 64, tileSampleStrideHeight: 48, tileSampleStrideWidth: 48 } });
    expect([full.event.mode, sharded.event.mode, tiled.event.mode]).toEqual(['full', 'sharded', 'tiled']);
    const passes = sharded.events.filter((e) => e.status === 'decode-pass').map((e) => (e as { index: number }).index);
    expect(passes.length).toBeGreaterThan(2);
    expect(passes).toEqual(passes.map((_, i) => i)); // one event per pass, in order
    const diff = (a: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - full.data[i])), 0);
    expect(diff(sharded.data)).toBeLessThan(1e-5);
    expect(diff(tiled.data)).toBeGreaterThan(1e-4);
    expect(tiled.event.reason).toMatch(/tiles 64\/64 px, stride 48\/48 px/);
  });

  it("'auto' decodes whole within the memory budget and sharded beyond it, and says so", async () => {
    const events: ProgressEvent[] = [];
    await pipe.generate('a red cube', { ...size, decodeMemoryBudget: 1024, onProgress: (e) => events.push(e) });
    expect(decodeEvent(events)).toMatchObject({ mode: 'sharded', reason: expect.stringMatching(/^auto: a full decode needs about \d+ MiB, over the 1 MiB budget; sharded/) });
    events.length = 0;
    await pipe.generate('a red cube', { ...size, onProgress: (e) => events.push(e) });
    expect(decodeEvent(events)).toMatchObject({ mode: 'full', reason: expect.stringMatching(/^auto: .* within the/) });
  });

  it('bad decode options are rejected before any step', async () => {
    for (const [opt, msg] of [
      [{ decode: 'tiles' }, /Expected one of auto, full, tiled, sharded for decode but received "tiles"/],
      [{ decode: 'tiled', tiling: { tileSampleMinHeight: 60 } }, /Expected a positive multiple of 8 pixels for tiling.tileSampleMinHeight but received 60/],
      [{ decode: 'tiled', tiling: { tileSampleStrideWidth: 1024 } }, /Expected tiling strides no larger than the tiles/],
      [{ decodeMemoryBudget: -1 }, /Expected a positive number of bytes for decodeMemoryBudget but received -1/],
      [{ decode: 'sharded', tiling: { tileSampleMinHeight: 64 } }, /Expected decode 'tiled' with tiling but received "sharded"/],
    ] as const) {
      const events: ProgressEvent[] = [];
      const err = await pipe.generate('a', { ...base, ...(opt as object), onProgress: (e) => events.push(e) }).catch((e) => e);
      expect(err.code).toBe('ERR_SANA_INVALID_OPTION');
      expect(err.message).toMatch(msg);
      expect(events.some((e) => e.status === 'step')).toBe(false);
    }
  });
});
