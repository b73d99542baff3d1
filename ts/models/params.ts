/** Loading a component's weights into backend tensors: every expected key and shape is checked against the
 * file headers before any tensor data is read. Matrices keep their stored dtype (fp32/fp16/bf16, read by
 * the kernels directly); vectors (biases, norm weights, modulation tables) are decoded to fp32. */
import { basename } from 'node:path';

import type { Backend } from '../backends/backend.js';
import { SanaError } from '../errors.js';
import type { WeightStore } from '../io/weights.js';
import { decode, type DType } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';

export interface ParamSpec {
  name: string;
  shape: number[];
  /** decoded to f32 regardless of the stored dtype (biases, norms, tables) */
  vector?: boolean;
}

const STORED: Record<string, DType | undefined> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

export class Params {
  private constructor(
    private readonly tensors: Map<string, Tensor>,
    /** tensors of the file the model does not use (diffusers warns about these too) */
    readonly unused: string[],
  ) {}

  static load(backend: Backend, store: WeightStore, specs: ParamSpec[], component: string): Params {
    const where = `${component} (${basename(store.dir)})`;
    for (const s of specs) {
      const info = store.info(s.name);
      if (!info) throw new SanaError('ERR_SANA_MODEL_FORMAT', `${where}: missing tensor ${s.name} (expected shape ${JSON.stringify(s.shape)})`);
      if (info.shape.length !== s.shape.length || info.shape.some((d, i) => d !== s.shape[i]))
        throw new SanaError('ERR_SANA_MODEL_FORMAT', `${where}: tensor ${s.name} has shape ${JSON.stringify(info.shape)} but the config needs ${JSON.stringify(s.shape)}`);
      if (!STORED[info.dtype]) throw new SanaError('ERR_SANA_MODEL_FORMAT', `${where}: tensor ${s.name} has dtype ${info.dtype}; weights must be F32, F16 or BF16`);
    }
    const wanted = new Set(specs.map((s) => s.name));
    const tensors = new Map<string, Tensor>();
    try {
      for (const s of specs) {
        const { info, data } = store.read(s.name);
        const dtype = STORED[info.dtype]!;
        const raw = data as Float32Array | Uint16Array;
        tensors.set(s.name, s.vector && dtype !== 'f32' ? backend.tensor(s.shape, 'f32', decode(raw, dtype)) : backend.tensorFromRaw(s.shape, dtype, raw));
      }
    } catch (e) {
      for (const t of tensors.values()) t.dispose();
      throw e;
    }
    return new Params(tensors, store.names().filter((n) => !wanted.has(n)));
  }

  get(name: string): Tensor {
    const t = this.tensors.get(name);
    if (!t) throw new SanaError('ERR_SANA_NATIVE', `internal: parameter ${name} was not loaded`);
    return t;
  }

  /** Host copy of a small f32 parameter (modulation tables). */
  host(name: string): Float32Array {
    return this.get(name).toFloat32();
  }

  dispose(): void {
    for (const t of this.tensors.values()) t.dispose();
    this.tensors.clear();
  }
}
