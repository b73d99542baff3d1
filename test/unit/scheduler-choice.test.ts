// The scheduler option: without it the folder's scheduler runs; naming the other one runs that sampler on the
// folder's shift, never silently the folder's. The demo model (DPM-Solver) against a copy whose
// scheduler_config.json is a FlowMatchEuler with the same shift.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { demoModelDir } from '../../ts/paths.js';
import { SanaPipelineCore, type GenerateOptions } from '../../ts/pipeline/pipeline-core.js';

const root = mkdtempSync(join(tmpdir(), 'sana-sched-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function eulerCopy(): string {
  const dir = join(root, 'euler');
  cpSync(demoModelDir(), dir, { recursive: true });
  const shift = JSON.parse(readFileSync(join(dir, 'scheduler', 'scheduler_config.json'), 'utf8')).flow_shift;
  writeFileSync(join(dir, 'scheduler', 'scheduler_config.json'), JSON.stringify({ _class_name: 'FlowMatchEulerDiscreteScheduler', num_train_timesteps: 1000, shift }));
  const index = JSON.parse(readFileSync(join(dir, 'model_index.json'), 'utf8'));
  writeFileSync(join(dir, 'model_index.json'), JSON.stringify({ ...index, scheduler: ['diffusers', 'FlowMatchEulerDiscreteScheduler'] }));
  return dir;
}

describe('scheduler option', () => {
  it("defaults to the folder's scheduler; a named one runs on the folder's shift", async () => {
    const dpm = await SanaPipelineCore.fromPretrained(demoModelDir());
    const euler = await SanaPipelineCore.fromPretrained(eulerCopy());
    try {
      const run = async (p: SanaPipelineCore, scheduler?: GenerateOptions['scheduler']) =>
        (await p.generate('a white square on a green background', { steps: 5, seed: 4, outputType: 'latent', scheduler })).tensor!.data;
      const dpmDefault = await run(dpm);
      const eulerDefault = await run(euler);
      expect(eulerDefault).not.toEqual(dpmDefault); // the two samplers really differ here
      expect(await run(euler, 'flow-dpm-solver')).toEqual(dpmDefault);
      expect(await run(dpm, 'flow-euler')).toEqual(eulerDefault);
      expect(await run(dpm, 'flow-dpm-solver')).toEqual(dpmDefault);
    } finally {
      dpm.dispose();
      euler.dispose();
    }
  });
});
