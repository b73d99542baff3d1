// The compute precision option: what 'auto' picks and why, how a pipeline reports it, the per-generation
// override, bad values, and `sana generate --precision` on the demo model in both precisions.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, describe, expect, it } from 'vitest';

import { probeBackends } from '../../ts/backends/registry.js';
import { SanaError } from '../../ts/errors.js';
import { choosePrecision } from '../../ts/models/precision.js';
import { demoModelDir, packageRoot } from '../../ts/paths.js';
import { SanaPipelineCore } from '../../ts/pipeline/pipeline-core.js';

const amx = { name: 'cpu' as const, variant: 'amx-bf16' };
const avx2 = { name: 'cpu' as const, variant: 'avx2' };
const cpuAvailable = probeBackends().find((p) => p.name === 'cpu')?.available;

describe('choosePrecision', () => {
  it('auto: bf16 only with a bf16 engine and a 16-bit checkpoint, and says why', () => {
    expect(choosePrecision('auto', amx, ['BF16'])).toEqual({ precision: 'bf16', reason: 'auto: AMX-BF16 tiles and a BF16 checkpoint' });
    expect(choosePrecision('auto', { name: 'cpu', variant: 'avx512bf16' }, ['F16', 'BF16'])).toEqual({ precision: 'bf16', reason: 'auto: AVX-512-BF16 and a F16/BF16 checkpoint' });
    expect(choosePrecision('auto', amx, ['F32', 'BF16']).precision).toBe('fp32');
    expect(choosePrecision('auto', avx2, ['BF16'])).toEqual({ precision: 'fp32', reason: 'auto: the cpu variant avx2 has no bf16 engine' });
    expect(choosePrecision('auto', { name: 'wasm', variant: 'wasm-simd128' }, ['BF16']).precision).toBe('fp32');
  });
  it('explicit choices are kept (bf16 without an engine says it computes in fp32 on bf16 weights); a model without bf16 kernels stays fp32', () => {
    expect(choosePrecision('fp32', amx, ['BF16'])).toEqual({ precision: 'fp32', reason: 'requested' });
    expect(choosePrecision('bf16', avx2, ['F32'])).toEqual({ precision: 'bf16', reason: 'requested; the cpu variant avx2 has no bf16 engine: fp32 arithmetic on bf16 weights' });
    expect(choosePrecision('bf16', amx, ['BF16'], false)).toEqual({ precision: 'fp32', reason: 'requested bf16, but the DC-AE computes in fp32 (its Winograd fp32 convolutions outrun bf16 ones and keep fp32 accuracy)' });
  });
});

describe.skipIf(!cpuAvailable)('a pipeline in either precision (demo model, cpu)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sana-precision-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reports its precision; bf16 differs from fp32 but stays close; a generation can ask for fp32, not bf16 on an fp32 load', async () => {
    const fp32 = await SanaPipelineCore.fromPretrained(demoModelDir(), { backend: 'cpu' });
    const bf16 = await SanaPipelineCore.fromPretrained(demoModelDir(), { backend: 'cpu', precision: 'bf16' });
    try {
      expect(fp32.precision.transformer.precision).toBe('fp32'); // auto on the demo model's fp32 checkpoint
      expect(bf16.precision.transformer.precision).toBe('bf16');
      expect(bf16.precision.vae.precision).toBe('fp32');
      const opts = { steps: 4, seed: 3, outputType: 'latent' as const };
      const a = (await fp32.generate('a red triangle on a blue background', opts)).tensor!.data;
      const b = (await bf16.generate('a red triangle on a blue background', opts)).tensor!.data;
      const l2 = (x: Float32Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0));
      const rel = l2(a.map((v, i) => v - b[i])) / l2(a);
      expect(rel).toBeGreaterThan(0);
      expect(rel).toBeLessThan(5e-2);
      // fp32 arithmetic on the bf16 weights for one generation, then bf16 again
      const c = (await bf16.generate('a red triangle on a blue background', { ...opts, precision: 'fp32' })).tensor!.data;
      expect(c).not.toEqual(b);
      expect((await bf16.generate('a red triangle on a blue background', opts)).tensor!.data).toEqual(b);
      await expect(fp32.generate('x', { ...opts, precision: 'bf16' })).rejects.toMatchObject({ code: 'ERR_SANA_INVALID_OPTION', message: expect.stringMatching(/Expected precision fp32 or auto for this pipeline .* but received bf16/) });
      await expect(fp32.generate('x', { ...opts, precision: 'fp16' as never })).rejects.toBeInstanceOf(SanaError);
    } finally {
      fp32.dispose();
      bf16.dispose();
    }
    await expect(SanaPipelineCore.fromPretrained(demoModelDir(), { precision: 'half' as never })).rejects.toMatchObject({ code: 'ERR_SANA_INVALID_OPTION', message: 'Expected one of auto, fp32, bf16 for precision but received "half"' });
  });

  it.each(['fp32', 'bf16'])('sana generate --precision %s writes the picture and says the precision', (precision) => {
    const out = join(dir, `${precision}.png`);
    const run = spawnSync(process.execPath, [join(packageRoot(), 'dist', 'ts', 'cli', 'sana.js'), 'generate', 'a red triangle on a blue background', '--precision', precision, '--steps', '4', '-o', out], { encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    expect(PNG.sync.read(readFileSync(out)).width).toBe(64);
    expect(run.stderr).toMatch(new RegExp(`precision: textEncoder ${precision} \\(requested.*transformer ${precision} \\(requested`));
  });
});
