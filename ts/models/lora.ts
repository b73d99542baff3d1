/**
 * LoRA adapters for the transformer: a safetensors file (or a folder holding one) of low-rank pairs in the
 * diffusers/PEFT layout (`transformer.<module>.lora_A.weight` [r, in], `.lora_B.weight` [out, r], optional
 * `.lora_B.bias` [out]) or the older `.lora.down.weight` / `.lora.up.weight` names, on any Linear or 1×1 conv.
 * alpha (and the rank) come from the header's `lora_adapter_metadata` (PEFT's LoraConfig, or diffusers'
 * "transformer."-prefixed copy) when present, else alpha = r. Applied fused: W + Σ scale·(α/r)·B·A, B·A on the
 * GEMM, each term added to W in float64 and rounded into fp32, then into the weights' stored dtype
 * (Params.adapt); the loaded weights are kept, so unloading restores them bit for bit. docs/lora.md.
 */
import { readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';

import { SanaError } from '../errors.js';
import { isObject, parseJson, type JsonValue } from '../io/json.js';
import { SafetensorsFile } from '../io/safetensors.js';
import { decode, type DType } from '../tensor/dtype.js';
import type { Backend } from '../backends/backend.js';
import type { MatrixOrigin, Params } from './params.js';

/** One adapted module: B [out, r] and A [r, in] as float32, α/r, and B's bias when the file has one. */
export interface LoraPair {
  module: string;
  rank: number;
  /** α / r */
  ratio: number;
  a: Float32Array;
  b: Float32Array;
  bias: Float32Array | null;
}

export interface LoraAdapter {
  file: string;
  pairs: LoraPair[];
}

const PEFT = /^(?:transformer\.)?(.+)\.lora_([AB])\.(weight|bias)$/;
const OLD = /^(?:transformer\.)?(.+)\.lora\.(down|up)\.(weight|bias)$/;
const DTYPES: Record<string, DType | undefined> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

/** The .safetensors file of an adapter: the path itself, or the one such file in a folder (diffusers writes
 * pytorch_lora_weights.safetensors). */
function adapterFile(path: string): string {
  let stat;
  try {
    stat = statSync(path);
  } catch (e) {
    throw new SanaError('ERR_SANA_INVALID_OPTION', `LoRA ${path}: cannot read it: ${(e as Error).message}`, { cause: e });
  }
  if (!stat.isDirectory()) return path;
  const files = readdirSync(path).filter((f) => f.endsWith('.safetensors'));
  if (files.includes('pytorch_lora_weights.safetensors')) return join(path, 'pytorch_lora_weights.safetensors');
  if (files.length !== 1) throw new SanaError('ERR_SANA_INVALID_OPTION', `LoRA ${path}: Expected one .safetensors file in the folder but received ${files.length ? files.join(', ') : 'none'}`);
  return join(path, files[0]);
}

/** alpha for `module` from the metadata, or null (then alpha = r). */
function metadataAlpha(meta: Record<string, JsonValue> | null, module: string): number | null {
  if (!meta) return null;
  const pick = (prefix: string) => {
    const pattern = meta[`${prefix}alpha_pattern`];
    if (isObject(pattern))
      for (const [k, v] of Object.entries(pattern)) if ((module === k || module.endsWith(`.${k}`)) && typeof v === 'number') return v;
    const a = meta[`${prefix}lora_alpha`];
    return typeof a === 'number' ? a : null;
  };
  return pick('') ?? pick('transformer.');
}

/**
 * Reads and checks an adapter against the transformer's matrices (`origins`: module weight and bias names →
 * where they live): every key must name a module, A and B must agree on the rank and fit the weight, values
 * must be finite. Throws a SanaError naming the file and the key; reads nothing into the model.
 */
export function readLora(path: string, origins: ReadonlyMap<string, MatrixOrigin>): LoraAdapter {
  const file = adapterFile(path);
  const name = basename(file);
  const fail = (message: string) => new SanaError('ERR_SANA_INVALID_OPTION', `LoRA ${name}: ${message}`);
  let f: SafetensorsFile;
  try {
    f = SafetensorsFile.open(file);
  } catch (e) {
    if (e instanceof SanaError) throw new SanaError(e.code, `LoRA ${name}: ${e.message}`, { cause: e });
    throw e;
  }
  try {
    let meta: Record<string, JsonValue> | null = null;
    const raw = f.metadata.lora_adapter_metadata;
    if (raw !== undefined) {
      const parsed = (() => {
        try {
          return parseJson(raw, { rejectDuplicates: false });
        } catch (e) {
          throw fail(`lora_adapter_metadata in the header is not valid JSON: ${(e as Error).message}`);
        }
      })();
      if (!isObject(parsed)) throw fail('lora_adapter_metadata in the header is not a JSON object');
      meta = parsed;
    }
    const parts = new Map<string, { a?: string; b?: string; bias?: string }>();
    for (const key of f.tensors.keys()) {
      const m = PEFT.exec(key) ?? OLD.exec(key);
      if (!m) throw fail(`${key} is not a LoRA key (expected transformer.<module>.lora_A.weight / .lora_B.weight / .lora_B.bias, or .lora.down / .lora.up)`);
      const [, module, which, kind] = m;
      const isA = which === 'A' || which === 'down';
      if (kind === 'bias' && isA) throw fail(`${key}: a bias on the down (A) projection is not part of LoRA`);
      const entry = parts.get(module) ?? {};
      if (kind === 'bias') entry.bias = key;
      else if (isA) entry.a = key;
      else entry.b = key;
      parts.set(module, entry);
    }
    if (parts.size === 0) throw fail('the file holds no LoRA keys');
    const read = (key: string): Float32Array => {
      const info = f.tensors.get(key)!;
      const dtype = DTYPES[info.dtype];
      if (!dtype) throw fail(`${key} has dtype ${info.dtype}; LoRA weights must be F32, F16 or BF16`);
      const values = Float32Array.from(decode(f.read(key).data as Float32Array | Uint16Array, dtype));
      const bad = values.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) throw fail(`${key} holds a non-finite value (${values[bad]} at element ${bad})`);
      return values;
    };
    const pairs: LoraPair[] = [];
    for (const [module, p] of parts) {
      const target = origins.get(`${module}.weight`);
      if (target?.kind !== 'matrix') throw fail(`${p.a ?? p.b ?? p.bias} matches no Linear or 1×1 conv of the transformer (no ${module}.weight)`);
      if (!p.a || !p.b) throw fail(`${module} has ${p.a ? `${p.a} but no up/B weight` : `${p.b ?? p.bias} but no down/A weight`}`);
      const sa = f.tensors.get(p.a)!.shape;
      const sb = f.tensors.get(p.b)!.shape;
      const matrix = (s: readonly number[]) => s.length === 2 || (s.length === 4 && s[2] === 1 && s[3] === 1);
      if (!matrix(sa) || !matrix(sb)) throw fail(`${module}: Expected 2-D (or [·, ·, 1, 1]) A and B but received ${JSON.stringify(sa)} and ${JSON.stringify(sb)}`);
      const rank = sa[0];
      if (sb[1] !== rank) throw fail(`${module}: the rank of ${p.a} (${rank}, shape ${JSON.stringify(sa)}) and of ${p.b} (${sb[1]}, shape ${JSON.stringify(sb)}) differ`);
      if (sa[1] !== target.cols || sb[0] !== target.rows)
        throw fail(`${module}: B·A is [${sb[0]}, ${sa[1]}] (${p.b} ${JSON.stringify(sb)}, ${p.a} ${JSON.stringify(sa)}) but ${module}.weight is [${target.rows}, ${target.cols}]`);
      let bias: Float32Array | null = null;
      if (p.bias) {
        if (origins.get(`${module}.bias`)?.kind !== 'vector') throw fail(`${p.bias}: ${module} has no bias to add it to`);
        const sbias = f.tensors.get(p.bias)!.shape;
        if (sbias.length !== 1 || sbias[0] !== target.rows) throw fail(`${p.bias} has shape ${JSON.stringify(sbias)} but ${module}.bias is [${target.rows}]`);
        bias = read(p.bias);
      }
      const alpha = metadataAlpha(meta, module) ?? rank;
      pairs.push({ module, rank, ratio: alpha / rank, a: read(p.a), b: read(p.b), bias });
    }
    return { file, pairs };
  } finally {
    f.close();
  }
}

/** B·A [out, in] of one pair on the backend's GEMM (fp32 products of r terms; A transposed on the host). */
function product(backend: Backend, p: LoraPair): Float32Array {
  const out = p.b.length / p.rank;
  const inp = p.a.length / p.rank;
  const at = new Float32Array(inp * p.rank);
  for (let j = 0; j < p.rank; j++) for (let c = 0; c < inp; c++) at[c * p.rank + j] = p.a[j * inp + c];
  const b = backend.tensor([out, p.rank], 'f32', p.b);
  const a = backend.tensor([inp, p.rank], 'f32', at);
  try {
    const y = backend.linear(b, a); // B · (Aᵀ)ᵀ
    try {
      return y.toFloat32();
    } finally {
      y.dispose();
    }
  } finally {
    a.dispose();
    b.dispose();
  }
}

/** The weights and biases adapters at a nonzero scale touch, and their update terms scale·(α/r)·B·A (biases:
 * scale·(α/r)·b), one name at a time. Adapters at scale 0 add nothing, so the model then holds its loaded
 * weights exactly. */
export function loraUpdate(backend: Backend, adapters: { adapter: LoraAdapter; scale: number }[]): { names: string[]; terms: (name: string) => { k: number; v: Float32Array }[] } {
  const byName = new Map<string, { p: LoraPair; k: number; bias: boolean }[]>();
  for (const { adapter, scale } of adapters) {
    if (scale === 0) continue;
    for (const p of adapter.pairs) {
      const k = scale * p.ratio;
      byName.set(`${p.module}.weight`, [...(byName.get(`${p.module}.weight`) ?? []), { p, k, bias: false }]);
      if (p.bias) byName.set(`${p.module}.bias`, [...(byName.get(`${p.module}.bias`) ?? []), { p, k, bias: true }]);
    }
  }
  return { names: [...byName.keys()], terms: (name) => byName.get(name)!.map(({ p, k, bias }) => ({ k, v: bias ? p.bias! : product(backend, p) })) };
}

/** `file[:scale]` (the CLI's --lora and a render line's "lora" entries): the adapter path and its scale (default 1). */
export function parseLoraSpec(spec: string): { path: string; scale: number } {
  const m = /^(.*):([^:/\\]*)$/.exec(spec);
  const scale = m ? Number(m[2]) : 1;
  if ((m && (m[2].trim() === '' || !Number.isFinite(scale))) || (m ? m[1] : spec) === '')
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected file.safetensors or file.safetensors:scale (a number) for a LoRA but received ${JSON.stringify(spec)}`);
  return { path: m ? m[1] : spec, scale };
}

export interface LoadedLora {
  name: string;
  file: string;
  scale: number;
  /** adapted modules */
  modules: number;
}

/** The adapters of one model: each change re-merges the affected weights from the loaded ones, all or nothing. */
export class LoraSet {
  private adapters = new Map<string, { adapter: LoraAdapter; scale: number }>();

  constructor(
    private readonly backend: Backend,
    private readonly params: Params,
  ) {}

  get loaded(): LoadedLora[] {
    return [...this.adapters].map(([name, { adapter, scale }]) => ({ name, file: adapter.file, scale, modules: adapter.pairs.length }));
  }

  /** The values a weight or bias of the model holds now (adapters merged), row-major: for checks. */
  values(name: string): Float32Array {
    return this.params.values(name);
  }

  /** Reads, checks and applies an adapter; returns its name (default: the file's name without .safetensors,
   * or the folder's name). */
  load(path: string, opts: { name?: string; scale?: number } = {}): string {
    const scale = checkScale(opts.scale ?? 1);
    const adapter = readLora(path, this.params.origins);
    const name = opts.name ?? basename(path).replace(/\.safetensors$/, '');
    if (typeof name !== 'string' || name === '') throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a non-empty adapter name but received ${JSON.stringify(name)}`);
    if (this.adapters.has(name)) throw new SanaError('ERR_SANA_INVALID_OPTION', `LoRA ${basename(adapter.file)}: an adapter named ${JSON.stringify(name)} is already loaded (unload it, or pass another name)`);
    this.apply(new Map([...this.adapters, [name, { adapter, scale }]]));
    return name;
  }

  setScale(name: string, scale: number): void {
    const a = this.get(name);
    this.apply(new Map([...this.adapters, [name, { adapter: a.adapter, scale: checkScale(scale) }]]));
  }

  unload(name: string): void {
    this.get(name);
    const next = new Map(this.adapters);
    next.delete(name);
    this.apply(next);
  }

  private get(name: string): { adapter: LoraAdapter; scale: number } {
    const a = this.adapters.get(name);
    if (!a) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected the name of a loaded adapter (${[...this.adapters.keys()].join(', ') || 'none loaded'}) but received ${JSON.stringify(name)}`);
    return a;
  }

  private apply(next: Map<string, { adapter: LoraAdapter; scale: number }>): void {
    const { names, terms } = loraUpdate(this.backend, [...next.values()]);
    this.params.adapt(this.backend, names, terms);
    this.adapters = next;
  }
}

function checkScale(scale: unknown): number {
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a finite number for the LoRA scale but received ${JSON.stringify(scale)}`);
  return scale;
}
