/**
 * torch.randn on a CPU torch.Generator, reproduced draw for draw (PyTorch's behaviour, written from its
 * documented algorithm): mt19937 seeded with seed & 0xffffffff; float uniforms from 24 (float32) or 53
 * (float64) random bits; tensors with fewer than 16 values use a scalar Box-Muller per element whose second
 * value is cached in the generator (also across calls), larger ones a 16-wide Box-Muller over a buffer of
 * uniforms whose last 16 values are redrawn when the size is not a multiple of 16.
 * The float32 16-wide path in torch uses SIMD log/sin/cos: results agree within a few ulp.
 */
const N = 624;
const M = 397;

export class TorchGenerator {
  private readonly mt = new Uint32Array(N);
  private index = N;
  private nextDoubleNormal: number | null = null;

  constructor(seed: bigint | number) {
    this.manualSeed(seed);
  }

  manualSeed(seed: bigint | number): void {
    const s = BigInt(seed);
    if (s < 0n || s >= 1n << 64n) throw new RangeError(`seed must be in [0, 2^64), got ${s}`);
    this.mt[0] = Number(s & 0xffffffffn);
    for (let i = 1; i < N; i++) {
      const prev = this.mt[i - 1] ^ (this.mt[i - 1] >>> 30);
      // 1812433253 · prev + i in uint32 arithmetic
      this.mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
    this.index = N;
    this.nextDoubleNormal = null;
  }

  private twist(): void {
    const mt = this.mt;
    for (let i = 0; i < N; i++) {
      const y = (mt[i] & 0x80000000) | (mt[(i + 1) % N] & 0x7fffffff);
      mt[i] = mt[(i + M) % N] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.index = 0;
  }

  /** the next 32 random bits */
  random(): number {
    if (this.index >= N) this.twist();
    let y = this.mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** uniform in [0, 1) with float32's 24 bits */
  uniformFloat(): number {
    return (this.random() & 0xffffff) / 16777216;
  }

  /** uniform in [0, 1) with float64's 53 bits (two 32-bit draws: high word first) */
  uniformDouble(): number {
    const hi = this.random();
    const lo = this.random();
    return ((hi & 0x1fffff) * 4294967296 + lo) / 9007199254740992;
  }

  /** scalar-path normal: Box-Muller on two 53-bit uniforms, the sine value cached for the next call */
  normalDouble(): number {
    if (this.nextDoubleNormal !== null) {
      const v = this.nextDoubleNormal;
      this.nextDoubleNormal = null;
      return v;
    }
    const u1 = this.uniformDouble();
    const u2 = this.uniformDouble();
    const r = Math.sqrt(-2 * Math.log1p(-u2));
    const theta = 2 * Math.PI * u1;
    this.nextDoubleNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }
}

export function randn(gen: TorchGenerator, count: number, dtype: 'float32' | 'float64' = 'float32'): Float32Array | Float64Array {
  const f32 = dtype === 'float32';
  const out = f32 ? new Float32Array(count) : new Float64Array(count);
  if (count < 16) {
    for (let i = 0; i < count; i++) out[i] = gen.normalDouble();
    return out;
  }
  const uniform = () => (f32 ? gen.uniformFloat() : gen.uniformDouble());
  for (let i = 0; i < count; i++) out[i] = uniform();
  // float32: every step rounded to fp32 as the vectorised kernel computes it (2π itself is an fp32 constant)
  const r32 = Math.fround;
  const twoPi32 = r32(2 * Math.PI);
  const fill16 = (at: number) => {
    for (let j = 0; j < 8; j++) {
      if (f32) {
        const u1 = r32(1 - out[at + j]);
        const radius = r32(Math.sqrt(r32(-2 * r32(Math.log(u1)))));
        const theta = r32(twoPi32 * out[at + j + 8]);
        out[at + j] = radius * r32(Math.cos(theta));
        out[at + j + 8] = radius * r32(Math.sin(theta));
      } else {
        const radius = Math.sqrt(-2 * Math.log(1 - out[at + j]));
        const theta = 2 * Math.PI * out[at + j + 8];
        out[at + j] = radius * Math.cos(theta);
        out[at + j + 8] = radius * Math.sin(theta);
      }
    }
  };
  for (let i = 0; i + 16 <= count; i += 16) fill16(i);
  if (count % 16 !== 0) {
    const at = count - 16;
    for (let i = 0; i < 16; i++) out[at + i] = uniform();
    fill16(at);
  }
  return out;
}
