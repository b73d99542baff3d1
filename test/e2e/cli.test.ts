// The `sana` command as a user runs it: output, exit codes (0 ok, 1 runtime error, 2 usage error), and
// errors printed as messages, not stack traces.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { packageRoot } from '../../ts/paths.js';

const cli = join(packageRoot(), 'dist', 'ts', 'cli', 'sana.js');
const golden = process.env.SANA_GOLDEN_DIR ?? join(packageRoot(), '..', 'shared', 'golden');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

describe('sana CLI', () => {
  it('backends: lists cuda, cpu and wasm with availability or the reason', () => {
    const r = run('backends');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^cuda\s+unavailable: this build has no CUDA backend yet$/m);
    expect(r.stdout).toMatch(/^wasm\s+available \(variant wasm-simd128, 1 thread/m);
    expect(r.stdout).toMatch(/^cpu\s+(available \(variant \S+, \d+ threads?|unavailable: )/m);
  });

  it('info --model: components, classes and parameter counts of a pipeline folder', () => {
    const r = run('info', '--model', join(golden, 'pipeline_tiny_e2e'));
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('transformer: SanaTransformer2DModel, 54 tensors, 407,248 parameters (F32 407,248)');
    expect(r.stdout).toMatch(/^vae: AutoencoderDC, \d+ tensors/m);
    expect(r.stdout).toMatch(/^text_encoder: Gemma2Model, \d+ tensors/m);
    expect(r.stdout).toMatch(/^scheduler: DPMSolverMultistepScheduler\n.*"flowShift":3/m);
  });

  it('a folder that is not a pipeline: exit 1 with the error message, no stack trace', () => {
    const r = run('info', '--model', join(golden, 'dcae_tiny'));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^sana: model_index\.json: not found in /);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('usage errors exit 2 with the usage text', () => {
    expect(run('info').status).toBe(2);
    const r = run('frobnicate');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('unknown command "frobnicate"');
    expect(run().status).toBe(2);
    expect(run('--help').status).toBe(0);
  });
});
