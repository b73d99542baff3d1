import { SanaError } from '../errors.js';
import { bytesPerElement, decode, type DType, type TensorArray } from './dtype.js';

/** Memory a backend hands to a tensor. `array()` returns a live view (it may be re-created, e.g. after the
 * wasm heap grows); `free()` releases the memory at once. Device backends (CUDA) implement the same
 * contract with device pointers and copy on `array()`. */
export interface Storage {
  array(): TensorArray;
  free(): void;
}

export interface TensorOwner {
  readonly name: string;
}

let nextId = 1;

/** A dense row-major tensor that owns its memory; `dispose()` frees it deterministically. */
export class Tensor {
  readonly id = nextId++;
  readonly size: number;
  private storage: Storage | null;

  constructor(
    readonly owner: TensorOwner,
    readonly shape: readonly number[],
    readonly dtype: DType,
    storage: Storage,
    /** 'packed32': a linear weight [N, K] repacked by Backend.packWeight (32-column k-major panels, N padded to
     * a multiple of 32); its data is that layout, not row-major */
    readonly layout: 'dense' | 'packed32' = 'dense',
  ) {
    this.size = shape.reduce((a, b) => a * b, 1);
    this.storage = storage;
  }

  get disposed(): boolean {
    return this.storage === null;
  }

  get byteLength(): number {
    return this.size * bytesPerElement(this.dtype);
  }

  /** The live typed array over this tensor's memory (Float32Array for f32, Uint16Array for f16/bf16). */
  get data(): TensorArray {
    if (!this.storage) throw new SanaError('ERR_SANA_DISPOSED', `tensor #${this.id} ${JSON.stringify(this.shape)} was disposed`);
    return this.storage.array();
  }

  /** A float32 copy of the values (decoded from f16/bf16). */
  toFloat32(): Float32Array {
    const d = this.data;
    return this.dtype === 'f32' ? new Float32Array(d as Float32Array) : decode(d, this.dtype);
  }

  /** The same memory under another shape with the same element count. The alias does not own the
   * memory: disposing it is a no-op, disposing this tensor invalidates it. */
  reshape(shape: readonly number[]): Tensor {
    const size = shape.reduce((a, b) => a * b, 1);
    if (!shape.every((d) => Number.isInteger(d) && d > 0) || size !== this.size)
      throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `reshape: Expected ${this.size} elements for shape but received ${JSON.stringify(shape)}`);
    return this.slice(0, shape);
  }

  /** A contiguous sub-range (starting at element `offset`) under `shape`, aliasing this tensor's memory like
   * reshape(): e.g. one batch item, or a channel block of an NCHW map. */
  slice(offset: number, shape: readonly number[]): Tensor {
    if (this.layout !== 'dense') throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `slice: Expected a dense tensor but received a ${this.layout} weight`);
    const size = shape.reduce((a, b) => a * b, 1);
    if (!Number.isInteger(offset) || offset < 0 || offset + size > this.size || !shape.every((d) => Number.isInteger(d) && d > 0))
      throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `slice: Expected a range inside ${this.size} elements for offset ${offset} and shape ${JSON.stringify(shape)}`);
    const owner = this;
    return new Tensor(this.owner, shape, this.dtype, { array: () => owner.data.subarray(offset, offset + size), free: () => {} });
  }

  dispose(): void {
    const s = this.storage;
    this.storage = null;
    s?.free();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** A strided 4-D view [b, n, h, d] of a f32 tensor: element (b, n, h, d) is at
 * offset + b·strides[0] + n·strides[1] + h·strides[2] + d·strides[3]. Used by the attention ops so q/k/v
 * can be slices of one fused projection. */
export interface View4 {
  tensor: Tensor;
  shape: readonly [number, number, number, number];
  strides: readonly [number, number, number, number];
  offset: number;
}

export function contiguousStrides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Views a tensor as [b, n, h, d]; with no strides the view is contiguous (e.g. [B, N, heads·dim] tokens). */
export function view4(
  tensor: Tensor,
  shape: readonly [number, number, number, number],
  strides?: readonly [number, number, number, number],
  offset = 0,
): View4 {
  return { tensor, shape, strides: strides ?? (contiguousStrides(shape) as [number, number, number, number]), offset };
}
