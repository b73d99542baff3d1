// LoRA adapters on the transformer (ts/models/lora.ts) against a float64 reference of
// W + Σ scale·(α/r)·B·A, on random small adapters written as real safetensors files, for every module kind
// a Sana LoRA targets (fused self-attention q/k/v, attention outputs, cross-attention, the Mix-FFN's 1×1
// convs, caption projection, time embedding, proj_out), on cpu and wasm. Also: scale 0 and unloading give
// the loaded weights back bit for bit, adapters add, PEFT metadata alpha, the older down/up names, a
// forward equal to a checkpoint with the update merged, and every bad adapter fails by name and changes nothing.
import { cpSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import type { Backend } from '../../ts/backends/backend.js';
import { createBackend, probeBackends } from '../../ts/backends/registry.js';
import { SafetensorsFile } from '../../ts/io/safetensors.js';
import { SanaTransformer2DModel, type TransformerInput } from '../../ts/models/sana-transformer.js';
import { golden, needs } from '../fixtures/shared.js';
import { uniform, writeSafetensors } from '../fixtures/random-dcae.js';

const dir = mkdtempSync(join(tmpdir(), 'sana-lora-'));
const backends: Backend[] = [];
for (const p of probeBackends()) if (p.available) backends.push(await createBackend(p.name));
afterAll(() => {
  backends.forEach((b) => b.dispose());
  rmSync(dir, { recursive: true, force: true });
});

const MODEL = golden.present ? join(golden.dir, 'sana_transformer_tiny') : '';
/** module → [out, in] and whether its weight is a 1×1 conv */
const MODULES: [string, number, number, boolean][] = [
  ['transformer_blocks.0.attn1.to_q', 96, 96, false], // fused into to_qkv, rows 0..96
  ['transformer_blocks.1.attn1.to_v', 96, 96, false], // fused, rows 192..288
  ['transformer_blocks.0.attn1.to_out.0', 96, 96, false],
  ['transformer_blocks.1.attn2.to_k', 96, 96, false],
  ['transformer_blocks.0.ff.conv_inverted', 480, 96, true],
  ['transformer_blocks.1.ff.conv_point', 96, 240, true],
  ['caption_projection.linear_1', 96, 64, false],
  ['time_embed.linear', 576, 96, false],
  ['proj_out', 16, 96, false],
];

let files = 0;
type Pair = { module: string; a: Float32Array; b: Float32Array; rank: number; conv: boolean; out: number; inp: number; bias?: Float32Array };
function pairs(seed: number, rank = 3, modules = MODULES): Pair[] {
  const u = uniform(seed);
  return modules.map(([module, out, inp, conv]) => ({
    module, rank, conv, out, inp,
    a: Float32Array.from({ length: rank * inp }, () => 0.3 * u()),
    b: Float32Array.from({ length: out * rank }, () => 0.3 * u()),
  }));
}
function write(ps: Pair[], opts: { metadata?: Record<string, string>; names?: 'peft' | 'old' } = {}): string {
  const file = join(dir, `adapter-${files++}.safetensors`);
  const [down, up] = opts.names === 'old' ? ['lora.down', 'lora.up'] : ['lora_A', 'lora_B'];
  const tensors = ps.flatMap((p) => [
    { name: `transformer.${p.module}.${down}.weight`, shape: p.conv ? [p.rank, p.inp, 1, 1] : [p.rank, p.inp], data: p.a },
    { name: `transformer.${p.module}.${up}.weight`, shape: p.conv ? [p.out, p.rank, 1, 1] : [p.out, p.rank], data: p.b },
    ...(p.bias ? [{ name: `transformer.${p.module}.${up}.bias`, shape: [p.out], data: p.bias }] : []),
  ]);
  writeSafetensors(file, tensors, opts.metadata);
  return file;
}
/** W0 + Σ k·B·A in float64 */
function reference(base: Float64Array, terms: { p: Pair; k: number }[]): Float64Array {
  const w = Float64Array.from(base);
  for (const { p, k } of terms)
    for (let i = 0; i < p.out; i++)
      for (let c = 0; c < p.inp; c++) {
        let s = 0;
        for (let j = 0; j < p.rank; j++) s += p.b[i * p.rank + j] * p.a[j * p.inp + c];
        w[i * p.inp + c] += k * s;
      }
  return w;
}
const maxRel = (a: ArrayLike<number>, e: ArrayLike<number>) => {
  let num = 0;
  let den = 0;
  for (let i = 0; i < e.length; i++) (num = Math.max(num, Math.abs(a[i] - e[i]))), (den = Math.max(den, Math.abs(e[i])));
  return num / den;
};
function input(): TransformerInput {
  const u = uniform(99);
  return {
    hiddenStates: Float32Array.from({ length: 16 * 8 * 8 }, () => u()), shape: [1, 16, 8, 8],
    encoderHiddenStates: Float32Array.from({ length: 5 * 64 }, () => u()), textLength: 5, encoderAttentionMask: [1, 1, 1, 1, 0],
    timestep: Float32Array.of(500),
  };
}

describe.skipIf(!golden.present)(needs(golden, 'LoRA adapters'), () => {
  for (const be of backends) {
    describe(be.name, () => {
      it('every module kind holds W + scale·(α/r)·B·A; two adapters add; setScale re-merges; metadata alpha and old names count', () => {
        const model = SanaTransformer2DModel.fromFolder(MODEL, be);
        try {
          const base = new Map(MODULES.map(([m]) => [m, model.lora.values(`${m}.weight`)]));
          const p1 = pairs(1);
          model.lora.load(write(p1), { name: 'one', scale: 0.7 }); // no metadata: alpha = r
          for (const p of p1) expect(maxRel(model.lora.values(`${p.module}.weight`), reference(base.get(p.module)!, [{ p, k: 0.7 }]))).toBeLessThan(1e-6);
          const p2 = pairs(2, 4);
          model.lora.load(write(p2, { metadata: { lora_adapter_metadata: JSON.stringify({ r: 4, lora_alpha: 8 }) } }), { name: 'two', scale: -0.5 });
          for (const [i, p] of p1.entries())
            expect(maxRel(model.lora.values(`${p.module}.weight`), reference(base.get(p.module)!, [{ p, k: 0.7 }, { p: p2[i], k: -0.5 * 2 }]))).toBeLessThan(1e-6);
          model.lora.setScale('one', 1.5);
          for (const [i, p] of p1.entries())
            expect(maxRel(model.lora.values(`${p.module}.weight`), reference(base.get(p.module)!, [{ p, k: 1.5 }, { p: p2[i], k: -1 }]))).toBeLessThan(1e-6);
          model.lora.unload('two');
          // a folder holding pytorch_lora_weights.safetensors (diffusers' save_lora_weights) is named after the folder
          const folder = join(dir, `saved-${be.name}`);
          mkdirSync(folder);
          renameSync(write(pairs(9, 2, MODULES.slice(6, 7))), join(folder, 'pytorch_lora_weights.safetensors'));
          expect(model.lora.load(folder, { scale: 0 })).toBe(`saved-${be.name}`);
          model.lora.unload(`saved-${be.name}`);
          const p3 = pairs(3, 2, MODULES.slice(0, 2));
          model.lora.load(write(p3, { names: 'old', metadata: { lora_adapter_metadata: JSON.stringify({ 'transformer.lora_alpha': 1 }) } }), { name: 'old' });
          expect(maxRel(model.lora.values(`${p3[1].module}.weight`), reference(base.get(p3[1].module)!, [{ p: p1[1], k: 1.5 }, { p: p3[1], k: 0.5 }]))).toBeLessThan(1e-6);
          expect(model.lora.loaded.map((l) => [l.name, l.scale, l.modules])).toEqual([['one', 1.5, MODULES.length], ['old', 1, 2]]);
        } finally {
          model.dispose();
        }
      });

      it('scale 0 and unloading give the loaded weights and forward back bit for bit; lora_B.bias adds to the bias', () => {
        const model = SanaTransformer2DModel.fromFolder(MODEL, be);
        try {
          const before = model.forward(input());
          const weights = MODULES.map(([m]) => model.lora.values(`${m}.weight`));
          const ps = pairs(4);
          ps[2].bias = Float32Array.from({ length: 96 }, (_, i) => 0.01 * (i % 7) + 0.001);
          const biasBefore = model.lora.values(`${ps[2].module}.bias`);
          const name = model.lora.load(write(ps), { scale: 0.8 });
          const changed = model.forward(input());
          expect(maxRel(changed, before)).toBeGreaterThan(1e-3);
          expect(maxRel(model.lora.values(`${ps[2].module}.bias`), Float64Array.from(biasBefore, (v, i) => v + 0.8 * ps[2].bias![i]))).toBeLessThan(1e-6);
          model.lora.setScale(name, 0);
          expect(model.forward(input())).toEqual(before);
          expect(MODULES.map(([m]) => model.lora.values(`${m}.weight`))).toEqual(weights);
          model.lora.setScale(name, 0.8);
          expect(model.forward(input())).toEqual(changed);
          model.lora.unload(name);
          expect(model.forward(input())).toEqual(before);
          expect(MODULES.map(([m]) => model.lora.values(`${m}.weight`))).toEqual(weights);
          expect(model.lora.values(`${ps[2].module}.bias`)).toEqual(biasBefore);
        } finally {
          model.dispose();
        }
      });

      it('the forward equals a checkpoint with the update merged in (diffusers fuse_lora)', () => {
        const ps = pairs(5);
        const merged = join(dir, `merged-${be.name}`);
        cpSync(MODEL, merged, { recursive: true });
        const f = SafetensorsFile.open(join(MODEL, 'diffusion_pytorch_model.safetensors'));
        const tensors = [...f.tensors.entries()].map(([name, info]) => {
          let data = Float32Array.from(f.read(name).data as Float32Array);
          const p = ps.find((q) => `${q.module}.weight` === name);
          if (p) data = Float32Array.from(reference(Float64Array.from(data), [{ p, k: 0.9 }]));
          return { name, shape: [...info.shape], data };
        });
        f.close();
        writeSafetensors(join(merged, 'diffusion_pytorch_model.safetensors'), tensors);
        const fused = SanaTransformer2DModel.fromFolder(merged, be);
        const model = SanaTransformer2DModel.fromFolder(MODEL, be);
        try {
          model.lora.load(write(ps), { scale: 0.9 });
          expect(maxRel(model.forward(input()), fused.forward(input()))).toBeLessThan(1e-5);
        } finally {
          model.dispose();
          fused.dispose();
        }
      });

      it('a bad adapter fails with a SanaError naming the file and key, and leaves the model as it was', () => {
        const model = SanaTransformer2DModel.fromFolder(MODEL, be);
        try {
          const good = model.lora.load(write(pairs(6)), { name: 'kept', scale: 0.3 });
          const weights = MODULES.map(([m]) => model.lora.values(`${m}.weight`));
          const out = model.forward(input());
          const bad = (file: string, message: RegExp) => {
            expect(() => model.lora.load(file)).toThrowError(expect.objectContaining({ code: 'ERR_SANA_INVALID_OPTION', message: expect.stringMatching(message) }));
            expect(MODULES.map(([m]) => model.lora.values(`${m}.weight`))).toEqual(weights);
            expect(model.lora.loaded.map((l) => l.name)).toEqual([good]);
          };
          const ps = () => pairs(7);
          const unknown = ps();
          unknown[3] = { ...unknown[3], module: 'transformer_blocks.0.attn3.to_q' };
          bad(write(unknown), /^LoRA adapter-\d+\.safetensors: transformer\.transformer_blocks\.0\.attn3\.to_q\.lora_A\.weight matches no Linear or 1×1 conv/);
          const shape = ps();
          shape[0] = { ...shape[0], inp: 97, a: new Float32Array(3 * 97).fill(0.1) };
          bad(write(shape), /transformer_blocks\.0\.attn1\.to_q: B·A is \[96, 97\] .* but transformer_blocks\.0\.attn1\.to_q\.weight is \[96, 96\]/);
          const rankFile = join(dir, 'rank.safetensors');
          writeSafetensors(rankFile, ps().flatMap((p, i) => [
            { name: `transformer.${p.module}.lora_A.weight`, shape: p.conv ? [3, p.inp, 1, 1] : [3, p.inp], data: p.a },
            { name: `transformer.${p.module}.lora_B.weight`, shape: i === 1 ? [p.out, 2] : p.conv ? [p.out, 3, 1, 1] : [p.out, 3], data: i === 1 ? p.b.subarray(0, p.out * 2) : p.b },
          ]));
          bad(rankFile, /transformer_blocks\.1\.attn1\.to_v: the rank of .*lora_A\.weight \(3, shape \[3,96\]\) and of .*lora_B\.weight \(2, shape \[96,2\]\) differ/);
          const nan = ps();
          nan[4].b[17] = Number.NaN;
          bad(write(nan), /transformer\.transformer_blocks\.0\.ff\.conv_inverted\.lora_B\.weight holds a non-finite value \(NaN at element 17\)/);
          const empty = join(dir, 'empty.safetensors');
          writeSafetensors(empty, []);
          bad(empty, /^LoRA empty\.safetensors: the file holds no LoRA keys/);
          const notLora = join(dir, 'weights.safetensors');
          writeSafetensors(notLora, [{ name: 'proj_out.weight', shape: [16, 96], data: new Float32Array(16 * 96) }]);
          bad(notLora, /^LoRA weights\.safetensors: proj_out\.weight is not a LoRA key/);
          bad(join(dir, 'absent.safetensors'), /^LoRA .*absent\.safetensors: cannot read it/);
          writeSafetensors(join(dir, 'meta.safetensors'), [], { lora_adapter_metadata: '{not json' });
          bad(join(dir, 'meta.safetensors'), /lora_adapter_metadata in the header is not valid JSON/);
          expect(() => model.lora.load(write(pairs(8)), { name: 'kept' })).toThrow(/an adapter named "kept" is already loaded/);
          expect(() => model.lora.setScale('missing', 1)).toThrow(/Expected the name of a loaded adapter \(kept\) but received "missing"/);
          expect(() => model.lora.setScale('kept', Number.NaN)).toThrow(/Expected a finite number for the LoRA scale/);
          expect(model.forward(input())).toEqual(out);
        } finally {
          model.dispose();
        }
      });
    });
  }
});
