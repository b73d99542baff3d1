// What a long-running service needs from one SanaPipeline (the demo model, on the worker path): memory that
// stays flat over many generations and over many aborts, and the same image for the same seed afterwards.
// Bounds: the backends' live tensors must come back to exactly the loaded weights after every call (a
// leaked activation shows as a difference), and after the warm-up no call obtains a new block from the
// system (activations come from the backends' block caches); process RSS may move with the GC, so it is
// allowed RSS_SLACK of growth from the warmed-up figure.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { SanaError } from '../../ts/errors.js';
import { SanaPipeline, type PipelineMemory } from '../../ts/pipeline/sana-pipeline.js';

const RSS_SLACK = 64 * 1024 * 1024;
const PROMPT = 'a green circle on a black background';
const rss = () => process.memoryUsage().rss;
/** What must not change between calls: live tensors and bytes, and the blocks obtained so far. */
const steady = (m: PipelineMemory) => m.map(({ backend, tensors, weightBytes, activationBytes, allocations }) => ({ backend, tensors, weightBytes, activationBytes, allocations }));

describe('soak: one pipeline, many generations and aborts', () => {
  let pipe: SanaPipeline;
  let loaded: PipelineMemory;
  let warm: PipelineMemory;
  let reference: Uint8Array;
  let warmRss: number;
  beforeAll(async () => {
    pipe = await SanaPipeline.fromPretrained();
    loaded = await pipe.memory();
    reference = (await pipe.generate(PROMPT, { steps: 6, seed: 11 })).images[0].data;
    // every size this file generates at once (a 20-step run keeps its 20 steps' timestep features in one block)
    await pipe.generate(PROMPT, { steps: 20, seed: 1 });
    for (let i = 0; i < 4; i++) await pipe.generate(PROMPT, { steps: 4, seed: i });
    warm = await pipe.memory();
    warmRss = rss();
  });
  afterAll(async () => {
    await pipe.dispose();
  });

  it('holds weights only after loading, and again after each generation (activations back in the cache)', () => {
    expect(loaded.length).toBeGreaterThan(0);
    for (const b of loaded) {
      expect(b.weightBytes).toBeGreaterThan(1_000_000); // the demo model's ≈ 4.5 MB of weights
      expect(b.activationBytes).toBe(0);
    }
    expect(warm.map((b) => [b.weightBytes, b.activationBytes])).toEqual(loaded.map((b) => [b.weightBytes, 0]));
    expect(warm.every((b) => b.cachedBytes > 0)).toBe(true);
  });

  it('50 sequential generations: live memory back to the weights after each, no new blocks, RSS flat', async () => {
    let peak = 0;
    for (let i = 0; i < 50; i++) {
      const { images } = await pipe.generate(PROMPT, { steps: 4, seed: 100 + i });
      expect(images[0].data.length).toBe(64 * 64 * 3);
      expect(steady(await pipe.memory())).toEqual(steady(warm));
      peak = Math.max(peak, rss());
    }
    expect(peak - warmRss).toBeLessThan(RSS_SLACK);
  });

  it('100 aborts in the middle of the steps: each rejects with ERR_SANA_ABORTED, memory returns, the same seed gives the same image', async () => {
    const steps = 20;
    let peak = 0;
    for (let i = 0; i < 100; i++) {
      const abort = new AbortController();
      const stopAt = 1 + (i % 10); // after step 1..10 of 20
      let lastStep = 0;
      const run = pipe.generate(PROMPT, {
        steps, seed: 11, signal: abort.signal,
        onProgress: (e) => {
          if (e.status !== 'step') return;
          lastStep = e.step;
          if (e.step === stopAt) abort.abort();
        },
      });
      const err = await run.then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(SanaError);
      expect((err as SanaError).code).toBe('ERR_SANA_ABORTED');
      expect(lastStep).toBeLessThan(steps); // stopped in the middle, not after the last step
      peak = Math.max(peak, rss());
    }
    expect(steady(await pipe.memory())).toEqual(steady(warm));
    expect(peak - warmRss).toBeLessThan(RSS_SLACK);
    const again = (await pipe.generate(PROMPT, { steps: 6, seed: 11 })).images[0].data;
    expect(Buffer.from(again).equals(Buffer.from(reference))).toBe(true);
  });
});
