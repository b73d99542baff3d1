import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { packageRoot } from '../paths.js';
import type { DType } from '../tensor/dtype.js';
import type { Storage } from '../tensor/tensor.js';
import { KernelBackend, storageBytes, type RawKernels } from './kernel-backend.js';

/** The emscripten module of wasm/dist (functions of native/include/sana_ops.h plus malloc/free). */
interface WasmModule {
  HEAPU8: Uint8Array;
  UTF8ToString(ptr: number): string;
  _malloc(bytes: number): number;
  _free(ptr: number): void;
  [fn: `_sana_${string}`]: (...args: number[]) => number;
}

const CODES = ['OK', 'ERR_SANA_INVALID_ARGUMENT', 'ERR_SANA_OUT_OF_MEMORY', 'ERR_SANA_UNSUPPORTED', 'ERR_SANA_NATIVE'];
const VARIANTS = ['ref', 'baseline', 'avx2', 'avx512', 'avx512bf16', 'wasm-simd128', 'amx-bf16'];
const VIEW_BYTES = 20; // sana_view4 on wasm32: pointer + 4 × ptrdiff_t
const PARAMS_BYTES = 44; // sana_attention_params on wasm32

async function instantiate(): Promise<WasmModule> {
  const dir = join(packageRoot(), 'wasm', 'dist');
  const factory = (await import(pathToFileURL(join(dir, 'sana-kernels.mjs')).href)).default as (o: object) => Promise<WasmModule>;
  // Debian's emscripten glue cannot fetch its .wasm under Node: hand it the bytes.
  return factory({ wasmBinary: readFileSync(join(dir, 'sana-kernels.wasm')) });
}

/** RawKernels over the wasm module: typed arrays that are views of the wasm heap are passed as pointers. */
class WasmKernels implements RawKernels {
  readonly ctx: number;
  private readonly scratch: number; // 4 views + attention params

  constructor(private readonly m: WasmModule) {
    this.ctx = m._sana_ctx_create(1);
    this.scratch = m._malloc(4 * VIEW_BYTES + PARAMS_BYTES);
    if (!this.ctx || !this.scratch) throw Object.assign(new Error('wasm: could not create a context'), { code: 'ERR_SANA_OUT_OF_MEMORY' });
  }

  private check(status: number): void {
    if (status !== 0) {
      const message = this.m.UTF8ToString(this.m._sana_ctx_last_error(this.ctx));
      throw Object.assign(new Error(message), { code: CODES[status] ?? 'ERR_SANA_NATIVE' });
    }
  }

  private ptr(a: ArrayBufferView | null): number {
    if (a === null) return 0;
    if (a.buffer !== this.m.HEAPU8.buffer) throw Object.assign(new Error('wasm: buffer is not in the wasm heap'), { code: 'ERR_SANA_INVALID_ARGUMENT' });
    return a.byteOffset;
  }

  private writeView(slot: number, a: Float32Array, offset: number, sb: number, sn: number, sh: number, sd: number): number {
    const addr = this.scratch + slot * VIEW_BYTES;
    const i32 = new Int32Array(this.m.HEAPU8.buffer, addr, 5);
    i32.set([this.ptr(a) + 4 * offset, sb, sn, sh, sd]);
    return addr;
  }

  info() {
    return {
      variant: VARIANTS[this.m._sana_ctx_variant(this.ctx)],
      threads: this.m._sana_ctx_threads(this.ctx),
      variants: VARIANTS.map((name, i) => ({ name, supported: !!this.m._sana_variant_supported(i) })),
    };
  }
  setThreads(threads: number): void {
    this.check(this.m._sana_ctx_set_threads(this.ctx, threads));
  }
  setVariant(variant: string): void {
    const i = VARIANTS.indexOf(variant);
    if (i < 0) throw Object.assign(new Error(`setVariant: Expected one of ref, wasm-simd128 for variant but received ${variant}`), { code: 'ERR_SANA_INVALID_ARGUMENT' });
    this.check(this.m._sana_ctx_set_variant(this.ctx, i));
  }
  packWeight(w: Float32Array, N: number, K: number, packed: Float32Array): void {
    this.check(this.m._sana_pack_weight(this.ctx, this.ptr(w), N, K, this.ptr(packed)));
  }
  linear(x: Float32Array, M: number, K: number, w: ArrayBufferView, dt: number, N: number, bias: Float32Array | null, act: number, flags: number, y: Float32Array): void {
    this.check(this.m._sana_linear(this.ctx, this.ptr(x), M, K, this.ptr(w), dt, N, this.ptr(bias), act, flags, this.ptr(y)));
  }
  conv2d(x: Float32Array, B: number, Cin: number, H: number, W: number, w: ArrayBufferView, dt: number, Cout: number, kh: number, kw: number,
    stride: number, pad: number, groups: number, bias: Float32Array | null, act: number, y: Float32Array): void {
    this.check(this.m._sana_conv2d(this.ctx, this.ptr(x), B, Cin, H, W, this.ptr(w), dt, Cout, kh, kw, stride, pad, groups, this.ptr(bias), act, this.ptr(y)));
  }
  linearAttention(...a: (Float32Array | number)[]): void {
    const v = (slot: number, i: number) => this.writeView(slot, a[i] as Float32Array, ...(a.slice(i + 1, i + 6) as [number, number, number, number, number]));
    const [q, k, vv, o] = [v(0, 0), v(1, 6), v(2, 12), v(3, 18)];
    const [B, N, H, D, eps] = a.slice(24) as number[];
    this.check(this.m._sana_linear_attention(this.ctx, q, k, vv, o, B, N, H, D, eps));
  }
  attention(...a: (Float32Array | number | null)[]): void {
    const v = (slot: number, i: number) => this.writeView(slot, a[i] as Float32Array, ...(a.slice(i + 1, i + 6) as [number, number, number, number, number]));
    const [q, k, vv] = [v(0, 0), v(1, 6), v(2, 12)];
    const bias = this.ptr(a[18] as Float32Array | null);
    const o = v(3, 19);
    const [batch, lq, lk, hq, hkv, d, dv, scale, softcap, causal, window] = a.slice(25) as number[];
    const p = this.scratch + 4 * VIEW_BYTES;
    new Int32Array(this.m.HEAPU8.buffer, p, 7).set([batch, lq, lk, hq, hkv, d, dv]);
    new Float32Array(this.m.HEAPU8.buffer, p + 28, 2).set([scale, softcap]);
    new Int32Array(this.m.HEAPU8.buffer, p + 36, 2).set([causal, window]);
    this.check(this.m._sana_attention(this.ctx, q, k, vv, bias, p, o));
  }
  glumbconv(x: Float32Array, B: number, H: number, W: number, C: number, wi: ArrayBufferView, bi: Float32Array | null, wd: ArrayBufferView,
    bd: Float32Array | null, wp: ArrayBufferView, dt: number, F: number, Cout: number, flags: number, y: Float32Array): void {
    this.check(this.m._sana_glumbconv(this.ctx, this.ptr(x), B, H, W, C, this.ptr(wi), this.ptr(bi), this.ptr(wd), this.ptr(bd), this.ptr(wp), dt, F, Cout, flags, this.ptr(y)));
  }
  layerNorm(x: Float32Array, rows: number, dim: number, eps: number, scale: Float32Array | null, shift: Float32Array | null, rpb: number, y: Float32Array): void {
    this.check(this.m._sana_layer_norm(this.ctx, this.ptr(x), rows, dim, eps, this.ptr(scale), this.ptr(shift), rpb, this.ptr(y)));
  }
  residual(x: Float32Array, y: Float32Array, rows: number, dim: number, gate: Float32Array | null, rpb: number, out: Float32Array): void {
    this.check(this.m._sana_residual(this.ctx, this.ptr(x), this.ptr(y), rows, dim, this.ptr(gate), rpb, this.ptr(out)));
  }
  mul(x: Float32Array, y: Float32Array, n: number, out: Float32Array): void {
    this.check(this.m._sana_mul(this.ctx, this.ptr(x), this.ptr(y), n, this.ptr(out)));
  }
  rmsNorm(x: Float32Array, rows: number, dim: number, w: Float32Array | null, b: Float32Array | null, eps: number, mode: number, y: Float32Array): void {
    this.check(this.m._sana_rms_norm(this.ctx, this.ptr(x), rows, dim, this.ptr(w), this.ptr(b), eps, mode, this.ptr(y)));
  }
  rmsNormChannels(x: Float32Array, B: number, C: number, HW: number, w: Float32Array | null, b: Float32Array | null, eps: number, y: Float32Array): void {
    this.check(this.m._sana_rms_norm_channels(this.ctx, this.ptr(x), B, C, HW, this.ptr(w), this.ptr(b), eps, this.ptr(y)));
  }
  pixelShuffle(x: Float32Array, B: number, C: number, H: number, W: number, r: number, y: Float32Array): void {
    this.check(this.m._sana_pixel_shuffle(this.ctx, this.ptr(x), B, C, H, W, r, this.ptr(y)));
  }
  pixelUnshuffle(x: Float32Array, B: number, C: number, H: number, W: number, r: number, y: Float32Array): void {
    this.check(this.m._sana_pixel_unshuffle(this.ctx, this.ptr(x), B, C, H, W, r, this.ptr(y)));
  }
  upsampleNearest2x(x: Float32Array, B: number, C: number, H: number, W: number, y: Float32Array): void {
    this.check(this.m._sana_upsample_nearest2x(this.ctx, this.ptr(x), B, C, H, W, this.ptr(y)));
  }
  activation(x: Float32Array, n: number, act: number, y: Float32Array): void {
    this.check(this.m._sana_activation(this.ctx, this.ptr(x), n, act, this.ptr(y)));
  }
  rope(...a: (Float32Array | Int32Array | number | null)[]): void {
    const v = (slot: number, i: number) => this.writeView(slot, a[i] as Float32Array, ...(a.slice(i + 1, i + 6) as [number, number, number, number, number]));
    const [x, o] = [v(0, 0), v(1, 6)];
    const [B, L, H, D] = a.slice(12, 16) as number[];
    const positions = a[16] as Int32Array | null;
    let pos = 0;
    if (positions) {
      pos = this.m._malloc(positions.byteLength);
      if (!pos) throw Object.assign(new Error('rope: out of wasm memory'), { code: 'ERR_SANA_OUT_OF_MEMORY' });
      new Int32Array(this.m.HEAPU8.buffer, pos, positions.length).set(positions);
    }
    try {
      this.check(this.m._sana_rope(this.ctx, x, B, L, H, D, pos, a[17] as number, o));
    } finally {
      if (pos) this.m._free(pos);
    }
  }

  destroy(): void {
    this.m._free(this.scratch);
    this.m._sana_ctx_destroy(this.ctx);
  }
}

/** The WASM SIMD128 build of the same kernels: single-threaded, 4 GB heap, runs wherever Node runs. */
export class WasmBackend extends KernelBackend {
  readonly name = 'wasm' as const;

  private constructor(
    private readonly m: WasmModule,
    private readonly kernels: WasmKernels,
  ) {
    super(kernels);
  }

  static async create(): Promise<WasmBackend> {
    const m = await instantiate();
    return new WasmBackend(m, new WasmKernels(m));
  }

  protected allocStorage(dtype: DType, size: number): Storage {
    const bytes = storageBytes(dtype, size);
    const m = this.m;
    const ptr = m._malloc(bytes);
    if (!ptr) throw Object.assign(new Error(`wasm: could not allocate ${bytes} bytes (the wasm heap is limited to 4 GB)`), { code: 'ERR_SANA_OUT_OF_MEMORY' });
    let view: Float32Array | Uint16Array | null = null;
    return {
      // views die when the heap grows (its ArrayBuffer is replaced): re-create on demand
      array: () => {
        if (!view || view.buffer !== m.HEAPU8.buffer) view = dtype === 'f32' ? new Float32Array(m.HEAPU8.buffer, ptr, size) : new Uint16Array(m.HEAPU8.buffer, ptr, size);
        return view;
      },
      free: () => m._free(ptr),
    };
  }

  protected releaseContext(): void {
    this.kernels.destroy();
  }
}
