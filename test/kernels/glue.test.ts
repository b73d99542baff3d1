// The glue ops (sana_ops.h "glue ops") × every kernel variant and wasm, against plain TS references written
// from the formulas: fp32 rounding emulated with Math.fround where the op promises torch's rounding (those
// must match exactly, which also proves that no fused multiply-add crept in), float64 otherwise. Sizes are
// odd (vector tails) and large enough to be split over threads; bad input names the op and the argument.
import { afterAll, describe, expect, it } from 'vitest';

import type { Backend } from '../../ts/backends/backend.js';
import { SanaError } from '../../ts/errors.js';
import { decode, encode, type DType } from '../../ts/tensor/dtype.js';
import { view4, type Tensor } from '../../ts/tensor/tensor.js';
import { kernelTargets, rand, readFloat32 } from './helpers.js';

const f = Math.fround;

interface Case {
  name: string;
  run(b: Backend, mk: (shape: number[], data: ArrayLike<number>, dtype?: DType) => Tensor): Tensor;
  ref(): ArrayLike<number>;
  /** max |actual − reference| allowed (0: bit-exact) */
  tol: number;
}

const cases: Case[] = [];

{
  const n = 20011;
  const [x, y] = [rand(n, 1, -3, 3), rand(n, 2, -3, 3)];
  const [a, b] = [f(0.8123), f(-1.377)];
  cases.push({ name: 'axpby a·x + b·y', tol: 0, run: (be, mk) => be.axpby(a, mk([n], x), b, mk([n], y)), ref: () => x.map((v, i) => f(f(a * v) + f(b * y[i]))) });
  cases.push({ name: 'axpby a·x (no y), in place', tol: 0, run: (be, mk) => { const t = mk([n], x); return be.axpby(a, t, 0, null, t); }, ref: () => x.map((v) => f(a * v)) });
  const s = f(4.5);
  cases.push({ name: 'cfgCombine u + s·(c − u)', tol: 0, run: (be, mk) => be.cfgCombine(mk([7, n / 7 | 0], x.subarray(0, 7 * (n / 7 | 0))), mk([7, n / 7 | 0], y.subarray(0, 7 * (n / 7 | 0))), s),
    ref: () => Array.from({ length: 7 * (n / 7 | 0) }, (_, i) => f(x[i] + f(s * f(y[i] - x[i])))) });
  const bad = Float32Array.from(x);
  const holes = [3, 17, 8191, 8192, 16385, n - 1];
  holes.forEach((i, k) => (bad[i] = [NaN, Infinity, -Infinity][k % 3]));
  cases.push({ name: 'countNonFinite over chunk edges', tol: 0, run: (be, mk) => be.countNonFinite(mk([n], bad)), ref: () => [holes.length] });
}
{
  const [B, K, D] = [3, 6, 37];
  const table = rand(K * D, 3);
  const emb = rand(B * K * D, 4);
  const shared = rand(B * D, 5);
  cases.push({ name: 'adalnModulation table + emb chunks', tol: 0, run: (be, mk) => be.adalnModulation(mk([K, D], table), mk([B, K * D], emb)),
    ref: () => Array.from({ length: K * B * D }, (_, i) => { const [k, b, d] = [Math.floor(i / (B * D)), Math.floor(i / D) % B, i % D]; return f(table[k * D + d] + emb[b * K * D + k * D + d]); }) });
  cases.push({ name: 'adalnModulation shared emb', tol: 0, run: (be, mk) => be.adalnModulation(mk([2, D], table.subarray(0, 2 * D)), mk([B, D], shared), { shared: true }),
    ref: () => Array.from({ length: 2 * B * D }, (_, i) => { const [k, b, d] = [Math.floor(i / (B * D)), Math.floor(i / D) % B, i % D]; return f(table[k * D + d] + shared[b * D + d]); }) });
}
for (const [B, C, H, W, p] of [[2, 35, 33, 37, 1], [2, 5, 6, 10, 2], [1, 3, 9, 6, 3]]) {
  const x = rand(B * C * H * W, 6 + p);
  const [h, w] = [H / p, W / p];
  // token (i, j) channel (r·p + s)·C + c ← pixel (c, i·p + r, j·p + s)
  const tokens = () => {
    const out = new Float64Array(x.length);
    for (let b = 0; b < B; b++) for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) for (let r = 0; r < p; r++) for (let s = 0; s < p; s++) for (let c = 0; c < C; c++)
      out[((b * h * w + i * w + j) * p * p + r * p + s) * C + c] = x[((b * C + c) * H + i * p + r) * W + j * p + s];
    return out;
  };
  cases.push({ name: `patchify ${B}x${C}x${H}x${W} p=${p}`, tol: 0, run: (be, mk) => be.patchify(mk([B, C, H, W], x), p), ref: tokens });
  cases.push({ name: `unpatchify ${B}x${C}x${H}x${W} p=${p}`, tol: 0, run: (be, mk) => be.unpatchify(mk([B, h * w, p * p * C], tokens()), { height: h, width: w, patch: p }), ref: () => x });
}
{
  // concat along the channel dim of two NCHW maps into one, through views; a crop; repeat-interleave (stride 0)
  const [B, C1, C2, HW] = [2, 3, 5, 41];
  const a = rand(B * C1 * HW, 9);
  const b = rand(B * C2 * HW, 10);
  const C = C1 + C2;
  cases.push({
    name: 'copy: concat along channels', tol: 0,
    run: (be, mk) => {
      const out = be.empty([B, C, 1, HW]);
      be.copy(view4(mk([B, C1, 1, HW], a), [B, C1, 1, HW]), view4(out, [B, C1, 1, HW], [C * HW, HW, HW, 1]));
      return be.copy(view4(mk([B, C2, 1, HW], b), [B, C2, 1, HW]), view4(out, [B, C2, 1, HW], [C * HW, HW, HW, 1], C1 * HW));
    },
    ref: () => Array.from({ length: B * C * HW }, (_, i) => { const [bb, c, p] = [Math.floor(i / (C * HW)), Math.floor(i / HW) % C, i % HW]; return c < C1 ? a[(bb * C1 + c) * HW + p] : b[(bb * C2 + c - C1) * HW + p]; }),
  });
  const [H, W, y0, x0, ch, cw] = [9, 11, 2, 3, 5, 7];
  const m = rand(B * C1 * H * W, 11);
  cases.push({
    name: 'copy: crop of an NCHW map', tol: 0,
    run: (be, mk) => be.copy(view4(mk([B, C1, H, W], m), [B * C1, ch, 1, cw], [H * W, W, 0, 1], y0 * W + x0), view4(be.empty([B, C1, ch, cw]), [B * C1, ch, 1, cw])),
    ref: () => Array.from({ length: B * C1 * ch * cw }, (_, i) => { const [bc, y, xx] = [Math.floor(i / (ch * cw)), Math.floor(i / cw) % ch, i % cw]; return m[(bc * H + y0 + y) * W + x0 + xx]; }),
  });
  const rep = 3;
  cases.push({
    name: 'copy: repeat-interleave of channels (stride-0 source)', tol: 0,
    run: (be, mk) => be.copy(view4(mk([B, C1, 1, HW], a), [B, C1, rep, HW], [C1 * HW, HW, 0, 1]), view4(be.empty([B, C1 * rep, 1, HW]), [B, C1, rep, HW])),
    ref: () => Array.from({ length: B * C1 * rep * HW }, (_, i) => { const [bb, k, p] = [Math.floor(i / (C1 * rep * HW)), Math.floor(i / HW) % (C1 * rep), i % HW]; return a[(bb * C1 + Math.floor(k / rep)) * HW + p]; }),
  });
}
for (const dtype of ['f32', 'f16', 'bf16'] as const) {
  const [V, D] = [97, 45];
  const table = decode(encode(rand(V * D, 12), dtype), dtype);
  const ids = [5, 96, 0, 5, 41, 77, 3];
  const scale = f(Math.sqrt(45));
  cases.push({ name: `embedding ${dtype} table × scale`, tol: 0, run: (be, mk) => be.embedding(mk([V, D], table, dtype), mk([ids.length], ids, 'i32'), { scale }),
    ref: () => ids.flatMap((id) => Array.from(table.subarray(id * D, (id + 1) * D), (v) => f(v * scale))) });
}
{
  const [B, C, H, W, g] = [2, 12, 5, 7, 4];
  const x = rand(B * C * H * W, 13);
  cases.push({ name: 'groupMean 12 → 4 groups', tol: 1e-6, run: (be, mk) => be.groupMean(mk([B, C, H, W], x), g),
    ref: () => Array.from({ length: B * g * H * W }, (_, i) => { const [b, k, p] = [Math.floor(i / (g * H * W)), Math.floor(i / (H * W)) % g, i % (H * W)]; let s = 0; for (let j = 0; j < C / g; j++) s += x[(b * C + k * (C / g) + j) * H * W + p]; return s / (C / g); }) });
  const [heads, Dh, HW] = [3, 4, 37];
  const e = rand(B * heads * (Dh + 1) * HW, 14, 0.5, 2);
  cases.push({ name: 'evitNormalize rows / (last row + eps)', tol: 1e-6, run: (be, mk) => be.evitNormalize(mk([B, heads * (Dh + 1), 1, HW], e), heads, 1e-15),
    ref: () => Array.from({ length: B * heads * Dh * HW }, (_, i) => { const [bh, d, p] = [Math.floor(i / (Dh * HW)), Math.floor(i / HW) % Dh, i % HW]; return e[(bh * (Dh + 1) + d) * HW + p] / (e[(bh * (Dh + 1) + Dh) * HW + p] + 1e-15); }) });
}

const { targets, skipped } = await kernelTargets();
afterAll(() => {
  for (const b of new Set(targets.map((t) => t.backend))) b.dispose();
});
for (const s of skipped) it.skip(`${s.label}: ${s.reason}`);

async function runCase(be: Backend, c: Case): Promise<Float32Array> {
  const made: Tensor[] = [];
  const mk = (shape: number[], data: ArrayLike<number>, dtype: DType = 'f32') => {
    const t = be.tensor(shape, dtype, data);
    made.push(t);
    return t;
  };
  const out = c.run(be, mk);
  const copy = await readFloat32(out);
  out.dispose();
  for (const t of made) t.dispose();
  return copy;
}

describe.each(targets)('$label', ({ backend, variant }) => {
  it.each(cases)('$name', async (c) => {
    backend.setVariant(variant);
    const got = await runCase(backend, c);
    const want = c.ref();
    expect(got.length).toBe(want.length);
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    if (!(worst <= c.tol)) expect.fail(`max |diff| ${worst} > ${c.tol}`);
  });
});

describe.each(targets.filter((t) => t.variant === t.backend.info.variants.at(-1)))('$label: bad input', ({ backend: b }) => {
  const t = (shape: number[], dtype: DType = 'f32') => b.tensor(shape, dtype, new Float32Array(shape.reduce((x, y) => x * y, 1)).fill(0.5));
  const expectArg = (fn: () => unknown, message: RegExp) => {
    try {
      fn();
    } catch (e) {
      expect(e).toBeInstanceOf(SanaError);
      expect((e as SanaError).code).toBe('ERR_SANA_INVALID_ARGUMENT');
      expect((e as SanaError).message).toMatch(message);
      return;
    }
    expect.fail('no error');
  };
  it('names the op and the argument', () => {
    expectArg(() => b.axpby(1, t([4]), 1, t([5])), /axpby: Expected \[4\] for y\.shape but received \[5\]/);
    expectArg(() => b.axpby(NaN, t([4]), 1, null), /axpby: Expected a finite number for a but received NaN/);
    expectArg(() => b.cfgCombine(t([4]), t([4]), Infinity), /cfgCombine: Expected a finite number for scale/);
    expectArg(() => b.adalnModulation(t([6, 8]), t([2, 40])), /adalnModulation: Expected \[B, 48\] for a \[6, 8\] table for emb\.shape but received \[2, 40\]/);
    expectArg(() => b.patchify(t([1, 2, 5, 4]), 2), /patchify: Expected a patch size dividing H=5 and W=4 for patch but received 2/);
    expectArg(() => b.unpatchify(t([1, 6, 8]), { height: 2, width: 2, patch: 2 }), /unpatchify: Expected tokens \[B, 4, p·p·C\]/);
    expectArg(() => b.copy(t([2, 3]), t([7])), /copy: Expected 6 elements \(the size of src\) for dst\.shape but received \[7\]/);
    expectArg(() => b.embedding(t([5, 4]), t([3])), /embedding: Expected an i32 tensor for ids\.dtype but received "f32"/);
    expectArg(() => b.embedding(t([5, 4], 'bf16'), b.tensor([2], 'i32', [1, 5])), /embedding: Expected token ids in \[0, 5\) for ids but received 5 at position 1/);
    expectArg(() => b.groupMean(t([1, 6, 2, 2]), 4), /groupMean: Expected a divisor of the 6 channels for groups but received 4/);
    expectArg(() => b.evitNormalize(t([1, 6, 2, 2]), 6, 0), /evitNormalize: Expected a divisor of the 6 channels leaving ≥ 2 per head for heads but received 6/);
  });
});
