/** Storage dtypes of tensors. Activations are f32; weights keep their checkpoint dtype; i32 holds token ids
 * and positions. */
export type DType = 'f32' | 'f16' | 'bf16' | 'i32';

/** The C ABI's sana_dtype code (weights: f32, f16, bf16). */
export function dtypeCode(dtype: DType): number {
  if (dtype === 'i32') throw new Error('i32 is not a weight dtype');
  return dtype === 'f32' ? 0 : dtype === 'f16' ? 1 : 2;
}

export function bytesPerElement(dtype: DType): number {
  return dtype === 'f16' || dtype === 'bf16' ? 2 : 4;
}

export type TensorArray = Float32Array | Uint16Array | Int32Array;

/** The typed array of a dtype's storage words over `length` elements of `buffer` from `byteOffset`. */
export function storageView(dtype: DType, buffer: ArrayBufferLike, byteOffset: number, length: number): TensorArray {
  if (dtype === 'f32') return new Float32Array(buffer, byteOffset, length);
  return dtype === 'i32' ? new Int32Array(buffer, byteOffset, length) : new Uint16Array(buffer, byteOffset, length);
}

/** The typed-array class of a dtype's storage words. */
export function storageArrayType(dtype: DType): typeof Float32Array | typeof Uint16Array | typeof Int32Array {
  return dtype === 'f32' ? Float32Array : dtype === 'i32' ? Int32Array : Uint16Array;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** f32 → bf16 with round-to-nearest-even (NaN stays NaN), as torch's `.to(torch.bfloat16)`. */
export function f32ToBf16(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i];
    const bits = u32[0];
    if ((bits & 0x7fffffff) > 0x7f800000) out[i] = (bits >>> 16) | 0x40;
    else out[i] = (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
  }
  return out;
}

export function bf16ToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return out;
}

/** f32 → IEEE half with round-to-nearest-even; overflow gives ±Inf, tiny values subnormals or ±0. */
export function f32ToF16(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i];
    const x = u32[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let man = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (man ? 0x200 : 0);
      continue;
    }
    let e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      man |= 0x800000;
      const shift = 14 - e;
      let half = man >>> shift;
      const rem = man & ((1 << shift) - 1);
      const mid = 1 << (shift - 1);
      if (rem > mid || (rem === mid && half & 1)) half++;
      out[i] = sign | half;
      continue;
    }
    let half = (e << 10) | (man >>> 13);
    const rem = man & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
    out[i] = sign | half; // a carry into the exponent is the correct rounding (up to Inf)
  }
  return out;
}

export function f16ToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const h = src[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const man = h & 0x3ff;
    if (exp === 0) out[i] = sign * man * 2 ** -24;
    else if (exp === 31) out[i] = man ? NaN : sign * Infinity;
    else out[i] = sign * (1 + man / 1024) * 2 ** (exp - 15);
  }
  return out;
}

/** Converts f32 values to a dtype's storage array. */
export function encode(values: ArrayLike<number>, dtype: DType): TensorArray {
  if (dtype === 'f32') return values instanceof Float32Array ? values : Float32Array.from(values);
  if (dtype === 'i32') return values instanceof Int32Array ? values : Int32Array.from(values);
  return dtype === 'bf16' ? f32ToBf16(values) : f32ToF16(values);
}

/** Converts a dtype's storage array to f32 values. */
export function decode(data: TensorArray, dtype: DType): Float32Array {
  if (dtype === 'f32') return data as Float32Array;
  if (dtype === 'i32') return Float32Array.from(data);
  return dtype === 'bf16' ? bf16ToF32(data as Uint16Array) : f16ToF32(data as Uint16Array);
}
