// The `sana` command as a user runs it: output, exit codes (0 ok, 1 runtime error, 2 usage error), and
// errors printed as messages, not stack traces.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, describe, expect, it } from 'vitest';

import { demoModelDir, packageRoot } from '../../ts/paths.js';
import { golden, needs } from '../fixtures/shared.js';
import { tinyPipeline } from '../fixtures/tiny-pipeline.js';
import { expectedCudaProbe } from '../fixtures/cuda.js';

const cli = join(packageRoot(), 'dist', 'ts', 'cli', 'sana.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

describe('sana CLI', () => {
  it('backends: lists cuda, cpu and wasm with availability or the reason', () => {
    const r = run('backends');
    expect(r.status).toBe(0);
    const cuda = expectedCudaProbe();
    if (cuda) expect(r.stdout).toContain(`cuda  unavailable: ${cuda.reason}\n`);
    else expect(r.stdout).toMatch(/^cuda\s+(available|unavailable: .+)$/m);
    expect(r.stdout).toMatch(/^wasm\s+available \(variant wasm-simd128, 1 thread/m);
    expect(r.stdout).toMatch(/^cpu\s+(available \(variant \S+, \d+ threads?|unavailable: )/m);
  });

  it.skipIf(!golden.present)(needs(golden, 'info --model: components, classes and parameter counts of a pipeline folder'), () => {
    const r = run('info', '--model', join(golden.dir, 'pipeline_tiny_e2e'));
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('transformer: SanaTransformer2DModel, 54 tensors, 407,248 parameters (F32 407,248)');
    expect(r.stdout).toMatch(/^vae: AutoencoderDC, \d+ tensors/m);
    expect(r.stdout).toMatch(/^text_encoder: Gemma2Model, \d+ tensors/m);
    expect(r.stdout).toMatch(/^scheduler: DPMSolverMultistepScheduler\n.*"flowShift":3/m);
    expect(r.stdout).toMatch(/^backends:\n  cuda  unavailable: .*\n  cpu   .*\n  wasm  available$/m);
  });

  it('info without --model describes the built-in demo model', () => {
    const r = run('info');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('transformer: SanaTransformer2DModel');
    expect(r.stdout).toContain('built-in demo model');
    expect(r.stdout).toContain('"sampleSize":4');
  });

  it('info on a folder that is not a pipeline: exit 1 with the error message, no stack trace', () => {
    const r = run('info', '--model', join(demoModelDir(), 'vae'));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^sana: model_index\.json: not found in /);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('usage errors exit 2 with a message', () => {
    const noPrompt = run('generate');
    expect(noPrompt.status).toBe(2);
    expect(noPrompt.stderr).toContain("missing required argument 'prompt'");
    const r = run('frobnicate');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("unknown command 'frobnicate'");
    expect(run().status).toBe(2);
    expect(run('--help').status).toBe(0);
    expect(run('generate', '--help').stdout).toContain('Examples:');
  });
});

describe.skipIf(!golden.present)(needs(golden, 'sana generate'), () => {
  const dir = mkdtempSync(join(tmpdir(), 'sana-cli-'));
  const model = golden.present ? tinyPipeline(join(dir, 'model')) : '';
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes a PNG of the requested size, with a timing summary on stderr', () => {
    const out = join(dir, 'cube.png');
    const r = run('generate', 'a red cube', '--model', model, '--size', '64x48', '--no-binning', '--steps', '2', '--seed', '3',
      '--negative', 'sunset', '--threads', '2', '--no-chi', '--max-sequence-length', '8', '-o', out);
    expect(r.stderr).toMatch(/wrote .*cube\.png 64x48, seed 3: load .* 2 steps .* decode \d+ ms/);
    expect(r.status).toBe(0);
    const png = PNG.sync.read(readFileSync(out));
    expect([png.width, png.height]).toEqual([64, 48]);
  });

  it('several images get numbered files; the wasm backend and flow-euler work too', () => {
    const out = join(dir, 'many.png');
    const r = run('generate', 'sunset', '--model', model, '--width', '32', '--height', '32', '--no-binning', '--steps', '1',
      '--num-images', '2', '--backend', 'wasm', '--scheduler', 'flow-euler', '--guidance', '1', '--no-chi', '-o', out);
    expect(r.status).toBe(0);
    for (const f of ['many-1.png', 'many-2.png']) expect(PNG.sync.read(readFileSync(join(dir, f))).width).toBe(32);
  });

  it.each([
    [['--steps', '0'], /option '--steps <n>' argument '0' is invalid\. Expected an integer from 1 to 1000 but received "0"/],
    [['--size', '64'], /argument '64' is invalid\. Expected WIDTHxHEIGHT/],
    [['--scheduler', 'ddim'], /Expected one of flow-dpm-solver, flow-euler but received "ddim"/],
    [['--guidance', 'lots'], /Expected a number but received "lots"/],
    [['--seed', '-1'], /Expected an integer from 0 to 2\^64 − 1 but received "-1"|unknown option '-1'/],
    [['--width', '70', '--no-binning'], /^sana: Expected multiples of 8 .* for width, height but received "70x64"/m],
    [['--size', '64x64', '--width', '64'], /Expected either --size or --width\/--height/],
    [['--bogus'], /unknown option '--bogus'/],
    [['--no-binning', '--width', '64', '--height', '64'], /Expected text the tokenizer can encode for prompt/], // the default CHI has words outside the test vocabulary
  ])('bad option %j: exit 2 with a clear message', (args, message) => {
    const r = run('generate', 'a', '--model', model, ...(args as string[]));
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message as RegExp);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('a missing or broken model folder: exit 1 naming the file', () => {
    const missing = run('generate', 'a', '--model', join(dir, 'nope'));
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/^sana: model_index\.json: not found in /);
    const broken = join(dir, 'broken');
    tinyPipeline(broken);
    writeFileSync(join(broken, 'transformer', 'config.json'), '{"num_layers": ');
    const r = run('generate', 'a', '--model', broken);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^sana: transformer\/config\.json: config\.json is not valid JSON/);
  });
});
