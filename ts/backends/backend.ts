import { SanaError } from '../errors.js';
import type { DType, TensorArray } from '../tensor/dtype.js';
import type { Tensor, View4 } from '../tensor/tensor.js';
import type { CacheCounters, Usage } from './block-cache.js';

/** Every backend this package knows (ts/backends/registry.ts registers each with its probe and priority). */
export const BACKEND_NAMES = ['cuda', 'cpu', 'wasm'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
export type Activation = 'none' | 'relu' | 'silu' | 'gelu-tanh';

export interface BackendInfo {
  name: BackendName;
  /** Kernel variant in use (ref, baseline, avx2, avx512, avx512bf16, wasm-simd128). */
  variant: string;
  /** Variants this machine can run, best last. */
  variants: string[];
  threads: number;
  /** The device of a device backend ('cuda:0 (NVIDIA H100 80GB HBM3)'). */
  device?: string;
  /** Why this backend was chosen and why others were skipped (filled by the registry). */
  selection?: { requested: string; skipped: { name: BackendName; reason: string }[] };
}

export interface LinearOptions {
  bias?: Tensor;
  act?: Activation;
  /** bf16 weights only: round activations to bf16 and use bf16 dot products (fp32 accumulation). */
  fastBf16?: boolean;
  out?: Tensor;
}
export interface Conv2dOptions {
  bias?: Tensor;
  stride?: number;
  padding?: number;
  groups?: number;
  /** 2: convolve x's nearest-neighbour ×2 upsampling (groups 1 only), read from x without making the 4× map */
  upsample?: 1 | 2;
  act?: Activation;
  out?: Tensor;
}
export interface AttentionOptions {
  /** Additive bias per key, [B, Lk] (e.g. −10000 on padded text tokens). */
  keyBias?: Tensor;
  /** Logit scale; default 1/sqrt(headDim). */
  scale?: number;
  /** softcap·tanh(logits/softcap) before the bias (Gemma-2); 0 or undefined = off. */
  softcap?: number;
  causal?: boolean;
  /** Sliding window: keys with query − key ≥ window are masked. */
  window?: number;
  out?: View4 | Tensor;
}
export interface GlumbconvWeights {
  /** conv_inverted [2F, C, 1, 1] (or [2F, C]) and its bias [2F] */
  wInverted: Tensor;
  bInverted?: Tensor;
  /** conv_depth [2F, 1, 3, 3] and its bias [2F] */
  wDepth: Tensor;
  bDepth?: Tensor;
  /** conv_point [Cout, F, 1, 1] (or [Cout, F]), no bias */
  wPoint: Tensor;
}

/** Tensor memory a backend holds now (ts/backends/block-cache.ts): live tensors and their bytes (weights +
 * activations, by usage), freed activation blocks kept for reuse, the most live bytes at once, and how many
 * blocks were obtained from the system so far (a steady state adds none). */
export interface BackendMemory extends CacheCounters {
  bytes: number;
}

/** Time spent in one op (its C name) while profiling. */
export interface OpTiming {
  op: string;
  calls: number;
  ms: number;
}

/** One compute backend. Tensors belong to the backend that made them; ops check it. */
export interface Backend {
  readonly name: BackendName;
  readonly info: BackendInfo;
  /** why the registry chose this backend (set by createBackend) */
  selection?: BackendInfo['selection'];
  setThreads(threads: number): void;
  /** Selects a kernel variant by name (tests and benchmarks force each in turn). */
  setVariant(variant: string): void;

  /** A tensor of the given shape: filled from `data` (f32 values are encoded to f16/bf16) or zeroed.
   * `usage` 'weight' (model parameters: freed at once on dispose) or 'activation' (default: from the cache). */
  tensor(shape: readonly number[], dtype?: DType, data?: ArrayLike<number> | TensorArray, usage?: Usage): Tensor;
  /** A tensor from already-encoded storage words (Float32Array for f32, Uint16Array for f16/bf16). */
  tensorFromRaw(shape: readonly number[], dtype: DType, raw: TensorArray, usage?: Usage): Tensor;
  /** Allocated, contents unspecified (outputs). */
  empty(shape: readonly number[], dtype?: DType, usage?: Usage): Tensor;

  /** An fp32 linear weight [N, K] repacked once for the GEMM (no per-call packing); use it in place of w. */
  packWeight(w: Tensor): Tensor;
  linear(x: Tensor, w: Tensor, opts?: LinearOptions): Tensor;
  conv2d(x: Tensor, w: Tensor, opts?: Conv2dOptions): Tensor;
  linearAttention(q: View4 | Tensor, k: View4 | Tensor, v: View4 | Tensor, opts?: { eps?: number; out?: View4 | Tensor }): Tensor;
  attention(q: View4 | Tensor, k: View4 | Tensor, v: View4 | Tensor, opts?: AttentionOptions): Tensor;
  /** Mix-FFN over tokens x [B, height·width, C] → [B, height·width, Cout]. */
  glumbconv(x: Tensor, w: GlumbconvWeights, opts: { height: number; width: number; fastBf16?: boolean; out?: Tensor }): Tensor;
  /** LayerNorm without affine over the last dim; with scale/shift [nb, D] the adaLN modulation is fused. */
  layerNorm(x: Tensor, opts: { eps: number; scale?: Tensor; shift?: Tensor; out?: Tensor }): Tensor;
  /** out = x + gate ⊙ y (gate [nb, D] broadcast over each batch's rows; no gate: x + y); out may be x. */
  residual(x: Tensor, y: Tensor, opts?: { gate?: Tensor; out?: Tensor }): Tensor;
  /** out = x ⊙ y; out may be x or y. */
  mul(x: Tensor, y: Tensor, out?: Tensor): Tensor;
  rmsNorm(x: Tensor, opts: { eps: number; weight?: Tensor; bias?: Tensor; onePlusWeight?: boolean; out?: Tensor }): Tensor;
  /** Channel RMSNorm of an NCHW map [B, C, H, W]. */
  rmsNormChannels(x: Tensor, opts: { eps: number; weight?: Tensor; bias?: Tensor; out?: Tensor }): Tensor;
  /** torch pixel_shuffle of x [B, C·r²/repeat, H, W] with each channel repeated `repeat` times first
   * (repeat_interleave; default 1) into [B, C, H·r, W·r]; with `accumulate`, added to `out` (required then). */
  pixelShuffle(x: Tensor, r: number, opts?: { repeat?: number; accumulate?: boolean; out?: Tensor }): Tensor;
  pixelUnshuffle(x: Tensor, r: number, out?: Tensor): Tensor;
  /** out may be x (in place). */
  activation(x: Tensor, act: Activation, out?: Tensor): Tensor;
  /** Rotate-half RoPE on [B, L, heads, dim] (positions: an i32 tensor [L]; default 0..L−1); out may be x. */
  rope(x: View4 | Tensor, opts?: { positions?: Tensor; theta?: number; out?: View4 | Tensor }): Tensor;

  // glue ops: the arithmetic between the big ops, so that tensors stay where they live (sana_ops.h)
  /** out = a·x + b·y (y null: a·x), each product rounded to fp32 as torch does; out may be x or y. */
  axpby(a: number, x: Tensor, b: number, y: Tensor | null, out?: Tensor): Tensor;
  /** out = uncond + scale·(cond − uncond) (classifier-free guidance); out may be uncond or cond. */
  cfgCombine(uncond: Tensor, cond: Tensor, scale: number, out?: Tensor): Tensor;
  /** A [1] tensor holding the number of NaN/±Inf values of x (saturating at 2^24). */
  countNonFinite(x: Tensor, out?: Tensor): Tensor;
  /** adaLN chunks [K, B, D]: out[k, b] = table[k] + emb[b, k·D:(k+1)·D] (emb [B, K·D]), or with `shared`
   * table[k] + emb[b] (emb [B, D]). Chunk k is the contiguous slice(k·B·D, [B, D]). */
  adalnModulation(table: Tensor, emb: Tensor, opts?: { shared?: boolean; out?: Tensor }): Tensor;
  /** NCHW [B, C, H, W] → tokens [B, (H/p)·(W/p), p·p·C] (p = 1: the NCHW → tokens transpose). */
  patchify(x: Tensor, patch: number, out?: Tensor): Tensor;
  /** tokens [B, h·w, p·p·C] → NCHW [B, C, h·p, w·p], the inverse of patchify. */
  unpatchify(x: Tensor, opts: { height: number; width: number; patch: number; out?: Tensor }): Tensor;
  /** Copies src into dst: two tensors of one size in element order, or two views of one shape (concat,
   * split, crop, paste; a stride-0 source dim repeats). Returns dst's tensor. */
  copy(src: View4 | Tensor, dst: View4 | Tensor): Tensor;
  /** Rows of table [V, D] (stored dtype) for i32 ids [n], times scale: [n, D]. */
  embedding(table: Tensor, ids: Tensor, opts?: { scale?: number; out?: Tensor }): Tensor;
  /** Means of consecutive channel groups: [B, C, H, W] → [B, groups, H, W]. */
  groupMean(x: Tensor, groups: number, out?: Tensor): Tensor;
  /** EfficientViT normalisation: x [B, heads·(D+1), H, W] → [B, heads·D, H, W], row d of a head divided by
   * its row D plus eps. */
  evitNormalize(x: Tensor, heads: number, eps: number, out?: Tensor): Tensor;

  /** The tensor memory this backend holds now (every tensor it made that is not yet disposed) and at most. */
  memory(): BackendMemory;
  /** Starts (true: from zero) or stops timing every op call; profileReport() gives the totals by op, longest
   * first (bench:models prints them). */
  profile(on: boolean): void;
  profileReport(): OpTiming[];
  /** Resolves when every op issued so far has finished (host backends run ops synchronously: at once; a
   * device backend waits for its stream). Tensor.read() synchronises by itself. */
  synchronize(): Promise<void>;
  /** Most bytes of freed activation blocks kept for reuse (default 1 GiB, and never more than 256 MiB above the peak of live activations; 0 = none). */
  setCacheLimit(bytes: number): void;
  /** Releases the cached activation blocks now (e.g. after a one-off large decode). */
  trimCache(): void;

  /** Frees the backend's context; tensors already made stay valid until disposed. */
  dispose(): void;
}

/** Reads back the one-value non-finite count of t (the one host read a denoising step makes) and throws
 * ERR_SANA_NON_FINITE with `message` unless it is 0. */
export function throwIfNonFinite(be: Backend, t: Tensor, message: string): void {
  const flag = be.countNonFinite(t);
  try {
    if (flag.toFloat32()[0] !== 0) throw new SanaError('ERR_SANA_NON_FINITE', message);
  } finally {
    flag.dispose();
  }
}
