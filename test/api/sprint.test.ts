// Sana-Sprint through the same entry points as SanaPipeline (its numerics are the golden cases under
// next/): the folder's pipeline class picks the loop, Sprint's defaults (2 steps), its schedule options,
// seed determinism, the options that do not apply to it, unknown scheduler keys, the CLI and the pool.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { SanaPipelineCore } from '../../ts/pipeline/pipeline-core.js';
import { createSanaPool } from '../../ts/pool/sana-pool.js';
import { golden, needs } from '../fixtures/shared.js';
import { tinyPipeline, tinySprintPipeline } from '../fixtures/tiny-pipeline.js';

const dir = mkdtempSync(join(tmpdir(), 'sana-sprint-'));
let sprintDir = '';
let pipe: SanaPipelineCore;
beforeAll(async () => {
  if (!golden.present) return;
  sprintDir = tinySprintPipeline(join(dir, 'sprint'));
  pipe = await SanaPipelineCore.fromPretrained(sprintDir, { backend: 'cpu' });
});
afterAll(() => {
  pipe?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const base = { width: 32, height: 32, maxSequenceLength: 8, complexHumanInstruction: null, useResolutionBinning: false } as const;

describe.skipIf(!golden.present)(needs(golden, 'SanaSprintPipeline'), () => {
  it('model_index.json selects the Sprint loop: 2 steps by default, the same seed gives the same image', async () => {
    expect(pipe.components.pipelineClass).toBe('SanaSprintPipeline');
    const steps: number[] = [];
    const a = await pipe.generate('a red cube', { ...base, seed: 5, onProgress: (e) => e.status === 'step' && steps.push(e.totalSteps) });
    expect(steps).toEqual([2, 2]);
    expect(a.timings.stepMs).toHaveLength(2);
    const b = await pipe.generate('a red cube', { ...base, seed: 5 });
    expect(Buffer.from(b.images[0].data)).toEqual(Buffer.from(a.images[0].data));
    const c = await pipe.generate('a red cube', { ...base, seed: 6 });
    expect(Buffer.from(c.images[0].data)).not.toEqual(Buffer.from(a.images[0].data));
  });

  it('the schedule options change the result; 1 and 4 steps run (4 evenly spaced: the 2-step middle time is not used)', async () => {
    const latent = (o: object) => pipe.generate('a red cube', { ...base, seed: 7, outputType: 'latent', ...o }).then((r) => r.tensor!.data);
    const two = await latent({});
    expect(await latent({ intermediateTimesteps: 1.3 })).toEqual(two);
    expect(await latent({ intermediateTimesteps: 1.0 })).not.toEqual(two);
    expect(await latent({ intermediateTimesteps: null })).not.toEqual(two);
    expect(await latent({ timesteps: [1.5708, 1.3, 0] })).toEqual(two);
    expect(await latent({ steps: 4, intermediateTimesteps: 1.0 })).toEqual(await latent({ steps: 4 }));
    expect((await latent({ steps: 1 })).every(Number.isFinite)).toBe(true);
  });

  it('options that do not apply to Sprint, and bad schedules, are named errors', async () => {
    const bad = (o: object) => expect(pipe.generate('a red cube', { ...base, seed: 1, ...o })).rejects.toMatchObject({ code: 'ERR_SANA_INVALID_OPTION' });
    await bad({ negativePrompt: 'blurry' });
    await bad({ scheduler: 'flow-euler' });
    await bad({ intermediateTimesteps: 1.7 });
    await bad({ maxTimesteps: 2 });
    await bad({ timesteps: [1.5, 0] });
    const sana = await SanaPipelineCore.fromPretrained(tinyPipeline(join(dir, 'sana')), { backend: 'cpu' });
    try {
      await expect(sana.generate('a red cube', { ...base, width: 64, height: 64, steps: 2, maxTimesteps: 1.2 })).rejects.toThrow(/no maxTimesteps \(a Sana-Sprint schedule option/);
    } finally {
      sana.dispose();
    }
  });

  it('unknown scheduler config keys (older Sprint configs carry DDIM-style ones) are ignored with a warning', async () => {
    const folder = tinySprintPipeline(join(dir, 'old-config'));
    const file = join(folder, 'scheduler', 'scheduler_config.json');
    writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')), clip_sample: false, set_alpha_to_one: false }));
    const p = await SanaPipelineCore.fromPretrained(folder, { backend: 'wasm' });
    try {
      expect(p.warnings).toEqual(expect.arrayContaining(['scheduler: unknown config key clip_sample ignored', 'scheduler: unknown config key set_alpha_to_one ignored']));
    } finally {
      p.dispose();
    }
  });

  it('sana info names the pipeline; sana generate writes a 2-step image', () => {
    const cli = join(import.meta.dirname, '..', '..', 'dist', 'ts', 'cli', 'sana.js');
    const info = spawnSync(process.execPath, [cli, 'info', '--model', sprintDir], { encoding: 'utf8' });
    expect(info.status).toBe(0);
    expect(info.stdout).toMatch(/^pipeline: SanaSprintPipeline \(Sana-Sprint/m);
    const out = join(dir, 'sprint.png');
    const gen = spawnSync(process.execPath, [cli, 'generate', 'a red cube', '--model', sprintDir, '--size', '32x32', '--no-binning', '--no-chi', '--seed', '3', '--output', out], { encoding: 'utf8' });
    expect(gen.status, gen.stderr).toBe(0);
    expect(gen.stderr).toMatch(/, 2 steps /);
    const png = PNG.sync.read(readFileSync(out));
    expect([png.width, png.height]).toEqual([32, 32]);
  });

  it('the pool renders Sprint prompts: the same image as in-process generate', async () => {
    const pool = await createSanaPool({ model: sprintDir, devices: ['cpu'], threadsPerWorker: 1 });
    try {
      const summary = await pool.render([{ prompt: 'a red cube', seed: 9 }], { outDir: join(dir, 'render'), width: 32, height: 32 });
      const local = await pipe.generate('a red cube', { width: 32, height: 32, seed: 9 });
      const png = PNG.sync.read(readFileSync(summary.rendered[0]));
      expect(Buffer.from(png.data.filter((_, i) => i % 4 !== 3))).toEqual(Buffer.from(local.images[0].data));
    } finally {
      await pool.dispose();
    }
  });
});
