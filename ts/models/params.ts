/** Loading a component's weights into backend tensors: every expected key and shape is checked against the
 * file headers before any tensor data is read. Matrices keep their stored dtype (fp32/fp16/bf16, read by
 * the kernels directly); vectors (biases, norm weights, modulation tables) are decoded to fp32. */
import { basename } from 'node:path';

import type { Backend } from '../backends/backend.js';
import { SanaError } from '../errors.js';
import type { ConfigReader } from '../io/config.js';
import type { JsonValue } from '../io/json.js';
import type { WeightStore } from '../io/weights.js';
import { decode, encode, type DType } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Precision, PrecisionChoice, PrecisionDecision } from './precision.js';

export interface LoadOptions {
  /** load `<base>.<variant>.safetensors` (e.g. "fp16", "bf16") */
  variant?: string;
  /** reduced-precision mode: hold fp32 checkpoint matrices as bf16 or f16 (half the memory) */
  weightDtype?: 'bf16' | 'f16';
  /** called after each tensor is read with the bytes it took in its file */
  onBytesRead?: (bytes: number) => void;
  /** config keys replaced before the model is built (golden cases use this) */
  configOverrides?: Record<string, JsonValue>;
  /** compute precision (ts/models/precision.ts; default 'auto') */
  precision?: PrecisionChoice;
}

export interface ParamSpec {
  name: string;
  shape: number[];
  /** decoded to f32 regardless of the stored dtype (biases, norms, tables) */
  vector?: boolean;
  /** the config values that set this shape, for messages (e.g. "num_attention_heads = 2, attention_head_dim = 4") */
  from?: string;
  /** weights one fused kernel reads together, in one dtype: stored in mixed dtypes (merged or LoRA-fused
   * files), they are held as fp32 */
  group?: string;
}

const STORED: Record<string, DType | undefined> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

const CHUNK = 1 << 20; // elements per conversion chunk: converting never holds a second copy of a tensor

/** Reads a tensor in chunks and converts it into a new backend tensor of another dtype. f16 tops out at
 * 65504: a tensor beyond it is kept as fp32 (and noted) rather than turning into Inf. */
function convertInto(backend: Backend, store: WeightStore, s: ParamSpec, stored: DType, want: DType, notes: string[]): Tensor {
  const size = s.shape.reduce((a, b) => a * b, 1);
  const srcBytes = stored === 'f32' ? 4 : 2;
  const chunk = (from: number, n: number): Float32Array => {
    const raw = new Uint8Array(n * srcBytes);
    store.readInto(s.name, raw, from * srcBytes);
    return decode(stored === 'f32' ? new Float32Array(raw.buffer) : new Uint16Array(raw.buffer), stored);
  };
  if (want === 'f16') {
    for (let i = 0; i < size; i += CHUNK)
      if (chunk(i, Math.min(CHUNK, size - i)).some((v) => Math.abs(v) > 65504)) {
        notes.push(`${s.name} exceeds the f16 range and stays fp32`);
        want = 'f32';
        break;
      }
  }
  const t = backend.empty(s.shape, want, 'weight');
  try {
    for (let i = 0; i < size; i += CHUNK) {
      const n = Math.min(CHUNK, size - i);
      t.data.set(encode(chunk(i, n), want), i);
    }
  } catch (e) {
    t.dispose();
    throw e;
  }
  return t;
}

/** Holds every group whose members ended up in different dtypes (as stored, or an f16 conversion that
 * kept one tensor fp32) as fp32, so the fused kernel that reads them together can run. */
function unifyGroups(backend: Backend, specs: ParamSpec[], tensors: Map<string, Tensor>, notes: string[]): void {
  const groups = new Map<string, string[]>();
  for (const s of specs) if (s.group) groups.set(s.group, [...(groups.get(s.group) ?? []), s.name]);
  for (const [group, names] of groups) {
    const dtypes = new Set(names.map((n) => tensors.get(n)!.dtype));
    if (dtypes.size < 2) continue;
    for (const n of names) {
      const t = tensors.get(n)!;
      if (t.dtype === 'f32') continue;
      tensors.set(n, backend.tensor(t.shape, 'f32', t.toFloat32(), 'weight'));
      t.dispose();
    }
    notes.push(`${group}: weights in mixed dtypes (${[...dtypes].join(', ')}) are held as fp32 (one fused kernel reads them together)`);
  }
}

export class Params {
  /** the precision the model runs in; with bf16, GEMMs on bf16 weights take the fast bf16 path */
  precision: PrecisionDecision = { precision: 'fp32', reason: 'requested' };

  private constructor(
    private readonly tensors: Map<string, Tensor>,
    /** tensors of the file the model does not use (diffusers warns about these too) */
    readonly unused: string[],
    /** precision decisions worth a warning */
    readonly notes: string[],
  ) {}

  /**
   * @param weightDtype keep matrices as stored (undefined), or hold them as bf16 / f16 (reduced-precision
   *   mode: half the memory of fp32 checkpoints; vectors stay fp32).
   */
  static load(backend: Backend, store: WeightStore, specs: ParamSpec[], component: string, weightDtype?: 'bf16' | 'f16', onBytesRead?: (bytes: number) => void): Params {
    const where = `${component} (${basename(store.dir)})`;
    for (const s of specs) {
      const info = store.info(s.name);
      if (!info) throw new SanaError('ERR_SANA_MODEL_FORMAT', `${where}: missing tensor ${s.name} (expected shape ${JSON.stringify(s.shape)}): ${store.describeMissing(s.name)}`);
      if (info.shape.length !== s.shape.length || info.shape.some((d, i) => d !== s.shape[i]))
        throw new SanaError('ERR_SANA_MODEL_FORMAT', `${where}: tensor ${s.name} has shape ${JSON.stringify(info.shape)} but the config needs ${JSON.stringify(s.shape)}${s.from ? ` (from ${s.from} in config.json)` : ''}`);
      if (!STORED[info.dtype]) throw new SanaError('ERR_SANA_MODEL_FORMAT', `${where}: tensor ${s.name} has dtype ${info.dtype}; weights must be F32, F16 or BF16`);
    }
    const wanted = new Set(specs.map((s) => s.name));
    const tensors = new Map<string, Tensor>();
    const notes: string[] = [];
    try {
      for (const s of specs) {
        const stored = STORED[store.info(s.name)!.dtype]!;
        const want = s.vector ? 'f32' : (weightDtype ?? stored);
        if (want === stored) {
          // the common case: file bytes go straight into the tensor's memory
          const t = backend.empty(s.shape, stored, 'weight');
          tensors.set(s.name, t);
          const d = t.data;
          store.readInto(s.name, new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
        } else {
          tensors.set(s.name, convertInto(backend, store, s, stored, want, notes));
        }
        onBytesRead?.(store.info(s.name)!.byteLength);
      }
      unifyGroups(backend, specs, tensors, notes);
    } catch (e) {
      for (const t of tensors.values()) t.dispose();
      throw e;
    }
    return new Params(tensors, store.names().filter((n) => !wanted.has(n)), notes);
  }

  /** Runs in `precision` instead of the loaded one until the returned function is called (one generation):
   * fp32 arithmetic works on any weights; bf16 needs the model loaded in bf16. */
  override(precision: Precision, component: string): () => void {
    const loaded = this.precision;
    if (precision === loaded.precision) return () => {};
    if (precision === 'bf16')
      throw new SanaError('ERR_SANA_INVALID_OPTION', `${component}: Expected precision fp32 or auto for this pipeline (loaded in fp32: ${loaded.reason}; load it with precision 'bf16' for bf16 compute) but received bf16`);
    this.precision = { precision: 'fp32', reason: 'requested for this generation (fp32 arithmetic on the bf16 weights)' };
    return () => {
      this.precision = loaded;
    };
  }

  /** Whether a GEMM on weight w runs on the bf16 engine (bf16 precision and a bf16 weight). */
  fastBf16(w: Tensor): boolean {
    return this.precision.precision === 'bf16' && w.dtype === 'bf16';
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  get(name: string): Tensor {
    const t = this.tensors.get(name);
    if (!t) throw new SanaError('ERR_SANA_NATIVE', `internal: parameter ${name} was not loaded`);
    return t;
  }

  /**
   * Concatenates weights along their first dimension into one tensor `name` of `shape` and drops the parts:
   * e.g. q, k and v into one projection, one GEMM instead of three. The parts must share a spec group (one
   * dtype); call it before packLinear.
   */
  fuse(backend: Backend, name: string, parts: string[], shape: number[]): void {
    const tensors = parts.map((n) => this.get(n));
    const dtype = tensors[0].dtype;
    if (tensors.some((t) => t.dtype !== dtype || t.layout !== 'dense'))
      throw new SanaError('ERR_SANA_NATIVE', `internal: ${parts.join(', ')} are not dense tensors of one dtype (put them in one spec group)`);
    const size = tensors.reduce((n, t) => n + t.size, 0);
    const data = dtype === 'f32' ? new Float32Array(size) : new Uint16Array(size);
    let at = 0;
    for (const t of tensors) {
      data.set(t.data, at);
      at += t.size;
    }
    this.tensors.set(name, backend.tensorFromRaw(shape, dtype, data, 'weight'));
    for (const n of parts) {
      this.tensors.get(n)!.dispose();
      this.tensors.delete(n);
    }
  }

  /** Repacks the fp32 ones among these linear / 1×1-conv weights for the GEMM (same memory, once). */
  packLinear(backend: Backend, names: string[]): void {
    for (const name of names) {
      const t = this.get(name);
      if (t.dtype !== 'f32') continue;
      this.tensors.set(name, backend.packWeight(t));
      t.dispose();
    }
  }

  /** What loading noticed, as diffusers logs it: precision decisions, checkpoint tensors the model does
   * not use (except `expectedUnused`, e.g. a tied lm_head) and config keys it does not know. */
  warnings(cfg: ConfigReader, expectedUnused: string[] = []): string[] {
    return [
      ...this.notes,
      ...this.unused.filter((n) => !expectedUnused.includes(n)).map((n) => `unused tensor ${n} in the checkpoint`),
      ...cfg.unusedKeys().map((k) => `unknown config key ${k} ignored`),
    ];
  }

  dispose(): void {
    for (const t of this.tensors.values()) t.dispose();
    this.tensors.clear();
  }
}
