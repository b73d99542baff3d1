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
      t.write(encode(chunk(i, n), want), i);
    }
  } catch (e) {
    t.dispose();
    throw e;
  }
  return t;
}

/** File bytes into a tensor's memory: straight in for a host tensor, through CHUNK-element uploads for a
 * device one (never a host copy of the whole tensor). */
function readIntoTensor(store: WeightStore, name: string, t: Tensor): void {
  if (t.location === 'host') {
    const d = t.data;
    store.readInto(name, new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    return;
  }
  const bytes = t.dtype === 'f32' ? 4 : 2;
  for (let i = 0; i < t.size; i += CHUNK) {
    const n = Math.min(CHUNK, t.size - i);
    const raw = new Uint8Array(n * bytes);
    store.readInto(name, raw, i * bytes);
    t.write(t.dtype === 'f32' ? new Float32Array(raw.buffer) : new Uint16Array(raw.buffer), i);
  }
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

/** Where a declared GEMM matrix or a vector lives after loading: in tensor `tensor` (itself, or the fusion that
 * took it in) from row `row`, `rows` × `cols` (a 1×1 conv [out, in, 1, 1] counts as [out, in]; a vector as
 * [n, 1]). */
export interface MatrixOrigin {
  kind: 'matrix' | 'vector';
  tensor: string;
  row: number;
  rows: number;
  cols: number;
}

/** A weight's values row-major in fp32 (packed32: panels of 32 output rows, k-major, the last one padded; bf16
 * as k-pairs with the columns padded to a multiple of 32: as sana_pack_weight writes them). */
function denseValues(t: Tensor): Float32Array {
  const rows = t.shape[0];
  const cols = t.size / rows;
  if (t.layout !== 'packed32') return t.toFloat32();
  const values = new Float32Array(rows * cols);
  const packed = t.toFloat32();
  const at = t.dtype === 'bf16'
    ? (r: number, c: number) => (r >> 5) * 32 * (Math.ceil(cols / 32) * 32) + (c >> 1) * 64 + (r & 31) * 2 + (c & 1)
    : (r: number, c: number) => ((r >> 5) * cols + c) * 32 + (r & 31);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) values[r * cols + c] = packed[at(r, c)];
  return values;
}

export class Params {
  /** the precision the model runs in; with bf16, GEMMs on bf16 weights take the fast bf16 path */
  precision: PrecisionDecision = { precision: 'fp32', reason: 'requested' };
  /** declared GEMM matrices and vectors (checkpoint names) → where they live now; set by Weights.load */
  readonly origins = new Map<string, MatrixOrigin>();
  /** the loaded tensors that adapted copies replace (adapt), kept to restore them bit for bit */
  private readonly base = new Map<string, Tensor>();

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
          readIntoTensor(store, s.name, t);
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
      data.set(t.readSync(), at);
      at += t.size;
    }
    this.tensors.set(name, backend.tensorFromRaw(shape, dtype, data, 'weight'));
    for (const n of parts) {
      this.tensors.get(n)!.dispose();
      this.tensors.delete(n);
    }
  }

  /** Repacks these linear / 1×1-conv weights for the GEMM (same memory, once): the fp32 and the bf16 ones (the
   * bf16 engine's panels, which fp32 arithmetic converts panel by panel with a shift per value). */
  packLinear(backend: Backend, names: string[]): void {
    for (const name of names) {
      const t = this.get(name);
      if (t.dtype !== 'f32' && t.dtype !== 'bf16') continue;
      this.tensors.set(name, backend.packWeight(t));
      t.dispose();
    }
  }

  /**
   * Replaces the tensors holding the declared matrices and vectors `names` by copies with Σ k·v of
   * `terms(name)` added (each v row-major [rows, cols]; each term's sum formed in float64 and rounded into fp32,
   * then into the tensor's dtype; repacked when the tensor is packed); tensors adapted before whose members are
   * all absent from `names` get their loaded tensor back, exactly. Terms are asked for one tensor at a time (a
   * model's worth of them would not fit in memory). All or nothing: on any failure the previous tensors stay.
   */
  adapt(backend: Backend, names: Iterable<string>, terms: (name: string) => { k: number; v: Float32Array }[]): void {
    const byTensor = new Map<string, string[]>();
    for (const name of names) {
      const o = this.origins.get(name);
      if (!o) throw new SanaError('ERR_SANA_NATIVE', `internal: ${name} is not a declared GEMM matrix or vector`);
      byTensor.set(o.tensor, [...(byTensor.get(o.tensor) ?? []), name]);
    }
    const made = new Map<string, Tensor>();
    try {
      for (const [name, members] of byTensor) made.set(name, this.merged(backend, this.base.get(name) ?? this.get(name), members, terms));
    } catch (e) {
      for (const t of made.values()) t.dispose();
      throw e;
    }
    for (const [name, base] of [...this.base]) {
      if (made.has(name)) continue;
      this.tensors.get(name)!.dispose();
      this.tensors.set(name, base);
      this.base.delete(name);
    }
    for (const [name, t] of made) {
      const current = this.tensors.get(name)!;
      if (this.base.has(name)) current.dispose();
      else this.base.set(name, current);
      this.tensors.set(name, t);
    }
  }

  /** The current values of a declared matrix or vector (adapters included), row-major [rows, cols]. */
  values(name: string): Float32Array {
    const o = this.origins.get(name);
    if (!o) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a declared matrix or vector name but received ${JSON.stringify(name)}`);
    const cols = o.cols;
    return denseValues(this.get(o.tensor)).slice(o.row * cols, (o.row + o.rows) * cols);
  }

  private merged(backend: Backend, base: Tensor, members: string[], terms: (name: string) => { k: number; v: Float32Array }[]): Tensor {
    const values = denseValues(base);
    const cols = base.size / base.shape[0];
    for (const name of members) {
      const o = this.origins.get(name)!;
      const at = o.row * cols;
      for (const { k, v } of terms(name)) for (let i = 0; i < v.length; i++) values[at + i] += k * v[i];
    }
    const dense = backend.tensorFromRaw(base.shape, base.dtype, encode(values, base.dtype), 'weight');
    if (base.layout !== 'packed32') return dense;
    try {
      return backend.packWeight(dense);
    } finally {
      dense.dispose();
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
    for (const t of [...this.tensors.values(), ...this.base.values()]) t.dispose();
    this.tensors.clear();
    this.base.clear();
  }
}
