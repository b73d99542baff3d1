// Every op × every kernel variant (each cpu variant forced in turn, plus wasm) against the float64
// references of reference.ts, on random inputs with sizes that are not multiples of any vector width or
// register tile (tails everywhere) and with more than one cache block where blocking exists. The bound
// next to each case is max|actual − reference| / max|reference|.
import { afterAll, describe, expect, it } from 'vitest';

import type { Backend } from '../../ts/backends/backend.js';
import { decode, encode, type DType } from '../../ts/tensor/dtype.js';
import { view4, type Tensor } from '../../ts/tensor/tensor.js';
import { kernelTargets, rand, readFloat32, relError } from './helpers.js';
import * as ref from './reference.js';

interface Case {
  name: string;
  /** relative error bound (see the header) */
  tol: number;
  run(b: Backend): Promise<Float32Array>;
  ref(): Float64Array;
}

/** Runs fn with the tensors it makes disposed afterwards; returns a copy of the result (read back from any device). */
async function withTensors(b: Backend, fn: (mk: (shape: number[], data?: ArrayLike<number>, dtype?: DType) => Tensor) => Tensor): Promise<Float32Array> {
  const made: Tensor[] = [];
  const mk = (shape: number[], data?: ArrayLike<number>, dtype: DType = 'f32') => {
    const t = b.tensor(shape, dtype, data);
    made.push(t);
    return t;
  };
  const out = fn(mk);
  const copy = await readFloat32(out);
  if (!made.includes(out)) out.dispose();
  for (const t of made) t.dispose();
  return copy;
}

/** Weight values as the kernel sees them after storage in dtype. */
function quantized(values: Float32Array, dtype: DType): Float32Array {
  return decode(encode(values, dtype), dtype);
}

const cases: Case[] = [];

// ---- linear: M split (M ≥ 192) and N split, K over two 256-blocks, all three weight dtypes, epilogues
for (const [M, K, N, dtype, act, bias] of [
  [37, 67, 45, 'f32', 'none', true],
  [203, 300, 70, 'f32', 'gelu-tanh', true],
  [5, 129, 131, 'f32', 'silu', false],
  [41, 97, 53, 'f16', 'relu', true],
  [200, 261, 35, 'bf16', 'none', true],
] as const) {
  const x = rand(M * K, 1 + M);
  const w = quantized(rand(N * K, 2 + N, -0.5, 0.5), dtype);
  const b = bias ? rand(N, 3) : undefined;
  cases.push({
    name: `linear ${M}x${K}x${N} w=${dtype} act=${act}${bias ? ' +bias' : ''}`,
    tol: 2e-5,
    run: (be) => withTensors(be, (mk) => be.linear(mk([M, K], x), mk([N, K], w, dtype), { bias: b && mk([N], b), act })),
    ref: () => ref.linear(x, M, K, w, N, b, act),
  });
}
// fast bf16 mode: activations rounded to bf16 (relative step 2^-8), products summed in fp32; the second
// shape spans several AMX row, column and depth blocks (256 × 1024 × 512)
for (const [M, K, N] of [[53, 301, 47], [300, 600, 70]] as const) {
  const x = rand(M * K, 11 + M);
  const w = quantized(rand(N * K, 12, -0.5, 0.5), 'bf16');
  const b = rand(N, 13);
  cases.push({
    name: `linear ${M}x${K}x${N} w=bf16 fastBf16 +bias silu`,
    tol: 1e-2,
    run: (be) => withTensors(be, (mk) => be.linear(mk([M, K], x), mk([N, K], w, 'bf16'), { fastBf16: true, bias: mk([N], b), act: 'silu' })),
    ref: () => ref.linear(x, M, K, w, N, b, 'silu'),
  });
}

// prepacked weights (packWeight): fp32, and bf16 both on the bf16 engine (fastBf16) and in fp32 arithmetic; N
// not a multiple of the 32-column panels, K not a multiple of the bf16 layout's 32-deep padding, M- and N-split
// threading, and K over two of the larger K blocks that prepacked weights allow (1280)
for (const [M, K, N] of [[37, 67, 45], [203, 300, 70], [5, 129, 131], [33, 1400, 45], [500, 300, 70], [300, 600, 70]] as const)
  for (const [dtype, fastBf16] of [['f32', false], ['bf16', false], ['bf16', true]] as const) {
    const x = rand(M * K, 14 + M);
    const w = quantized(rand(N * K, 15 + N, -0.5, 0.5), dtype);
    const b = rand(N, 16);
    cases.push({
      name: `linear ${M}x${K}x${N} packed w=${dtype}${fastBf16 ? ' fastBf16' : ''} +bias gelu-tanh`,
      tol: fastBf16 ? 1e-2 : 2e-5,
      run: (be) => withTensors(be, (mk) => be.linear(mk([M, K], x), be.packWeight(mk([N, K], w, dtype)), { bias: mk([N], b), act: 'gelu-tanh', fastBf16 })),
      ref: () => ref.linear(x, M, K, w, N, b, 'gelu-tanh'),
    });
  }

// ---- conv2d on the nearest ×2 upsampling of x (DC-AE's interpolating up-blocks), against the reference conv of
// the upsampled map: the Winograd path (a 34×38 map, ≥ 32 channels), im2col, the narrow path, a 1×1
for (const [B, Cin, H, W, Cout, k, pad, dtype] of [
  [1, 33, 17, 19, 34, 3, 1, 'f32'],
  [2, 5, 6, 7, 9, 3, 1, 'bf16'],
  [1, 6, 9, 21, 3, 3, 1, 'f32'],
  [1, 4, 5, 6, 7, 1, 0, 'f16'],
] as const) {
  const x = rand(B * Cin * H * W, 31 + Cin);
  const wShape = [Cout, Cin, k, k];
  const w = quantized(rand(Cout * Cin * k * k, 32 + Cout, -0.5, 0.5), dtype);
  const b = rand(Cout, 33 + Cout);
  cases.push({
    name: `conv2d upsample 2 [${B},${Cin},${H},${W}] k${k} p${pad} → ${Cout} w=${dtype}`,
    tol: 2e-5,
    run: (be) => withTensors(be, (mk) => be.conv2d(mk([B, Cin, H, W], x), mk(wShape, w, dtype), { bias: mk([Cout], b), padding: pad, upsample: 2 })),
    ref: () => ref.conv2d(ref.upsampleNearest2x(x, B * Cin, H, W), [B, Cin, 2 * H, 2 * W], w, wShape, 1, pad, 1, b, 'none').y,
  });
}

// ---- conv2d: 3×3 / 5×5 / 1×1 / stride 2 / depth-wise / grouped, odd widths and channel counts
for (const [B, Cin, H, W, Cout, k, stride, pad, groups, dtype, act] of [
  [2, 5, 9, 13, 7, 3, 1, 1, 1, 'f32', 'none'],
  [1, 3, 11, 10, 4, 5, 1, 2, 1, 'f32', 'silu'],
  [2, 17, 6, 7, 9, 1, 1, 0, 1, 'bf16', 'none'],
  [1, 6, 9, 11, 5, 3, 2, 1, 1, 'f16', 'relu'],
  [2, 6, 7, 37, 6, 3, 1, 1, 6, 'f32', 'none'],
  [1, 9, 8, 21, 9, 5, 1, 2, 9, 'bf16', 'none'],
  [1, 7, 6, 45, 7, 3, 1, 1, 7, 'f32', 'silu'],
  [1, 5, 9, 11, 5, 3, 2, 1, 5, 'f16', 'relu'],
  [1, 6, 5, 9, 9, 1, 1, 0, 3, 'f32', 'none'],
  [1, 40, 6, 5, 33, 3, 1, 1, 1, 'f32', 'gelu-tanh'],
  // at most 4 output channels (DC-AE's conv_out): the direct path of the SIMD variants, in bands of 8 rows
  [2, 19, 19, 37, 3, 3, 1, 1, 1, 'bf16', 'none'],
  [1, 8, 10, 16, 1, 1, 1, 0, 1, 'f32', 'relu'],
  [1, 4, 9, 20, 2, 3, 1, 0, 1, 'f16', 'none'],
  // dense 3×3 on maps of ≥ 1024 pixels with ≥ 32 channels: the Winograd path of the SIMD variants. Sizes
  // leave partial 4×4 tiles at the bottom and right, tile rows that are no multiple of any vector width
  // (so tile groups straddle the GEMM's 32-tile panels), several chunk-free K blocks (Cin > 256)
  [2, 37, 29, 43, 35, 3, 1, 1, 1, 'f32', 'silu'],
  [1, 300, 33, 34, 70, 3, 1, 1, 1, 'bf16', 'none'],
  [1, 64, 64, 65, 33, 3, 1, 1, 1, 'f16', 'relu'],
] as const) {
  const x = rand(B * Cin * H * W, 21 + Cin);
  const wShape = [Cout, Cin / groups, k, k];
  const w = quantized(rand(wShape.reduce((a, c) => a * c, 1), 22 + Cout, -0.5, 0.5), dtype);
  const b = rand(Cout, 23);
  cases.push({
    name: `conv2d [${B},${Cin},${H},${W}] k${k} s${stride} p${pad} g${groups} → ${Cout} w=${dtype} act=${act}`,
    tol: 2e-5,
    run: (be) =>
      withTensors(be, (mk) => be.conv2d(mk([B, Cin, H, W], x), mk(wShape, w, dtype), { bias: mk([Cout], b), stride, padding: pad, groups, act })),
    ref: () => ref.conv2d(x, [B, Cin, H, W], w, wShape, stride, pad, groups, b, act).y,
  });
}

// ---- linear attention: contiguous [B, N, H, D], and q/k/v as channel groups of an NCHW map (DC-AE layout).
// The second shape: heads in groups per task (13 heads: uneven groups at 1 and 2 threads), d no multiple of
// the vector width, tokens over three 32-token blocks with a tail
for (const [B, N, H, D, seed] of [[2, 45, 3, 32, 31], [2, 77, 13, 20, 35]] as const) {
  const [q, k, v] = [0, 1, 2].map((i) => rand(B * N * H * D, seed + i));
  const c = (data: Float32Array) => ({ data, offset: 0, strides: [N * H * D, H * D, D, 1] });
  cases.push({
    name: `linearAttention [${B},${N},${H},${D}] contiguous`,
    tol: 2e-5,
    run: (be) => withTensors(be, (mk) => be.linearAttention(mk([B, N, H, D], q), mk([B, N, H, D], k), mk([B, N, H, D], v))),
    ref: () => ref.linearAttention(c(q), c(k), c(v), [B, N, H, D], 1e-15),
  });
}
{
  // [B, G·(3·D), HW] with q | k | v of group g at channels g·3D + {0, D, 2D}: token stride 1, dim stride HW
  const [B, G, D, HW] = [2, 3, 8, 37];
  const z = rand(B * G * 3 * D * HW, 34);
  const strides = [G * 3 * D * HW, 1, 3 * D * HW, HW];
  const v4 = (o: number) => ({ data: z, offset: o, strides });
  cases.push({
    name: `linearAttention strided NCHW groups [${B},${HW},${G},${D}]`,
    tol: 2e-5,
    run: (be) =>
      withTensors(be, (mk) => {
        const t = mk([B, G * 3 * D, HW], z);
        const s = strides as [number, number, number, number];
        return be.linearAttention(view4(t, [B, HW, G, D], s, 0), view4(t, [B, HW, G, D], s, D * HW), view4(t, [B, HW, G, D], s, 2 * D * HW));
      }),
    ref: () => ref.linearAttention(v4(0), v4(D * HW), v4(2 * D * HW), [B, HW, G, D], 1e-15),
  });
}

// ---- softmax attention: masked cross-attention (−10000 on padded keys), GQA + causal + soft-cap + window
{
  const [B, Lq, Lk, H, D] = [2, 23, 19, 3, 12];
  const q = rand(B * Lq * H * D, 41);
  const k = rand(B * Lk * H * D, 42);
  const v = rand(B * Lk * H * D, 43);
  const bias = new Float32Array(B * Lk);
  for (let j = 5; j < Lk; j++) bias[j] = -10000; // row 0: 5 valid keys; row 1: all valid
  const c = (data: Float32Array, L: number) => ({ data, offset: 0, strides: [L * H * D, H * D, D, 1] });
  cases.push({
    name: `attention cross [${B},${Lq}→${Lk},${H},${D}] key bias`,
    tol: 2e-5,
    run: (be) =>
      withTensors(be, (mk) =>
        be.attention(mk([B, Lq, H, D], q), mk([B, Lk, H, D], k), mk([B, Lk, H, D], v), { keyBias: mk([B, Lk], bias) }),
      ),
    ref: () => ref.attention(c(q, Lq), c(k, Lk), c(v, Lk), { B, Lq, Lk, Hq: H, Hkv: H, D, Dv: D, scale: 1 / Math.sqrt(D), softcap: 0, causal: false, window: 0, keyBias: bias }),
  });
}
{
  const [B, L, Hq, Hkv, D, Dv] = [2, 21, 4, 2, 16, 10];
  const q = rand(B * L * Hq * D, 44, -3, 3);
  const k = rand(B * L * Hkv * D, 45, -3, 3);
  const v = rand(B * L * Hkv * Dv, 46);
  const bias = new Float32Array(B * L);
  for (let j = 17; j < L; j++) bias[L + j] = -3.4028234663852886e38; // right padding of row 1, Gemma's finfo.min
  for (let j = 9; j < L; j++) bias[j] = -3.4028234663852886e38; // row 0: queries ≥ 15 see only padding (window 6)
  const cq = { data: q, offset: 0, strides: [L * Hq * D, Hq * D, D, 1] };
  const ck = { data: k, offset: 0, strides: [L * Hkv * D, Hkv * D, D, 1] };
  const cv = { data: v, offset: 0, strides: [L * Hkv * Dv, Hkv * Dv, Dv, 1] };
  cases.push({
    name: 'attention GQA causal softcap window (Gemma-2)',
    tol: 2e-5,
    run: (be) =>
      withTensors(be, (mk) =>
        be.attention(mk([B, L, Hq, D], q), mk([B, L, Hkv, D], k), mk([B, L, Hkv, Dv], v), {
          keyBias: mk([B, L], bias), scale: 0.25, softcap: 2.5, causal: true, window: 6,
        }),
      ),
    ref: () => ref.attention(cq, ck, cv, { B, Lq: L, Lk: L, Hq, Hkv, D, Dv, scale: 0.25, softcap: 2.5, causal: true, window: 6, keyBias: bias }),
  });
}

// over several 128-row query blocks: the keys a causal, windowed block sees start past 0; rows whose every
// visible key is padding (−FLT_MAX) take the mean of all values; more queries than keys, the last ones past
// every key of their window
for (const [Lq, Lk, causal, window, padFrom] of [[300, 300, true, 100, 150], [200, 150, false, 40, 120]] as const) {
  const [B, Hq, Hkv, D, Dv] = [1, 2, 1, 24, 20];
  const q = rand(B * Lq * Hq * D, 50 + Lq, -2, 2);
  const k = rand(B * Lk * Hkv * D, 51, -2, 2);
  const v = rand(B * Lk * Hkv * Dv, 52);
  const bias = new Float32Array(B * Lk);
  for (let j = padFrom; j < Lk; j++) bias[j] = -3.4028234663852886e38;
  const strides = (L: number, H: number, d: number) => [L * H * d, H * d, d, 1];
  cases.push({
    name: `attention${causal ? ' causal' : ''} window ${window} [${B},${Lq}→${Lk},${Hq}/${Hkv},${D}] across query blocks`,
    tol: 2e-5,
    run: (be) =>
      withTensors(be, (mk) =>
        be.attention(mk([B, Lq, Hq, D], q), mk([B, Lk, Hkv, D], k), mk([B, Lk, Hkv, Dv], v), { keyBias: mk([B, Lk], bias), scale: 0.2, causal, window }),
      ),
    ref: () =>
      ref.attention({ data: q, offset: 0, strides: strides(Lq, Hq, D) }, { data: k, offset: 0, strides: strides(Lk, Hkv, D) }, { data: v, offset: 0, strides: strides(Lk, Hkv, Dv) },
        { B, Lq, Lk, Hq, Hkv, D, Dv, scale: 0.2, softcap: 0, causal, window, keyBias: bias }),
  });
}

{
  // output written through a strided view ([B, Hq·Dv, Lq] channel-major, as an NCHW consumer wants it)
  const [B, Lq, Lk, H, D] = [2, 13, 9, 2, 8];
  const q = rand(B * Lq * H * D, 47);
  const k = rand(B * Lk * H * D, 48);
  const v = rand(B * Lk * H * D, 49);
  const c = (data: Float32Array, L: number) => ({ data, offset: 0, strides: [L * H * D, H * D, D, 1] });
  cases.push({
    name: 'attention into a strided (channel-major) output view',
    tol: 2e-5,
    run: (be) =>
      withTensors(be, (mk) => {
        const out = mk([B, H * D, Lq]);
        be.attention(mk([B, Lq, H, D], q), mk([B, Lk, H, D], k), mk([B, Lk, H, D], v), {
          out: view4(out, [B, Lq, H, D], [H * D * Lq, 1, D * Lq, Lq]),
        });
        return out;
      }),
    ref: () => {
      const r = ref.attention(c(q, Lq), c(k, Lk), c(v, Lk), { B, Lq, Lk, Hq: H, Hkv: H, D, Dv: D, scale: 1 / Math.sqrt(D), softcap: 0, causal: false, window: 0 });
      const t = new Float64Array(r.length); // [B, Lq, H, D] → [B, H·D, Lq]
      for (let b = 0; b < B; b++) for (let i = 0; i < Lq; i++) for (let ch = 0; ch < H * D; ch++) t[(b * H * D + ch) * Lq + i] = r[(b * Lq + i) * H * D + ch];
      return t;
    },
  });
}

// ---- Mix-FFN: one band with odd channel counts; several row bands (carry between bands); bf16 weights;
// prepacked weights (fp32, bf16 on and off the bf16 engine)
for (const [B, H, W, C, F, Cout, dtype, fastBf16, packed] of [
  [2, 3, 5, 33, 19, 17, 'f32', false, false],
  [1, 40, 20, 8, 6, 5, 'f32', false, false],
  [1, 6, 7, 24, 20, 24, 'bf16', false, false],
  [2, 5, 6, 40, 36, 40, 'bf16', true, false],
  [1, 40, 20, 8, 6, 5, 'f32', false, true],
  [1, 40, 20, 40, 36, 33, 'bf16', true, true],
  [2, 5, 6, 40, 36, 40, 'bf16', false, true],
] as const) {
  const x = rand(B * H * W * C, 51 + H);
  const wi = quantized(rand(2 * F * C, 52, -0.5, 0.5), dtype);
  const bi = rand(2 * F, 53);
  const wd = quantized(rand(2 * F * 9, 54, -0.5, 0.5), dtype);
  const bd = rand(2 * F, 55);
  const wp = quantized(rand(Cout * F, 56, -0.5, 0.5), dtype);
  const pack = (be: Backend, t: Tensor) => (packed ? be.packWeight(t) : t);
  cases.push({
    name: `glumbconv B${B} ${H}x${W} C${C} F${F} → ${Cout} w=${dtype}${packed ? ' packed' : ''}${fastBf16 ? ' fastBf16' : ''}`,
    tol: fastBf16 ? 1e-2 : 2e-5,
    run: (be) =>
      withTensors(be, (mk) =>
        be.glumbconv(mk([B, H * W, C], x), {
          wInverted: pack(be, mk([2 * F, C, 1, 1], wi, dtype)), bInverted: mk([2 * F], bi),
          wDepth: mk([2 * F, 1, 3, 3], wd, dtype), bDepth: mk([2 * F], bd), wPoint: pack(be, mk([Cout, F, 1, 1], wp, dtype)),
        }, { height: H, width: W, fastBf16 }),
      ),
    ref: () => ref.glumbconv(x, B, H, W, C, wi, bi, wd, bd, wp, F, Cout),
  });
}

// ---- norms
{
  const [rows, D] = [10, 131];
  const x = rand(rows * D, 61, -2, 3);
  const scale = rand(2 * D, 62);
  const shift = rand(2 * D, 63);
  cases.push({
    name: `layerNorm ${rows}x${D}`,
    tol: 2e-5,
    run: (be) => withTensors(be, (mk) => be.layerNorm(mk([rows, D], x), { eps: 1e-6 })),
    ref: () => ref.layerNorm(x, rows, D, 1e-6),
  });
  cases.push({
    name: `layerNorm ${rows}x${D} + adaLN modulate (2 batches)`,
    tol: 2e-5,
    run: (be) => withTensors(be, (mk) => be.layerNorm(mk([2, rows / 2, D], x), { eps: 1e-6, scale: mk([2, D], scale), shift: mk([2, D], shift) })),
    ref: () => ref.layerNorm(x, rows, D, 1e-6, scale, shift, rows / 2),
  });
  const w = rand(D, 64);
  const b = rand(D, 65);
  cases.push({
    name: `rmsNorm ${rows}x${D} weight`,
    tol: 2e-5,
    run: (be) => withTensors(be, (mk) => be.rmsNorm(mk([rows, D], x), { eps: 1e-5, weight: mk([D], w) })),
    ref: () => ref.rmsNorm(x, rows, D, 1e-5, w),
  });
  cases.push({
    name: `rmsNorm ${rows}x${D} (1+w) Gemma + bias`,
    tol: 2e-5,
    run: (be) => withTensors(be, (mk) => be.rmsNorm(mk([rows, D], x), { eps: 1e-6, weight: mk([D], w), bias: mk([D], b), onePlusWeight: true })),
    ref: () => ref.rmsNorm(x, rows, D, 1e-6, w, b, true),
  });
  // 50×45 pixels: more than one 2048-pixel task, the last one ending mid-vector
  for (const [B, C, H, W] of [[2, 13, 5, 7], [2, 5, 50, 45]]) {
    const xc = rand(B * C * H * W, 66);
    const wc = rand(C, 67);
    const bc = rand(C, 68);
    cases.push({
      name: `rmsNormChannels [${B},${C},${H},${W}]`,
      tol: 2e-5,
      run: (be) => withTensors(be, (mk) => be.rmsNormChannels(mk([B, C, H, W], xc), { eps: 1e-5, weight: mk([C], wc), bias: mk([C], bc) })),
      ref: () => ref.rmsNormChannels(xc, B, C, H * W, 1e-5, wc, bc),
    });
  }
}

// ---- gated residual (adaLN gates), in place
{
  const [B, N, D] = [2, 7, 37];
  const x = rand(B * N * D, 76);
  const y = rand(B * N * D, 77);
  const gate = rand(B * D, 78);
  cases.push({
    name: 'residual x + gate[b] ⊙ y, in place',
    tol: 1e-6,
    run: (be) =>
      withTensors(be, (mk) => {
        const t = mk([B, N, D], x);
        return be.residual(t, mk([B, N, D], y), { gate: mk([B, D], gate), out: t });
      }),
    ref: () => Float64Array.from(x, (v, i) => v + gate[Math.floor(i / (N * D)) * D + (i % D)] * y[i]),
  });
  cases.push({
    name: 'residual x + y',
    tol: 1e-6,
    run: (be) => withTensors(be, (mk) => be.residual(mk([B, N, D], x), mk([B, N, D], y))),
    ref: () => Float64Array.from(x, (v, i) => v + y[i]),
  });
}

{
  const x = rand(1003, 79, -3, 3);
  const y = rand(1003, 80, -3, 3);
  cases.push({
    name: 'mul x ⊙ y',
    tol: 1e-7,
    run: (be) => withTensors(be, (mk) => be.mul(mk([17, 59], x), mk([17, 59], y))),
    ref: () => Float64Array.from(x, (v, i) => v * y[i]),
  });
}

// ---- data movement (exact)
// DC-AE's up-sampling shortcut: y += pixel_shuffle(repeat_interleave(x)); W = 37 runs the r = 2 vector path
// and its scalar tail
for (const [r, rep, W, accumulate] of [[2, 1, 37, false], [2, 2, 37, true], [2, 4, 21, true], [3, 3, 7, true], [2, 8, 19, false]] as const) {
  const [B, C, H] = [2, 4, 3];
  const Cx = (C * r * r) / rep;
  const x = rand(B * Cx * H * W, 77 + rep);
  const base = rand(B * C * H * r * W * r, 78 + r);
  cases.push({
    name: `pixelShuffle r${r} repeat ${rep} W${W}${accumulate ? ' accumulate' : ''}`,
    tol: accumulate ? 1e-6 : 0,
    run: (be) => withTensors(be, (mk) => be.pixelShuffle(mk([B, Cx, H, W], x), r, { repeat: rep, accumulate, out: mk([B, C, H * r, W * r], base) })),
    ref: () => {
      const shuffled = ref.pixelShuffle(ref.repeatInterleave(x, B, Cx, H * W, rep), B, C, H, W, r);
      return accumulate ? shuffled.map((v, i) => v + base[i]) : shuffled;
    },
  });
}
for (const r of [2, 3]) {
  const [B, C, H, W] = [2, 3, 5, 7];
  const x = rand(B * C * r * r * H * W, 71 + r);
  cases.push({
    name: `pixelShuffle r${r}`,
    tol: 0,
    run: (be) => withTensors(be, (mk) => be.pixelShuffle(mk([B, C * r * r, H, W], x), r)),
    ref: () => ref.pixelShuffle(x, B, C, H, W, r),
  });
  const xu = rand(B * C * H * r * W * r, 73 + r);
  cases.push({
    name: `pixelUnshuffle r${r}`,
    tol: 0,
    run: (be) => withTensors(be, (mk) => be.pixelUnshuffle(mk([B, C, H * r, W * r], xu), r)),
    ref: () => ref.pixelUnshuffle(xu, B, C, H * r, W * r, r),
  });
}

// ---- activations (n not a multiple of any width; includes |x| < 0.02 and large |x|)
for (const act of ['relu', 'silu', 'gelu-tanh'] as const) {
  const x = rand(1003, 81, -12, 12);
  for (let i = 0; i < 40; i++) x[i] = (i - 20) * 0.001;
  cases.push({
    name: `activation ${act}`,
    tol: 1e-6,
    run: (be) => withTensors(be, (mk) => be.activation(mk([1003], x), act)),
    ref: () => Float64Array.from(x, (v) => ref.act(v, act)),
  });
}

// ---- RoPE (Gemma rotate-half), default and explicit positions, in place
{
  const [B, L, H, D] = [2, 11, 3, 10];
  const x = rand(B * L * H * D, 91);
  const positions = Int32Array.from({ length: L }, (_, i) => 3 * i + 1);
  cases.push({
    name: 'rope default positions',
    tol: 1e-6,
    run: (be) => withTensors(be, (mk) => be.rope(mk([B, L, H, D], x))),
    ref: () => ref.rope(x, [B, L, H, D], undefined, 10000),
  });
  cases.push({
    name: 'rope explicit positions, in place, theta 500',
    tol: 1e-6,
    run: (be) =>
      withTensors(be, (mk) => {
        const t = mk([B, L, H, D], x);
        return be.rope(t, { positions: mk([L], positions, 'i32'), theta: 500, out: t });
      }),
    ref: () => ref.rope(x, [B, L, H, D], positions, 500),
  });
}

const { targets, skipped } = await kernelTargets();
afterAll(() => {
  for (const b of new Set(targets.map((t) => t.backend))) b.dispose();
});

const refs = new Map<Case, Float64Array>();
const reference = (c: Case) => {
  if (!refs.has(c)) refs.set(c, c.ref());
  return refs.get(c)!;
};

for (const s of skipped) it.skip(`${s.label}: ${s.reason}`);

describe.each(targets)('$label', ({ backend, variant }) => {
  it.each(cases)('$name', async (c) => {
    backend.setVariant(variant);
    const err = relError(await c.run(backend), reference(c));
    expect(err).toBeLessThanOrEqual(c.tol);
  });
});

describe('native and wasm agree', () => {
  const cpu = targets.find((t) => t.backend.name === 'cpu' && t.variant === t.backend.info.variants.at(-1));
  const wasm = targets.find((t) => t.label === 'wasm/wasm-simd128');
  it.skipIf(!cpu || !wasm).each(cases)('$name', async (c) => {
    cpu!.backend.setVariant(cpu!.variant);
    wasm!.backend.setVariant('wasm-simd128');
    const a = await c.run(cpu!.backend);
    const b = await c.run(wasm!.backend);
    // both are within tol of the float64 reference; to each other within twice that (exact ops: equal)
    expect(relError(a, Float64Array.from(b))).toBeLessThanOrEqual(2 * c.tol);
  });
});

describe('thread count', () => {
  const cpu = targets.find((t) => t.backend.name === 'cpu' && t.variant === t.backend.info.variants.at(-1));
  // the Winograd convolution sizes its tile chunks by the thread count, and a GEMM on prepacked weights splits
  // M into ranges claimed at run time: the sums must not depend on either
  // (as do attention's query blocks and linear attention's head groups, claimed the same way)
  const scheduled = cases.filter((c) => ['conv2d [2,37,29,43]', 'conv2d [1,300,33,34]', 'linear 500x300x70 packed', 'attention causal window 100', 'linearAttention [2,77,13,20]'].some((n) => c.name.startsWith(n)));
  it.skipIf(!cpu).each(scheduled)('$name: 1 and 2 threads give the same bits', async (c) => {
    const be = cpu!.backend;
    be.setVariant(cpu!.variant);
    const threads = be.info.threads;
    try {
      be.setThreads(1);
      const one = await c.run(be);
      be.setThreads(2);
      expect(await c.run(be)).toEqual(one);
    } finally {
      be.setThreads(threads);
    }
  });
});
