// The activation block cache of every backend (ts/backends/block-cache.ts): freed activations are reused by
// size class, weights are released at once, the cap holds, and a pipeline in steady state — every denoising
// step after the first, a second generate of the same size — obtains no new block. Counted through
// Backend.memory(), on cpu and wasm.
import { afterAll, describe, expect, it } from 'vitest';

import type { Backend } from '../../ts/backends/backend.js';
import { BlockCache, DEFAULT_CACHE_BYTES, PEAK_SLACK_BYTES, sizeClass } from '../../ts/backends/block-cache.js';
import { createBackend, probeBackends } from '../../ts/backends/registry.js';
import { demoModelDir } from '../../ts/paths.js';
import { SanaPipelineCore } from '../../ts/pipeline/pipeline-core.js';

const backends: Backend[] = [];
for (const p of probeBackends()) if (p.available) backends.push(await createBackend(p.name));
afterAll(() => backends.forEach((b) => b.dispose()));

describe('the peak rule (bookkeeping only: the storages are records, no memory is mapped)', () => {
  const MiB = 1024 * 1024;
  function cache() {
    const released: number[] = [];
    const c = new BlockCache((bytes) => ({ location: 'host', handle: 0, bytes, host: undefined, free: () => released.push(bytes) }));
    return { c, released, take: (mib: number) => c.take('f32', (mib * MiB) / 4, 'activation') };
  }
  it('a fresh block that would lift live + cached past the peak + slack releases cached blocks first, largest first', () => {
    const { c, released, take } = cache();
    // sizes that are their own size class
    const a = take(208);
    const b = take(96); // peak 304 MiB live
    a.free();
    b.free(); // both cached: 304 MiB, under the 1 GiB cap
    expect(c.counters.cachedBytes).toBe(304 * MiB);
    // 384 MiB fresh (no block of its class): live 384 + cached may reach 304 + slack 256 = 560, so 176 may stay
    take(384);
    expect(released).toEqual([208 * MiB]);
    expect(c.counters.cachedBytes).toBe(96 * MiB);
    expect(c.counters.activationBytes + c.counters.cachedBytes).toBeLessThanOrEqual(304 * MiB + PEAK_SLACK_BYTES);
  });
  it('blocks within the slack stay cached, and a request of their class reuses them', () => {
    const { c, released, take } = cache();
    take(96).free();
    const d = take(208); // live 208 + cached 96 ≤ peak 96 + slack
    expect(released).toEqual([]);
    const again = take(96);
    expect(c.counters.allocations).toBe(2);
    expect(c.counters.cachedBytes).toBe(0);
    d.free();
    again.free();
  });
});

describe('size classes', () => {
  it('cover every request with at most 12.5 % slack above 64 KiB (256-byte steps below), and never shrink', () => {
    let prev = 0;
    for (let bytes = 1; bytes < 1 << 26; bytes = Math.ceil(bytes * 1.07) + 3) {
      const c = sizeClass(bytes);
      expect(c).toBeGreaterThanOrEqual(bytes);
      expect(c).toBeGreaterThanOrEqual(prev);
      expect(c % 4).toBe(0);
      if (bytes > 65536) expect(c / bytes).toBeLessThanOrEqual(1.125);
      else expect(c - bytes).toBeLessThan(256);
      prev = c;
    }
  });
});

describe.each(backends.map((b) => [b.name, b] as const))('block cache on %s', (_, be) => {
  it('a freed activation serves the next request of its class; its view has exactly the tensor size', () => {
    const a = be.empty([1000, 37]);
    const before = be.memory();
    a.dispose();
    expect(be.memory().cachedBytes).toBe(before.cachedBytes + sizeClass(1000 * 37 * 4));
    const b = be.tensor([1001, 37], 'f32'); // same class, zero-filled although the block is reused
    expect(be.memory().allocations).toBe(before.allocations);
    expect(b.data.length).toBe(1001 * 37);
    expect(b.data.every((v) => v === 0)).toBe(true);
    b.dispose();
    const c = be.empty([1000, 37], 'bf16'); // another element width: a block of its own
    expect(be.memory().allocations).toBe(before.allocations + 1);
    c.dispose();
  });

  it('weights are released when disposed, not cached', () => {
    const m0 = be.memory();
    const w = be.tensor([333, 17], 'f32', undefined, 'weight');
    expect(be.memory().weightBytes).toBe(m0.weightBytes + 333 * 17 * 4);
    w.dispose();
    const m1 = be.memory();
    expect([m1.weightBytes, m1.cachedBytes]).toEqual([m0.weightBytes, m0.cachedBytes]);
  });

  it('the cap: past it a freed block is released; 0 turns the cache off; trimCache empties it', () => {
    be.trimCache();
    be.setCacheLimit(64 * 1024);
    const small = be.empty([1024]); // 4 KiB: fits
    const big = be.empty([64 * 1024]); // 256 KiB: over the cap
    small.dispose();
    big.dispose();
    expect(be.memory().cachedBytes).toBe(4096);
    be.setCacheLimit(0);
    expect(be.memory().cachedBytes).toBe(0);
    const t = be.empty([1024]);
    t.dispose();
    expect(be.memory().cachedBytes).toBe(0);
    be.setCacheLimit(DEFAULT_CACHE_BYTES);
    be.empty([1024]).dispose();
    expect(be.memory().cachedBytes).toBe(4096);
    be.trimCache();
    expect(be.memory().cachedBytes).toBe(0);
    expect(() => be.setCacheLimit(-1)).toThrow(/setCacheLimit: Expected a byte count >= 0/);
  });

  it('steady state of the demo pipeline (default cache): no new block after the first denoising step, none in a second generate', async () => {
    const own = await createBackend(be.name);
    const core = await SanaPipelineCore.fromPretrained(demoModelDir(), { backend: own });
    try {
      const perStep: number[] = [];
      const opts = { steps: 6, seed: 3, onProgress: (e: { status: string }) => e.status === 'step' && perStep.push(own.memory().allocations) };
      await core.generate('a red square on a white background', opts);
      expect(perStep).toHaveLength(6);
      expect(new Set(perStep.slice(1)).size).toBe(1); // steps 2…6 add nothing
      const afterFirst = own.memory().allocations;
      await core.generate('a blue circle on a yellow background', opts);
      expect(own.memory().allocations).toBe(afterFirst);
      expect(own.memory().activationBytes).toBe(0);
    } finally {
      core.dispose();
    }
    const m = own.memory();
    expect([m.weightBytes, m.activationBytes]).toEqual([0, 0]); // the pipeline's weights went with it
    own.dispose();
    expect(own.memory().cachedBytes).toBe(0); // and the cache with the backend
  });
});
