import { SanaError } from '../errors.js';
import { bytesPerElement, decode, storageArrayType, storageView, type DType, type TensorArray } from './dtype.js';

/** Where a tensor's memory lives: host memory (cpu, wasm) or a device's (CUDA). */
export type Location = 'host' | 'device';

/** A block of memory a backend hands out (docs/engine.md, "Tensors and storage"). */
export interface Storage {
  readonly location: Location;
  /** the address of the block's first byte in its backend's address space (a host pointer, a wasm heap
   * offset, a device pointer): what kernels receive, plus a tensor's byte offset */
  readonly handle: number;
  readonly bytes: number;
  /** host storage only: the ArrayBuffer of the block's address space and the block's offset in it (asked
   * each time: the wasm heap's buffer is replaced when it grows) */
  host?(): { buffer: ArrayBufferLike; byteOffset: number };
  free(): void;
}

/** The backend a tensor belongs to. Device backends copy between host and device for read()/write(). */
export interface TensorOwner {
  readonly name: string;
  readStorage?(storage: Storage, byteOffset: number, dst: Uint8Array): Promise<void>;
  /** the same, blocking the calling thread until the device has finished the work before it */
  readStorageSync?(storage: Storage, byteOffset: number, dst: Uint8Array): void;
  writeStorage?(storage: Storage, byteOffset: number, src: Uint8Array): void;
}

/** Every movement of tensor data between the host and a tensor's storage: 'write' and 'read' copy in and
 * out; 'view' hands out the live host array (.data). Tests count these to prove a denoising step keeps its
 * tensors where they are (test/engine/transfers.test.ts). */
export type TransferKind = 'read' | 'write' | 'view';
type TransferObserver = (kind: TransferKind, tensor: Tensor) => void;
let observer: TransferObserver | null = null;

/** Installs (or with null removes) the observer of transfers; returns the previous one. */
export function observeTransfers(fn: TransferObserver | null): TransferObserver | null {
  const prev = observer;
  observer = fn;
  return prev;
}

let nextId = 1;

/** A dense row-major tensor: a range of a Storage block at `byteOffset`. The tensor made with the block owns
 * it and `dispose()` frees it; reshape/slice give aliases of the same block at another offset, which never
 * copy, never own, and die with their root. */
export class Tensor {
  readonly id = nextId++;
  readonly size: number;
  private storageRef: Storage | null;
  private view: TensorArray | null = null;

  constructor(
    readonly owner: TensorOwner,
    readonly shape: readonly number[],
    readonly dtype: DType,
    storage: Storage,
    /** 'packed32': a linear weight [N, K] (f32 or bf16) repacked by Backend.packWeight in the layout of
     * sana_pack_weight (native/include/sana_ops.h: 32-column k-major panels, N padded to a multiple of 32; bf16
     * as k-pairs with K padded to a multiple of 32); its data is that layout, not row-major */
    readonly layout: 'dense' | 'packed32' = 'dense',
    readonly byteOffset = 0,
    /** the tensor that owns the storage, for aliases */
    private readonly root: Tensor | null = null,
  ) {
    this.size = shape.reduce((a, b) => a * b, 1);
    this.storageRef = storage;
  }

  get disposed(): boolean {
    return this.root ? this.root.disposed : this.storageRef === null;
  }

  get byteLength(): number {
    return this.size * bytesPerElement(this.dtype);
  }

  /** The live storage (throws once disposed). */
  get storage(): Storage {
    if (this.disposed || !this.storageRef) throw new SanaError('ERR_SANA_DISPOSED', `tensor #${this.id} ${JSON.stringify(this.shape)} was disposed`);
    return this.storageRef;
  }

  get location(): Location {
    return this.storage.location;
  }

  /** The address of element 0 in the backend's address space (what kernels receive). */
  get address(): number {
    return this.storage.handle + this.byteOffset;
  }

  /** The live typed array over this tensor's memory (Float32Array for f32, Uint16Array for f16/bf16,
   * Int32Array for i32). Host tensors only: a device tensor is read with read(). */
  get data(): TensorArray {
    observer?.('view', this);
    return this.hostArray();
  }

  /** Copies storage words in (the dtype's typed array): all `size` elements, or with `at` a range starting at
   * element `at` (a weight loaded in chunks). */
  write(words: TensorArray, at?: number): void {
    const want = storageArrayType(this.dtype);
    const whole = at === undefined;
    const from = at ?? 0;
    if (!(words instanceof want) || (whole ? words.length !== this.size : !(Number.isInteger(from) && from >= 0 && from + words.length <= this.size)))
      throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `write: Expected a ${want.name} of ${whole ? this.size : `at most ${this.size - from}`} elements for tensor #${this.id}${whole ? '' : ` at element ${from}`} but received a ${words.constructor.name} of ${words.length}`);
    observer?.('write', this);
    const s = this.storage;
    if (s.location === 'host') this.hostArray().set(words, from);
    else this.deviceOwner('write').writeStorage!(s, this.byteOffset + from * bytesPerElement(this.dtype), new Uint8Array(words.buffer, words.byteOffset, words.byteLength));
  }

  /** A copy of the storage words, wherever the tensor lives. */
  async read(): Promise<TensorArray> {
    const s = this.storage;
    if (s.location === 'host') return this.readSync();
    observer?.('read', this);
    const out = new (storageArrayType(this.dtype))(this.size);
    await this.deviceOwner('read').readStorage!(s, this.byteOffset, new Uint8Array(out.buffer));
    return out;
  }

  /** A copy of the storage words, wherever the tensor lives: a device tensor blocks the calling thread until its
   * device has finished (as host ops block it while they run; the pool runs models on worker threads). A
   * packed32 weight gives its whole padded panel layout. */
  readSync(): TensorArray {
    observer?.('read', this);
    const s = this.storage;
    const words = this.layout === 'packed32' ? packedWeightWords(this.shape[0], this.size / this.shape[0], this.dtype) : this.size;
    if (s.location === 'host') {
      const h = s.host!();
      return storageView(this.dtype, h.buffer, h.byteOffset + this.byteOffset, words).slice();
    }
    const out = new (storageArrayType(this.dtype))(words);
    this.deviceOwner('readSync').readStorageSync!(s, this.byteOffset, new Uint8Array(out.buffer));
    return out;
  }

  /** A float32 copy of the values (decoded from f16/bf16), wherever the tensor lives (as readSync). */
  toFloat32(): Float32Array {
    const s = this.storage;
    if (s.location !== 'host' || this.layout === 'packed32') {
      const words = this.readSync();
      return this.dtype === 'f32' ? (words as Float32Array) : decode(words, this.dtype);
    }
    observer?.('read', this);
    const d = this.hostArray();
    return this.dtype === 'f32' ? new Float32Array(d as Float32Array) : decode(d, this.dtype);
  }

  /** The same memory under another shape with the same element count. */
  reshape(shape: readonly number[]): Tensor {
    const size = shape.reduce((a, b) => a * b, 1);
    if (!shape.every((d) => Number.isInteger(d) && d > 0) || size !== this.size)
      throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `reshape: Expected ${this.size} elements for shape but received ${JSON.stringify(shape)}`);
    return this.slice(0, shape);
  }

  /** A contiguous sub-range (starting at element `offset`) under `shape`, aliasing this tensor's memory:
   * e.g. one batch item, or a channel block of an NCHW map. */
  slice(offset: number, shape: readonly number[]): Tensor {
    if (this.layout !== 'dense') throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `slice: Expected a dense tensor but received a ${this.layout} weight`);
    const size = shape.reduce((a, b) => a * b, 1);
    if (!Number.isInteger(offset) || offset < 0 || offset + size > this.size || !shape.every((d) => Number.isInteger(d) && d > 0))
      throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `slice: Expected a range inside ${this.size} elements for offset ${offset} and shape ${JSON.stringify(shape)}`);
    return new Tensor(this.owner, shape, this.dtype, this.storage, 'dense', this.byteOffset + offset * bytesPerElement(this.dtype), this.root ?? this);
  }

  /** Frees the storage (owners only; disposing an alias is a no-op). Idempotent. */
  dispose(): void {
    if (this.root) return;
    const s = this.storageRef;
    this.storageRef = null;
    this.view = null;
    s?.free();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  private hostArray(): TensorArray {
    const s = this.storage;
    if (s.location !== 'host' || !s.host)
      throw new SanaError('ERR_SANA_UNSUPPORTED', `tensor #${this.id} lives on the ${this.owner.name} device: read it with await tensor.read()`);
    const { buffer, byteOffset } = s.host();
    if (!this.view || this.view.buffer !== buffer) this.view = storageView(this.dtype, buffer, byteOffset + this.byteOffset, this.size);
    return this.view;
  }

  private deviceOwner(op: 'read' | 'readSync' | 'write'): TensorOwner {
    const o = this.owner;
    if (!(op === 'read' ? o.readStorage : op === 'readSync' ? o.readStorageSync : o.writeStorage))
      throw new SanaError('ERR_SANA_UNSUPPORTED', `${op}: the ${o.name} backend cannot copy device tensors`);
    return o;
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

/** Storage words of a linear weight [rows, cols] in the packed32 layout (sana_packed_weight_size). */
export function packedWeightWords(rows: number, cols: number, dtype: DType): number {
  return Math.ceil(rows / 32) * 32 * (dtype === 'bf16' ? Math.ceil(cols / 32) * 32 : cols);
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
