// The engine's promises about where tensor data lives and how memory is reused, on every backend, with the
// demo model run in this thread: a denoising step moves no tensor data between the host and the backend
// except one value (the non-finite flag of the model output), a decode only its latents in and its image
// out; after the first step a step obtains no new memory block, and a second generation of the same size
// none at all. Every host access to tensor data goes through Tensor (write, read, .data), which
// observeTransfers sees.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { backendNames, probeBackends } from '../../ts/backends/registry.js';
import { demoModelDir } from '../../ts/paths.js';
import { SanaPipelineCore, type ProgressEvent } from '../../ts/pipeline/pipeline-core.js';
import { observeTransfers, type Tensor, type TransferKind } from '../../ts/tensor/tensor.js';

const PROMPT = 'a red triangle on a blue background';
const STEPS = 5;

interface Phase {
  name: string;
  transfers: { kind: TransferKind; size: number }[];
  allocations: number;
}

/** Runs one generation and splits the transfers (and the blocks obtained) by phase, cut at its progress
 * events: 'encode' (the prompt, the loop's setup and step 1), 'step 2'..'step n', 'latents' (after the
 * loop), 'decode' (to the end). */
async function phases(pipe: SanaPipelineCore, opts: { width: number; height: number; guidanceScale: number }): Promise<Phase[]> {
  const list: Phase[] = [];
  const allocations = () => pipe.memory().reduce((a, m) => a + m.allocations, 0);
  let current: Phase = { name: 'encode', transfers: [], allocations: allocations() };
  const next = (name: string) => {
    current.allocations = allocations() - current.allocations;
    list.push(current);
    current = { name, transfers: [], allocations: allocations() };
  };
  const onProgress = (e: ProgressEvent) => {
    if (e.status === 'step') next(e.step < STEPS ? `step ${e.step + 1}` : 'latents');
    if (e.status === 'decode') next('decode');
  };
  const prev = observeTransfers((kind: TransferKind, t: Tensor) => current.transfers.push({ kind, size: t.size }));
  try {
    await pipe.generate(PROMPT, { ...opts, steps: STEPS, seed: 7, onProgress, decode: 'full' });
  } finally {
    observeTransfers(prev);
  }
  next('end');
  return list;
}

const available = new Set(probeBackends().filter((p) => p.available).map((p) => p.name));

describe.each(backendNames().filter((n) => n !== 'cuda').map((name) => ({ name })))('$name backend', ({ name }) => {
  let pipe: SanaPipelineCore;
  beforeAll(async () => {
    if (available.has(name)) pipe = await SanaPipelineCore.fromPretrained(demoModelDir(), { backend: name });
  });
  afterAll(() => pipe?.dispose());

  it.skipIf(!available.has(name))('a step reads back one value and writes nothing; a decode moves its latents in and its image out', async () => {
    const run = await phases(pipe, { width: 64, height: 64, guidanceScale: 4.5 });
    const steps = run.filter((p) => p.name.startsWith('step '));
    expect(steps.map((p) => p.name)).toEqual(Array.from({ length: STEPS - 1 }, (_, i) => `step ${i + 2}`));
    for (const s of steps) expect(s.transfers, s.name).toEqual([{ kind: 'read', size: 1 }]);
    const side = 64 / pipe.components.vae.spatialCompression;
    const latentSize = pipe.components.transformer.config.inChannels * side * side;
    expect(run.find((p) => p.name === 'latents')!.transfers).toEqual([{ kind: 'read', size: latentSize }]);
    expect(run.find((p) => p.name === 'decode')!.transfers).toEqual([{ kind: 'write', size: latentSize }, { kind: 'read', size: 3 * 64 * 64 }]);
  });

  it.skipIf(!available.has(name))('after the first step no step obtains a memory block; a second generation of the same size obtains none', async () => {
    // no guidance: a model batch of 1 instead of 2, sizes this pipeline has not run yet
    const first = await phases(pipe, { width: 64, height: 64, guidanceScale: 1 });
    expect(first[0].allocations).toBeGreaterThan(0); // encode, setup and step 1 obtained blocks
    for (const s of first.filter((p) => p.name.startsWith('step '))) expect(s.allocations, s.name).toBe(0);
    const second = await phases(pipe, { width: 64, height: 64, guidanceScale: 1 });
    expect(second.map((p) => [p.name, p.allocations])).toEqual(second.map((p) => [p.name, 0]));
  });
});
