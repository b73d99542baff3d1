import { fromKernelError, invalidArgument, SanaError } from '../errors.js';
import { bytesPerElement, dtypeCode, encode, type DType, type TensorArray } from '../tensor/dtype.js';
import { contiguousStrides, Tensor, type Storage, type View4 } from '../tensor/tensor.js';
import { BlockCache, type Usage } from './block-cache.js';
import type {
  Activation,
  AttentionOptions,
  Backend,
  BackendInfo,
  BackendMemory,
  BackendName,
  Conv2dOptions,
  GlumbconvWeights,
  LinearOptions,
} from './backend.js';

type F32 = Float32Array;
type W = Float32Array | Uint16Array;
type Arr = F32 | null;

/** The raw op surface shared by the native addon (native/napi/addon.cpp) and the wasm glue
 * (ts/backends/wasm.ts): typed arrays and numbers, argument order as in native/include/sana_ops.h.
 * A 4-D view is passed as six arguments: array, offset, and its four strides. */
export interface RawKernels {
  info(): { variant: string; threads: number; variants: { name: string; supported: boolean }[] };
  setThreads(threads: number): void;
  setVariant(variant: string): void;
  packWeight(w: F32, N: number, K: number, packed: F32): void;
  linear(x: F32, M: number, K: number, w: W, dtype: number, N: number, bias: Arr, act: number, flags: number, y: F32): void;
  conv2d(x: F32, B: number, Cin: number, H: number, W: number, w: W, dtype: number, Cout: number, kh: number, kw: number,
    stride: number, pad: number, groups: number, bias: Arr, act: number, y: F32): void;
  linearAttention(...args: (F32 | number)[]): void;
  attention(...args: (F32 | number | null)[]): void;
  glumbconv(x: F32, B: number, H: number, W: number, C: number, wi: W, bi: Arr, wd: W, bd: Arr, wp: W, dtype: number,
    F: number, Cout: number, flags: number, y: F32): void;
  layerNorm(x: F32, rows: number, dim: number, eps: number, scale: Arr, shift: Arr, rowsPerBatch: number, y: F32): void;
  residual(x: F32, y: F32, rows: number, dim: number, gate: Arr, rowsPerBatch: number, out: F32): void;
  mul(x: F32, y: F32, n: number, out: F32): void;
  rmsNorm(x: F32, rows: number, dim: number, weight: Arr, bias: Arr, eps: number, mode: number, y: F32): void;
  rmsNormChannels(x: F32, B: number, C: number, HW: number, weight: Arr, bias: Arr, eps: number, y: F32): void;
  pixelShuffle(x: F32, B: number, C: number, H: number, W: number, r: number, y: F32): void;
  pixelUnshuffle(x: F32, B: number, C: number, H: number, W: number, r: number, y: F32): void;
  upsampleNearest2x(x: F32, B: number, C: number, H: number, W: number, y: F32): void;
  activation(x: F32, n: number, act: number, y: F32): void;
  rope(...args: (F32 | Int32Array | number | null)[]): void;
}

const ACTS: Record<Activation, number> = { none: 0, relu: 1, silu: 2, 'gelu-tanh': 3 };

function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}

/** Validation and output allocation for every op, on top of a RawKernels implementation and its memory.
 * Everything a user can get wrong is checked here and reported as a SanaError before native code runs. */
export abstract class KernelBackend implements Backend {
  abstract readonly name: BackendName;
  protected disposedFlag = false;
  selection?: BackendInfo['selection'];
  private readonly blocks = new BlockCache((dtype, size) => this.call('alloc', () => this.allocStorage(dtype, size)));

  protected constructor(protected readonly raw: RawKernels) {}

  /** Memory for `bytes` bytes holding `dtype` elements. */
  protected abstract allocStorage(dtype: DType, size: number): Storage;
  protected abstract releaseContext(): void;

  memory(): BackendMemory {
    const c = this.blocks.counters;
    return { ...c, bytes: c.weightBytes + c.activationBytes };
  }

  setCacheLimit(bytes: number): void {
    if (!(Number.isSafeInteger(bytes) && bytes >= 0)) throw new SanaError('ERR_SANA_INVALID_OPTION', `setCacheLimit: Expected a byte count >= 0 for bytes but received ${bytes}`);
    this.blocks.limit = bytes;
    if (this.blocks.counters.cachedBytes > bytes) this.blocks.trim();
  }

  trimCache(): void {
    this.blocks.trim();
  }

  get info(): BackendInfo {
    const i = this.call('info', () => this.raw.info());
    return {
      name: this.name,
      variant: i.variant,
      variants: i.variants.filter((v) => v.supported).map((v) => v.name),
      threads: i.threads,
      selection: this.selection,
    };
  }

  setThreads(threads: number): void {
    if (!Number.isInteger(threads) || threads < 0 || threads > 256)
      throw new SanaError('ERR_SANA_INVALID_OPTION', `setThreads: Expected an integer 0 (all cores) .. 256 for threads but received ${threads}`);
    this.call('setThreads', () => this.raw.setThreads(threads));
  }

  setVariant(variant: string): void {
    this.call('setVariant', () => this.raw.setVariant(variant));
  }

  dispose(): void {
    if (this.disposedFlag) return;
    this.disposedFlag = true;
    this.blocks.close();
    this.releaseContext();
  }

  // ---- tensors ----

  empty(shape: readonly number[], dtype: DType = 'f32', usage: Usage = 'activation'): Tensor {
    this.checkShape('empty', shape);
    const size = shape.reduce((a, b) => a * b, 1);
    return new Tensor(this, [...shape], dtype, this.blocks.take(dtype, size, usage));
  }

  tensor(shape: readonly number[], dtype: DType = 'f32', data?: ArrayLike<number> | TensorArray, usage: Usage = 'activation'): Tensor {
    const t = this.empty(shape, dtype, usage);
    if (data === undefined) {
      t.data.fill(0);
    } else {
      if (data.length !== t.size) {
        t.dispose();
        throw invalidArgument('tensor', `${t.size} values for shape ${JSON.stringify(shape)}`, 'data', data);
      }
      t.data.set(encode(data, dtype));
    }
    return t;
  }

  tensorFromRaw(shape: readonly number[], dtype: DType, raw: TensorArray, usage: Usage = 'activation'): Tensor {
    const want = dtype === 'f32' ? Float32Array : Uint16Array;
    if (!(raw instanceof want)) throw invalidArgument('tensorFromRaw', `a ${want.name} for dtype ${dtype}`, 'raw', raw);
    const t = this.empty(shape, dtype, usage);
    if (raw.length !== t.size) {
      t.dispose();
      throw invalidArgument('tensorFromRaw', `${t.size} elements for shape ${JSON.stringify(shape)}`, 'raw', raw);
    }
    t.data.set(raw);
    return t;
  }

  // ---- ops ----

  packWeight(w: Tensor): Tensor {
    const op = 'packWeight';
    this.f32(op, 'w', w);
    if (w.layout !== 'dense') throw invalidArgument(op, 'a dense weight', 'w.layout', w.layout);
    if (w.shape.length !== 2 && !(w.shape.length === 4 && w.shape[2] === 1 && w.shape[3] === 1))
      throw invalidArgument(op, 'a linear weight [out, in] (or a 1×1 conv weight [out, in, 1, 1])', 'w.shape', w.shape);
    const [N, K] = w.shape;
    const packedSize = Math.ceil(N / 32) * 32 * K;
    const t = new Tensor(this, [N, K], 'f32', this.blocks.take('f32', packedSize, 'weight'), 'packed32');
    try {
      this.call(op, () => this.raw.packWeight(w.data as F32, N, K, t.data as F32));
    } catch (e) {
      t.dispose();
      throw e;
    }
    return t;
  }

  linear(x: Tensor, w: Tensor, opts: LinearOptions = {}): Tensor {
    const op = 'linear';
    this.f32(op, 'x', x);
    this.weight(op, 'w', w);
    if (w.shape.length !== 2) throw invalidArgument(op, 'a 2-D weight [out, in]', 'w.shape', w.shape);
    const [N, K] = w.shape;
    if (x.shape.length < 1 || x.shape[x.shape.length - 1] !== K)
      throw invalidArgument(op, `a last dimension of ${K} (w is ${JSON.stringify(w.shape)})`, 'x.shape', x.shape);
    const M = x.size / K;
    if (opts.bias) this.f32Shape(op, 'bias', opts.bias, [N]);
    const act = this.act(op, opts.act);
    if (opts.fastBf16 && w.dtype !== 'bf16') throw invalidArgument(op, 'bf16 weights with fastBf16', 'w.dtype', w.dtype);
    const y = this.output(op, opts.out, [...x.shape.slice(0, -1), N]);
    const flags = (opts.fastBf16 ? 1 : 0) | (w.layout === 'packed32' ? 2 : 0);
    this.call(op, () => this.raw.linear(x.data as F32, M, K, w.data, dtypeCode(w.dtype), N, this.opt(opts.bias), act, flags, y.data as F32));
    return y;
  }

  conv2d(x: Tensor, w: Tensor, opts: Conv2dOptions = {}): Tensor {
    const op = 'conv2d';
    this.f32(op, 'x', x);
    this.weight(op, 'w', w);
    if (x.shape.length !== 4) throw invalidArgument(op, 'an NCHW input [B, C, H, W]', 'x.shape', x.shape);
    if (w.shape.length !== 4) throw invalidArgument(op, 'a weight [Cout, Cin/groups, kh, kw]', 'w.shape', w.shape);
    const [B, Cin, H, W] = x.shape;
    const [Cout, cig, kh, kw] = w.shape;
    const stride = opts.stride ?? 1;
    const pad = opts.padding ?? 0;
    const groups = opts.groups ?? 1;
    if (!isPositiveInt(stride)) throw invalidArgument(op, 'a positive integer', 'stride', stride);
    if (!Number.isInteger(pad) || pad < 0) throw invalidArgument(op, 'a non-negative integer', 'padding', pad);
    if (!isPositiveInt(groups) || Cin % groups !== 0 || Cout % groups !== 0)
      throw invalidArgument(op, `a divisor of Cin (${Cin}) and Cout (${Cout})`, 'groups', groups);
    if (cig !== Cin / groups)
      throw invalidArgument(op, `${Cin / groups} input channels per group (Cin ${Cin} / groups ${groups}) in w.shape[1]`, 'w.shape', w.shape);
    const Ho = Math.floor((H + 2 * pad - kh) / stride) + 1;
    const Wo = Math.floor((W + 2 * pad - kw) / stride) + 1;
    if (Ho < 1 || Wo < 1) throw invalidArgument(op, `an input of at least ${kh}×${kw} after padding ${pad}`, 'x.shape', x.shape);
    if (opts.bias) this.f32Shape(op, 'bias', opts.bias, [Cout]);
    const act = this.act(op, opts.act);
    const y = this.output(op, opts.out, [B, Cout, Ho, Wo]);
    this.call(op, () =>
      this.raw.conv2d(x.data as F32, B, Cin, H, W, w.data, dtypeCode(w.dtype), Cout, kh, kw, stride, pad, groups, this.opt(opts.bias), act, y.data as F32),
    );
    return y;
  }

  linearAttention(q: View4 | Tensor, k: View4 | Tensor, v: View4 | Tensor, opts: { eps?: number; out?: View4 | Tensor } = {}): Tensor {
    const op = 'linearAttention';
    const qv = this.view(op, 'q', q);
    const kv = this.view(op, 'k', k);
    const vv = this.view(op, 'v', v);
    for (const [name, t] of [['k', kv], ['v', vv]] as const)
      if (t.shape.some((d, i) => d !== qv.shape[i]))
        throw invalidArgument(op, `the shape of q ${JSON.stringify(qv.shape)}`, `${name}.shape`, t.shape);
    const eps = opts.eps ?? 1e-15;
    if (!(eps >= 0 && eps < 1)) throw invalidArgument(op, '0 <= eps < 1', 'eps', eps);
    const [out, outT] = this.outView(op, opts.out, qv.shape);
    const [B, N, H, D] = qv.shape;
    this.call(op, () => this.raw.linearAttention(...this.viewArgs(qv), ...this.viewArgs(kv), ...this.viewArgs(vv), ...this.viewArgs(out), B, N, H, D, eps));
    return outT;
  }

  attention(q: View4 | Tensor, k: View4 | Tensor, v: View4 | Tensor, opts: AttentionOptions = {}): Tensor {
    const op = 'attention';
    const qv = this.view(op, 'q', q);
    const kv = this.view(op, 'k', k);
    const vv = this.view(op, 'v', v);
    const [B, Lq, Hq, D] = qv.shape;
    const [Bk, Lk, Hkv, Dk] = kv.shape;
    const [Bv, Lv, Hv, Dv] = vv.shape;
    if (Bk !== B || Dk !== D) throw invalidArgument(op, `[${B}, Lk, Hkv, ${D}] to match q`, 'k.shape', kv.shape);
    if (Hq % Hkv !== 0) throw invalidArgument(op, `a divisor of the ${Hq} query heads`, 'k.shape[2]', Hkv);
    if (Bv !== B || Lv !== Lk || Hv !== Hkv) throw invalidArgument(op, `[${B}, ${Lk}, ${Hkv}, Dv] to match k`, 'v.shape', vv.shape);
    if (opts.keyBias) this.f32Shape(op, 'keyBias', opts.keyBias, [B, Lk]);
    const scale = opts.scale ?? 1 / Math.sqrt(D);
    if (!(scale > 0 && Number.isFinite(scale))) throw invalidArgument(op, 'a positive finite number', 'scale', scale);
    const softcap = opts.softcap ?? 0;
    if (!(softcap >= 0 && Number.isFinite(softcap))) throw invalidArgument(op, '0 (off) or a positive number', 'softcap', softcap);
    const causal = opts.causal ?? false;
    if (causal && Lq !== Lk) throw invalidArgument(op, `as many keys as queries (${Lq}) with causal`, 'k.shape[1]', Lk);
    const window = opts.window ?? 0;
    if (!Number.isInteger(window) || window < 0) throw invalidArgument(op, '0 (off) or a positive integer', 'window', window);
    const [out, outT] = this.outView(op, opts.out, [B, Lq, Hq, Dv]);
    this.call(op, () =>
      this.raw.attention(...this.viewArgs(qv), ...this.viewArgs(kv), ...this.viewArgs(vv), this.opt(opts.keyBias),
        ...this.viewArgs(out), B, Lq, Lk, Hq, Hkv, D, Dv, scale, softcap, causal ? 1 : 0, window),
    );
    return outT;
  }

  glumbconv(x: Tensor, w: GlumbconvWeights, opts: { height: number; width: number; fastBf16?: boolean; out?: Tensor }): Tensor {
    const op = 'glumbconv';
    this.f32(op, 'x', x);
    const { height: H, width: Wd } = opts;
    if (!isPositiveInt(H)) throw invalidArgument(op, 'a positive integer', 'height', H);
    if (!isPositiveInt(Wd)) throw invalidArgument(op, 'a positive integer', 'width', Wd);
    if (x.shape.length !== 3 || x.shape[1] !== H * Wd)
      throw invalidArgument(op, `tokens [B, ${H * Wd}, C] for a ${H}×${Wd} grid`, 'x.shape', x.shape);
    const [B, , C] = x.shape;
    this.weight(op, 'wInverted', w.wInverted);
    this.weight(op, 'wDepth', w.wDepth);
    this.weight(op, 'wPoint', w.wPoint);
    const dt = w.wInverted.dtype;
    for (const [n, t] of [['wDepth', w.wDepth], ['wPoint', w.wPoint]] as const)
      if (t.dtype !== dt) throw invalidArgument(op, `the dtype of wInverted (${dt})`, `${n}.dtype`, t.dtype);
    const F2 = w.wInverted.shape[0];
    if (F2 % 2 !== 0 || w.wInverted.size !== F2 * C || (w.wInverted.shape.length === 4 && (w.wInverted.shape[2] !== 1 || w.wInverted.shape[3] !== 1)))
      throw invalidArgument(op, `[2F, ${C}, 1, 1] with an even 2F`, 'wInverted.shape', w.wInverted.shape);
    const F = F2 / 2;
    if (w.wDepth.shape.join() !== [F2, 1, 3, 3].join()) throw invalidArgument(op, `[${F2}, 1, 3, 3]`, 'wDepth.shape', w.wDepth.shape);
    const Cout = w.wPoint.shape[0];
    if (w.wPoint.size !== Cout * F) throw invalidArgument(op, `[Cout, ${F}, 1, 1]`, 'wPoint.shape', w.wPoint.shape);
    if (w.bInverted) this.f32Shape(op, 'bInverted', w.bInverted, [F2]);
    if (w.bDepth) this.f32Shape(op, 'bDepth', w.bDepth, [F2]);
    if (opts.fastBf16 && dt !== 'bf16') throw invalidArgument(op, 'bf16 weights with fastBf16', 'wInverted.dtype', dt);
    if (w.wInverted.layout !== w.wPoint.layout) throw invalidArgument(op, `the layout of wInverted (${w.wInverted.layout})`, 'wPoint.layout', w.wPoint.layout);
    if (w.wDepth.layout !== 'dense') throw invalidArgument(op, 'a dense depth-wise weight', 'wDepth.layout', w.wDepth.layout);
    const flags = (opts.fastBf16 ? 1 : 0) | (w.wInverted.layout === 'packed32' ? 2 : 0);
    const y = this.output(op, opts.out, [B, H * Wd, Cout]);
    this.call(op, () =>
      this.raw.glumbconv(x.data as F32, B, H, Wd, C, w.wInverted.data, this.opt(w.bInverted), w.wDepth.data, this.opt(w.bDepth),
        w.wPoint.data, dtypeCode(dt), F, Cout, flags, y.data as F32),
    );
    return y;
  }

  layerNorm(x: Tensor, opts: { eps: number; scale?: Tensor; shift?: Tensor; out?: Tensor }): Tensor {
    const op = 'layerNorm';
    this.f32(op, 'x', x);
    const D = x.shape[x.shape.length - 1];
    const rows = x.size / D;
    this.eps(op, opts.eps);
    if (!opts.scale !== !opts.shift) throw invalidArgument(op, 'both scale and shift or neither', opts.scale ? 'shift' : 'scale', undefined);
    let rpb = rows;
    if (opts.scale && opts.shift) {
      this.f32(op, 'scale', opts.scale);
      this.f32(op, 'shift', opts.shift);
      const nb = opts.scale.size / D;
      if (!Number.isInteger(nb) || opts.scale.shape[opts.scale.shape.length - 1] !== D || rows % nb !== 0)
        throw invalidArgument(op, `[nb, ${D}] with nb dividing the ${rows} rows`, 'scale.shape', opts.scale.shape);
      if (opts.shift.shape.join() !== opts.scale.shape.join()) throw invalidArgument(op, `the shape of scale ${JSON.stringify(opts.scale.shape)}`, 'shift.shape', opts.shift.shape);
      rpb = rows / nb;
    }
    const y = this.output(op, opts.out, x.shape);
    this.call(op, () => this.raw.layerNorm(x.data as F32, rows, D, opts.eps, this.opt(opts.scale), this.opt(opts.shift), rpb, y.data as F32));
    return y;
  }

  residual(x: Tensor, y: Tensor, opts: { gate?: Tensor; out?: Tensor } = {}): Tensor {
    const op = 'residual';
    this.f32(op, 'x', x);
    this.f32(op, 'y', y);
    if (y.shape.join() !== x.shape.join()) throw invalidArgument(op, `the shape of x ${JSON.stringify(x.shape)}`, 'y.shape', y.shape);
    const D = x.shape[x.shape.length - 1];
    const rows = x.size / D;
    let rpb = rows;
    if (opts.gate) {
      this.f32(op, 'gate', opts.gate);
      const nb = opts.gate.size / D;
      if (opts.gate.shape[opts.gate.shape.length - 1] !== D || !Number.isInteger(nb) || rows % nb !== 0)
        throw invalidArgument(op, `[nb, ${D}] with nb dividing the ${rows} rows`, 'gate.shape', opts.gate.shape);
      rpb = rows / nb;
    }
    const out = opts.out === x ? x : this.output(op, opts.out, x.shape);
    this.call(op, () => this.raw.residual(x.data as F32, y.data as F32, rows, D, this.opt(opts.gate), rpb, out.data as F32));
    return out;
  }

  mul(x: Tensor, y: Tensor, out?: Tensor): Tensor {
    const op = 'mul';
    this.f32(op, 'x', x);
    this.f32(op, 'y', y);
    if (y.shape.join() !== x.shape.join()) throw invalidArgument(op, `the shape of x ${JSON.stringify(x.shape)}`, 'y.shape', y.shape);
    const o = out === x || out === y ? out : this.output(op, out, x.shape);
    this.call(op, () => this.raw.mul(x.data as F32, y.data as F32, x.size, o.data as F32));
    return o;
  }

  rmsNorm(x: Tensor, opts: { eps: number; weight?: Tensor; bias?: Tensor; onePlusWeight?: boolean; out?: Tensor }): Tensor {
    const op = 'rmsNorm';
    this.f32(op, 'x', x);
    const D = x.shape[x.shape.length - 1];
    this.eps(op, opts.eps);
    if (opts.weight) this.f32Shape(op, 'weight', opts.weight, [D]);
    if (opts.bias) this.f32Shape(op, 'bias', opts.bias, [D]);
    if (opts.onePlusWeight && !opts.weight) throw invalidArgument(op, 'a weight with onePlusWeight', 'weight', undefined);
    const y = this.output(op, opts.out, x.shape);
    this.call(op, () =>
      this.raw.rmsNorm(x.data as F32, x.size / D, D, this.opt(opts.weight), this.opt(opts.bias), opts.eps, opts.onePlusWeight ? 1 : 0, y.data as F32),
    );
    return y;
  }

  rmsNormChannels(x: Tensor, opts: { eps: number; weight?: Tensor; bias?: Tensor; out?: Tensor }): Tensor {
    const op = 'rmsNormChannels';
    this.f32(op, 'x', x);
    if (x.shape.length < 3) throw invalidArgument(op, 'an NCHW map [B, C, H, W]', 'x.shape', x.shape);
    const [B, C] = x.shape;
    this.eps(op, opts.eps);
    if (opts.weight) this.f32Shape(op, 'weight', opts.weight, [C]);
    if (opts.bias) this.f32Shape(op, 'bias', opts.bias, [C]);
    const y = this.output(op, opts.out, x.shape);
    this.call(op, () =>
      this.raw.rmsNormChannels(x.data as F32, B, C, x.size / (B * C), this.opt(opts.weight), this.opt(opts.bias), opts.eps, y.data as F32),
    );
    return y;
  }

  pixelShuffle(x: Tensor, r: number, out?: Tensor): Tensor {
    const op = 'pixelShuffle';
    const [B, Cr, H, W] = this.nchw(op, x);
    if (!isPositiveInt(r) || Cr % (r * r) !== 0) throw invalidArgument(op, `a positive integer whose square divides ${Cr} channels`, 'r', r);
    const C = Cr / (r * r);
    const y = this.output(op, out, [B, C, H * r, W * r]);
    this.call(op, () => this.raw.pixelShuffle(x.data as F32, B, C, H, W, r, y.data as F32));
    return y;
  }

  pixelUnshuffle(x: Tensor, r: number, out?: Tensor): Tensor {
    const op = 'pixelUnshuffle';
    const [B, C, H, W] = this.nchw(op, x);
    if (!isPositiveInt(r) || H % r !== 0 || W % r !== 0) throw invalidArgument(op, `a positive integer dividing H=${H} and W=${W}`, 'r', r);
    const y = this.output(op, out, [B, C * r * r, H / r, W / r]);
    this.call(op, () => this.raw.pixelUnshuffle(x.data as F32, B, C, H, W, r, y.data as F32));
    return y;
  }

  upsampleNearest2x(x: Tensor, out?: Tensor): Tensor {
    const op = 'upsampleNearest2x';
    const [B, C, H, W] = this.nchw(op, x);
    const y = this.output(op, out, [B, C, 2 * H, 2 * W]);
    this.call(op, () => this.raw.upsampleNearest2x(x.data as F32, B, C, H, W, y.data as F32));
    return y;
  }

  activation(x: Tensor, act: Activation, out?: Tensor): Tensor {
    const op = 'activation';
    this.f32(op, 'x', x);
    const a = this.act(op, act);
    const y = out === x ? x : this.output(op, out, x.shape);
    this.call(op, () => this.raw.activation(x.data as F32, x.size, a, y.data as F32));
    return y;
  }

  rope(x: View4 | Tensor, opts: { positions?: Int32Array; theta?: number; out?: View4 | Tensor } = {}): Tensor {
    const op = 'rope';
    const xv = this.view(op, 'x', x);
    const [B, L, H, D] = xv.shape;
    if (D % 2 !== 0) throw invalidArgument(op, 'an even head dimension', 'x.shape[3]', D);
    const theta = opts.theta ?? 10000;
    if (!(theta > 1 && Number.isFinite(theta))) throw invalidArgument(op, 'a finite base > 1', 'theta', theta);
    if (opts.positions !== undefined && (!(opts.positions instanceof Int32Array) || opts.positions.length !== L))
      throw invalidArgument(op, `an Int32Array of ${L} positions`, 'positions', opts.positions);
    const [out, outT] = opts.out === x ? [xv, xv.tensor] as const : this.outView(op, opts.out, xv.shape);
    this.call(op, () => this.raw.rope(...this.viewArgs(xv), ...this.viewArgs(out), B, L, H, D, opts.positions ?? null, theta));
    return outT;
  }

  // ---- helpers ----

  /** Runs a raw kernel call, turning its failures into SanaErrors. */
  protected call<T>(op: string, fn: () => T): T {
    if (this.disposedFlag) throw new SanaError('ERR_SANA_DISPOSED', `${op}: the ${this.name} backend was disposed`);
    try {
      return fn();
    } catch (e) {
      throw fromKernelError(e);
    }
  }

  private checkShape(op: string, shape: readonly number[]): void {
    if (!Array.isArray(shape) || shape.length === 0 || !shape.every(isPositiveInt))
      throw invalidArgument(op, 'a non-empty array of positive integers', 'shape', shape);
    const size = shape.reduce((a, b) => a * b, 1);
    if (size > 2 ** 40) throw invalidArgument(op, 'at most 2^40 elements', 'shape', shape);
  }

  private own(op: string, name: string, t: Tensor): void {
    if (!(t instanceof Tensor)) throw invalidArgument(op, 'a Tensor', name, t);
    if (t.owner !== this) throw invalidArgument(op, `a tensor of this ${this.name} backend`, name, `a tensor of the ${t.owner.name} backend`);
    if (t.disposed) throw new SanaError('ERR_SANA_DISPOSED', `${op}: ${name} (tensor #${t.id}) was disposed`);
  }

  private f32(op: string, name: string, t: Tensor): void {
    this.own(op, name, t);
    if (t.dtype !== 'f32') throw invalidArgument(op, 'an f32 tensor', `${name}.dtype`, t.dtype);
  }

  private f32Shape(op: string, name: string, t: Tensor, shape: number[]): void {
    this.f32(op, name, t);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
      throw invalidArgument(op, JSON.stringify(shape), `${name}.shape`, t.shape);
  }

  private weight(op: string, name: string, t: Tensor): void {
    this.own(op, name, t);
  }

  private nchw(op: string, x: Tensor): [number, number, number, number] {
    this.f32(op, 'x', x);
    if (x.shape.length !== 4) throw invalidArgument(op, 'an NCHW map [B, C, H, W]', 'x.shape', x.shape);
    return x.shape as [number, number, number, number];
  }

  private eps(op: string, eps: number): void {
    if (!(eps > 0 && eps < 1)) throw invalidArgument(op, '0 < eps < 1', 'eps', eps);
  }

  private act(op: string, act: Activation | undefined): number {
    if (act === undefined) return 0;
    const code = ACTS[act];
    if (code === undefined) throw invalidArgument(op, 'one of none, relu, silu, gelu-tanh', 'act', act);
    return code;
  }

  private opt(t: Tensor | undefined): F32 | null {
    return t ? (t.data as F32) : null;
  }

  private output(op: string, out: Tensor | undefined, shape: readonly number[]): Tensor {
    if (!out) return this.empty(shape);
    this.f32(op, 'out', out);
    if (out.size !== shape.reduce((a, b) => a * b, 1) || out.shape[out.shape.length - 1] !== shape[shape.length - 1])
      throw invalidArgument(op, JSON.stringify(shape), 'out.shape', out.shape);
    return out;
  }

  private view(op: string, name: string, v: View4 | Tensor): View4 {
    if (v instanceof Tensor) {
      this.f32(op, name, v);
      if (v.shape.length !== 4) throw invalidArgument(op, 'a 4-D tensor [B, N, heads, dim] or a view4()', `${name}.shape`, v.shape);
      return { tensor: v, shape: v.shape as [number, number, number, number], strides: contiguousStrides(v.shape) as [number, number, number, number], offset: 0 };
    }
    this.f32(op, `${name}.tensor`, v.tensor);
    if (v.shape.length !== 4 || !v.shape.every(isPositiveInt)) throw invalidArgument(op, 'four positive sizes', `${name}.shape`, v.shape);
    if (v.strides.length !== 4 || !v.strides.every((s) => Number.isInteger(s) && s >= 0))
      throw invalidArgument(op, 'four non-negative integer strides', `${name}.strides`, v.strides);
    if (!Number.isInteger(v.offset) || v.offset < 0) throw invalidArgument(op, 'a non-negative integer', `${name}.offset`, v.offset);
    const last = v.offset + v.shape.reduce((acc, d, i) => acc + (d - 1) * v.strides[i], 0);
    if (last >= v.tensor.size)
      throw invalidArgument(op, `a view inside its tensor of ${v.tensor.size} elements`, name, `a view reaching element ${last}`);
    return v;
  }

  private outView(op: string, out: View4 | Tensor | undefined, shape: readonly [number, number, number, number]): [View4, Tensor] {
    if (!out) {
      const t = this.empty(shape);
      return [{ tensor: t, shape, strides: contiguousStrides(shape) as [number, number, number, number], offset: 0 }, t];
    }
    const v = this.view(op, 'out', out);
    if (v.shape.some((d, i) => d !== shape[i])) throw invalidArgument(op, JSON.stringify(shape), 'out.shape', v.shape);
    return [v, v.tensor];
  }

  private viewArgs(v: View4): [F32, number, number, number, number, number] {
    return [v.tensor.data as F32, v.offset, v.strides[0], v.strides[1], v.strides[2], v.strides[3]];
  }
}

/** Byte size helper for storage implementations. */
export function storageBytes(dtype: DType, size: number): number {
  return Math.max(1, size * bytesPerElement(dtype));
}
