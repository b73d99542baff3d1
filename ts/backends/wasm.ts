import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { packageRoot } from '../paths.js';
import type { Storage } from '../tensor/tensor.js';
import { KernelBackend } from './kernel-backend.js';
import type { OpDescription, RawKernels } from './raw-kernels.js';

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
const ARG_SLOTS = 64;

async function instantiate(): Promise<WasmModule> {
  const dir = join(packageRoot(), 'wasm', 'dist');
  const factory = (await import(pathToFileURL(join(dir, 'sana-kernels.mjs')).href)).default as (o: object) => Promise<WasmModule>;
  // Debian's emscripten glue cannot fetch its .wasm under Node: hand it the bytes.
  return factory({ wasmBinary: readFileSync(join(dir, 'sana-kernels.wasm')) });
}

function kernelError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

/** RawKernels over the wasm module: tensor addresses are wasm heap offsets; the argument slots live in the
 * heap too, so a call is one sana_call. */
class WasmKernels implements RawKernels {
  readonly ctx: number;
  readonly ops: OpDescription[];
  private readonly slots: number;
  private slotView: Float64Array | null = null;

  constructor(private readonly m: WasmModule) {
    this.ctx = m._sana_ctx_create(1);
    this.slots = m._malloc(ARG_SLOTS * 8);
    if (!this.ctx || !this.slots) throw kernelError('wasm: could not create a context', 'ERR_SANA_OUT_OF_MEMORY');
    this.ops = Array.from({ length: m._sana_op_count() }, (_, i) => ({ name: m.UTF8ToString(m._sana_op_name(i)), signature: m.UTF8ToString(m._sana_op_signature(i)) }));
  }

  private check(status: number): void {
    if (status !== 0) throw kernelError(this.m.UTF8ToString(this.m._sana_ctx_last_error(this.ctx)), CODES[status] ?? 'ERR_SANA_NATIVE');
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
    if (i < 0) throw kernelError(`setVariant: Expected one of ref, wasm-simd128 for variant but received ${variant}`, 'ERR_SANA_INVALID_ARGUMENT');
    this.check(this.m._sana_ctx_set_variant(this.ctx, i));
  }
  args(): Float64Array {
    if (!this.slotView || this.slotView.buffer !== this.m.HEAPU8.buffer) this.slotView = new Float64Array(this.m.HEAPU8.buffer, this.slots, ARG_SLOTS);
    return this.slotView;
  }
  call(op: number, nargs: number): void {
    this.check(this.m._sana_call(this.ctx, op, this.slots, nargs));
  }

  destroy(): void {
    this.m._free(this.slots);
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

  protected allocStorage(bytes: number): Storage {
    const m = this.m;
    const ptr = m._malloc(bytes);
    if (!ptr) throw kernelError(`wasm: could not allocate ${bytes} bytes (the wasm heap is limited to 4 GB)`, 'ERR_SANA_OUT_OF_MEMORY');
    // the heap's ArrayBuffer is replaced when it grows: asked for each time
    return { location: 'host', handle: ptr, bytes, host: () => ({ buffer: m.HEAPU8.buffer, byteOffset: ptr }), free: () => m._free(ptr) };
  }

  protected releaseContext(): void {
    this.kernels.destroy();
  }
}
