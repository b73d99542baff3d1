// Checkpoints whose tensors are stored in mixed float dtypes (merges, LoRA-fused files): the fused Mix-FFN
// kernel reads conv_inverted, conv_depth and conv_point together in one dtype, so a mixed group is held as
// fp32 at load. The demo transformer is rewritten with every tensor F16 but each ff.conv_depth.weight BF16;
// it must load, say so, and generate what the same values stored as F32 generate.
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { SafetensorsFile } from '../../ts/io/safetensors.js';
import { demoModelDir } from '../../ts/paths.js';
import { SanaPipelineCore } from '../../ts/pipeline/pipeline-core.js';
import { SanaPipeline } from '../../ts/pipeline/sana-pipeline.js';
import { decode, encode } from '../../ts/tensor/dtype.js';
import { maxRelDiff, writeSafetensors } from '../fixtures/random-dcae.js';

const root = mkdtempSync(join(tmpdir(), 'sana-mixed-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const WEIGHTS = join('transformer', 'diffusion_pytorch_model.safetensors');

/** Copies the demo model with its transformer tensors re-stored: `dtypeOf(name)` F16/BF16 words, or (as the
 * reference) F32 holding exactly those rounded values; `edit` may change a tensor's values first. */
function restore(name: string, dtypeOf: (tensor: string) => 'F16' | 'BF16', asF32: boolean, edit?: (tensor: string, v: Float32Array) => void): string {
  const dir = join(root, name);
  cpSync(demoModelDir(), dir, { recursive: true });
  const f = SafetensorsFile.open(join(demoModelDir(), WEIGHTS));
  const tensors = [...f.tensors.values()].map((info) => {
    const values = f.read(info.name).data as Float32Array;
    edit?.(info.name, values);
    const dt = dtypeOf(info.name);
    const words = encode(values, dt === 'F16' ? 'f16' : 'bf16') as Uint16Array;
    return asF32 ? { name: info.name, shape: info.shape, data: decode(words, dt === 'F16' ? 'f16' : 'bf16') } : { name: info.name, shape: info.shape, data: words, dtype: dt };
  });
  f.close();
  writeSafetensors(join(dir, WEIGHTS), tensors);
  return dir;
}

const mixedDtype = (t: string) => (t.endsWith('ff.conv_depth.weight') ? 'BF16' : 'F16');
const OPTS = { steps: 4, seed: 7, outputType: 'float' as const };
const PROMPT = 'a yellow triangle on a blue background';

describe('mixed storage dtypes', () => {
  const mixed = restore('mixed', mixedDtype, false);
  const reference = restore('reference', mixedDtype, true);

  it('F16 weights with BF16 depth-wise kernels load (with a warning per block) and generate what the same values in F32 do', async () => {
    // fp32 precision: 'auto' would run this 16-bit checkpoint in bf16 (weights converted, no mixed groups)
    const pipe = await SanaPipelineCore.fromPretrained(mixed, { precision: 'fp32' });
    const ref = await SanaPipelineCore.fromPretrained(reference, { precision: 'fp32' });
    try {
      const notes = pipe.warnings.filter((w) => w.includes('mixed dtypes'));
      expect(notes).toHaveLength(4); // one per transformer block
      expect(notes[0]).toMatch(/transformer_blocks\.0\.ff: .*f16.*bf16.* held as fp32/);
      const a = (await pipe.generate(PROMPT, OPTS)).tensor!.data;
      const b = (await ref.generate(PROMPT, OPTS)).tensor!.data;
      expect(a.every(Number.isFinite)).toBe(true);
      expect(maxRelDiff(a, b)).toBeLessThan(1e-4);
    } finally {
      pipe.dispose();
      ref.dispose();
    }
  });

  it('the same on the worker path: an image within one uint8 step of the reference', async () => {
    const pipe = await SanaPipeline.fromPretrained(mixed, { precision: 'fp32' });
    const ref = await SanaPipeline.fromPretrained(reference, { precision: 'fp32' });
    try {
      const a = (await pipe.generate(PROMPT, { steps: 4, seed: 7 })).images[0].data;
      const b = (await ref.generate(PROMPT, { steps: 4, seed: 7 })).images[0].data;
      expect(a.length).toBe(b.length);
      expect(a.every((v, i) => Math.abs(v - b[i]) <= 1)).toBe(true);
    } finally {
      await pipe.dispose();
      await ref.dispose();
    }
  });

  it("weightDtype 'f16' with one depth-wise kernel beyond the f16 range: that tensor stays fp32, so its group is held as fp32 and runs", async () => {
    const big = 'transformer_blocks.2.ff.conv_depth.weight';
    const dir = restore('beyond-f16', () => 'BF16', true, (t, v) => t === big && (v[0] = 1e5));
    const pipe = await SanaPipelineCore.fromPretrained(dir, { weightDtype: 'f16' });
    try {
      expect(pipe.warnings.some((w) => w.includes(`${big} exceeds the f16 range`))).toBe(true);
      expect(pipe.warnings.some((w) => w.includes('transformer_blocks.2.ff: weights in mixed dtypes'))).toBe(true);
      const out = await pipe.generate(PROMPT, { ...OPTS, outputType: 'latent' });
      expect(out.tensor!.data.every(Number.isFinite)).toBe(true);
    } finally {
      pipe.dispose();
    }
  });
});
