// The transformer's text side made once per generation (prepareText: key bias, every block's cross-attention
// keys and values) gives exactly the forward that recomputes it from the raw text, on every backend; wrong
// or missing text conditioning is a named error. (The golden SanaPipeline.__call__ entries run through it.)
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import type { Backend } from '../../ts/backends/backend.js';
import { createBackend, probeBackends } from '../../ts/backends/registry.js';
import { SanaTransformer2DModel } from '../../ts/models/sana-transformer.js';
import { demoModelDir } from '../../ts/paths.js';
import { randomLatents } from '../fixtures/random-dcae.js';

const backends: Backend[] = [];
for (const p of probeBackends()) if (p.available) backends.push(await createBackend(p.name));
afterAll(() => backends.forEach((b) => b.dispose()));

describe.each(backends.map((b) => [b.name, b] as const))('text conditioning on %s', (_, be) => {
  const model = SanaTransformer2DModel.fromFolder(join(demoModelDir(), 'transformer'), be);
  afterAll(() => model.dispose());
  const c = model.config;
  const [B, T, h, w] = [2, 7, 3, 5]; // odd sizes
  const text = randomLatents(B * T * c.captionChannels, 11);
  const mask = [1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0];
  const base = { hiddenStates: randomLatents(B * c.inChannels * h * w, 12), shape: [B, c.inChannels, h, w] as const, timestep: Float32Array.of(999, 500) };

  it('two forwards with one prepared text equal the forwards from the raw text, bit for bit', () => {
    const raw = model.forward({ ...base, encoderHiddenStates: text, textLength: T, encoderAttentionMask: mask });
    const prepared = model.prepareText(text, T, mask, B);
    try {
      expect(model.forward({ ...base, text: prepared })).toEqual(raw);
      const other = { ...base, timestep: Float32Array.of(10, 20) };
      expect(model.forward({ ...other, text: prepared })).toEqual(model.forward({ ...other, encoderHiddenStates: text, textLength: T, encoderAttentionMask: mask }));
    } finally {
      prepared.dispose();
    }
  });

  it('a text of another batch, a wrong-sized text and no text at all are named errors', () => {
    const one = model.prepareText(text.subarray(0, T * c.captionChannels), T, mask.slice(0, T), 1);
    try {
      expect(() => model.forward({ ...base, text: one })).toThrow(/Expected text conditioning of 2 rows for the latents' batch but received 1/);
    } finally {
      one.dispose();
    }
    expect(() => model.prepareText(text, T + 1, mask, B)).toThrow(expect.objectContaining({ code: 'ERR_SANA_INVALID_ARGUMENT' }));
    expect(() => model.forward({ ...base })).toThrow(/Expected text conditioning \(encoderHiddenStates, textLength and encoderAttentionMask, or text\)/);
  });
});
