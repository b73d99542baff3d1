import { fromKernelError, invalidArgument, SanaError } from '../errors.js';
import { dtypeCode, encode, storageArrayType, type DType, type TensorArray } from '../tensor/dtype.js';
import { contiguousStrides, packedWeightWords, Tensor, view4, type Storage, type View4 } from '../tensor/tensor.js';
import { BlockCache, type Usage } from './block-cache.js';
import { activationCode, checkEps, encodeArgs, isPositiveInt, type OpArg, type RawKernels } from './raw-kernels.js';
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
  OpTiming,
} from './backend.js';

/** Validation and output allocation for every op, on top of a RawKernels implementation and its memory.
 * Everything a user can get wrong is checked here and reported as a SanaError before native code runs. */
export abstract class KernelBackend implements Backend {
  abstract readonly name: BackendName;
  protected disposedFlag = false;
  selection?: BackendInfo['selection'];
  private readonly blocks = new BlockCache((bytes) => this.call('alloc', () => this.allocStorage(bytes)));
  private readonly opTable: ReadonlyMap<string, { index: number; signature: string }>;
  /** per-op time while profiling (null: off) */
  private timings: Map<string, { calls: number; ms: number }> | null = null;

  protected constructor(protected readonly raw: RawKernels) {
    this.opTable = new Map(raw.ops.map((o, index) => [o.name, { index, signature: o.signature }]));
  }

  /** A block of `bytes` bytes. */
  protected abstract allocStorage(bytes: number): Storage;
  protected abstract releaseContext(): void;

  memory(): BackendMemory {
    const c = this.blocks.counters;
    return { ...c, bytes: c.weightBytes + c.activationBytes };
  }

  profile(on: boolean): void {
    this.timings = on ? new Map() : null;
  }

  profileReport(): OpTiming[] {
    return [...(this.timings ?? [])].map(([op, t]) => ({ op, ...t })).sort((a, b) => b.ms - a.ms);
  }

  async synchronize(): Promise<void> {
    // host kernels return when their work is done
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
    if (data !== undefined && data.length !== t.size) {
      t.dispose();
      throw invalidArgument('tensor', `${t.size} values for shape ${JSON.stringify(shape)}`, 'data', data);
    }
    t.write(data === undefined ? new (storageArrayType(dtype))(t.size) : encode(data, dtype));
    return t;
  }

  tensorFromRaw(shape: readonly number[], dtype: DType, raw: TensorArray, usage: Usage = 'activation'): Tensor {
    const want = storageArrayType(dtype);
    if (!(raw instanceof want)) throw invalidArgument('tensorFromRaw', `a ${want.name} for dtype ${dtype}`, 'raw', raw);
    const t = this.empty(shape, dtype, usage);
    if (raw.length !== t.size) {
      t.dispose();
      throw invalidArgument('tensorFromRaw', `${t.size} elements for shape ${JSON.stringify(shape)}`, 'raw', raw);
    }
    t.write(raw);
    return t;
  }

  // ---- ops ----

  packWeight(w: Tensor): Tensor {
    const op = 'packWeight';
    if (w.dtype !== 'f32' && w.dtype !== 'bf16') throw invalidArgument(op, 'f32 or bf16 weights', 'w.dtype', w.dtype);
    if (w.layout !== 'dense') throw invalidArgument(op, 'a dense weight', 'w.layout', w.layout);
    if (w.shape.length !== 2 && !(w.shape.length === 4 && w.shape[2] === 1 && w.shape[3] === 1))
      throw invalidArgument(op, 'a linear weight [out, in] (or a 1×1 conv weight [out, in, 1, 1])', 'w.shape', w.shape);
    const [N, K] = w.shape;
    const packedSize = packedWeightWords(N, K, w.dtype);
    const t = new Tensor(this, [N, K], w.dtype, this.blocks.take(w.dtype, packedSize, 'weight'), 'packed32');
    try {
      this.run('pack_weight', [w, dtypeCode(w.dtype), N, K, t]);
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
    const act = activationCode(op, opts.act);
    if (opts.fastBf16 && w.dtype !== 'bf16') throw invalidArgument(op, 'bf16 weights with fastBf16', 'w.dtype', w.dtype);
    const y = this.output(op, opts.out, [...x.shape.slice(0, -1), N]);
    const flags = (opts.fastBf16 ? 1 : 0) | (w.layout === 'packed32' ? 2 : 0);
    this.run('linear', [x, M, K, w, dtypeCode(w.dtype), N, opts.bias ?? null, act, flags, y]);
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
    const up = opts.upsample ?? 1;
    if (!isPositiveInt(stride)) throw invalidArgument(op, 'a positive integer', 'stride', stride);
    if (up !== 1 && !(up === 2 && groups === 1)) throw invalidArgument(op, '1, or 2 with groups 1', 'upsample', up);
    if (!Number.isInteger(pad) || pad < 0) throw invalidArgument(op, 'a non-negative integer', 'padding', pad);
    if (!isPositiveInt(groups) || Cin % groups !== 0 || Cout % groups !== 0)
      throw invalidArgument(op, `a divisor of Cin (${Cin}) and Cout (${Cout})`, 'groups', groups);
    if (cig !== Cin / groups)
      throw invalidArgument(op, `${Cin / groups} input channels per group (Cin ${Cin} / groups ${groups}) in w.shape[1]`, 'w.shape', w.shape);
    const Ho = Math.floor((H * up + 2 * pad - kh) / stride) + 1;
    const Wo = Math.floor((W * up + 2 * pad - kw) / stride) + 1;
    if (Ho < 1 || Wo < 1) throw invalidArgument(op, `an input of at least ${kh}×${kw} after padding ${pad}`, 'x.shape', x.shape);
    if (opts.bias) this.f32Shape(op, 'bias', opts.bias, [Cout]);
    const act = activationCode(op, opts.act);
    const y = this.output(op, opts.out, [B, Cout, Ho, Wo]);
    this.run('conv2d', [x, B, Cin, H, W, w, dtypeCode(w.dtype), Cout, kh, kw, stride, pad, groups, up, opts.bias ?? null, act, y]);
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
    this.run('linear_attention', [qv, kv, vv, out, B, N, H, D, eps]);
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
    this.run('attention', [qv, kv, vv, opts.keyBias ?? null, [B, Lq, Lk, Hq, Hkv, D, Dv, scale, softcap, causal ? 1 : 0, window], out]);
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
    this.run('glumbconv', [x, B, H, Wd, C, w.wInverted, w.bInverted ?? null, w.wDepth, w.bDepth ?? null, w.wPoint, dtypeCode(dt), F, Cout, flags, y]);
    return y;
  }

  layerNorm(x: Tensor, opts: { eps: number; scale?: Tensor; shift?: Tensor; out?: Tensor }): Tensor {
    const op = 'layerNorm';
    this.f32(op, 'x', x);
    const D = x.shape[x.shape.length - 1];
    const rows = x.size / D;
    checkEps(op, opts.eps);
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
    this.run('layer_norm', [x, rows, D, opts.eps, opts.scale ?? null, opts.shift ?? null, rpb, y]);
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
    this.run('residual', [x, y, rows, D, opts.gate ?? null, rpb, out]);
    return out;
  }

  mul(x: Tensor, y: Tensor, out?: Tensor): Tensor {
    const op = 'mul';
    this.f32(op, 'x', x);
    this.f32(op, 'y', y);
    if (y.shape.join() !== x.shape.join()) throw invalidArgument(op, `the shape of x ${JSON.stringify(x.shape)}`, 'y.shape', y.shape);
    const o = out === x || out === y ? out : this.output(op, out, x.shape);
    this.run('mul', [x, y, x.size, o]);
    return o;
  }

  rmsNorm(x: Tensor, opts: { eps: number; weight?: Tensor; bias?: Tensor; onePlusWeight?: boolean; out?: Tensor }): Tensor {
    const op = 'rmsNorm';
    this.f32(op, 'x', x);
    const D = x.shape[x.shape.length - 1];
    checkEps(op, opts.eps);
    if (opts.weight) this.f32Shape(op, 'weight', opts.weight, [D]);
    if (opts.bias) this.f32Shape(op, 'bias', opts.bias, [D]);
    if (opts.onePlusWeight && !opts.weight) throw invalidArgument(op, 'a weight with onePlusWeight', 'weight', undefined);
    const y = this.output(op, opts.out, x.shape);
    this.run('rms_norm', [x, x.size / D, D, opts.weight ?? null, opts.bias ?? null, opts.eps, opts.onePlusWeight ? 1 : 0, y]);
    return y;
  }

  rmsNormChannels(x: Tensor, opts: { eps: number; weight?: Tensor; bias?: Tensor; out?: Tensor }): Tensor {
    const op = 'rmsNormChannels';
    this.f32(op, 'x', x);
    if (x.shape.length < 3) throw invalidArgument(op, 'an NCHW map [B, C, H, W]', 'x.shape', x.shape);
    const [B, C] = x.shape;
    checkEps(op, opts.eps);
    if (opts.weight) this.f32Shape(op, 'weight', opts.weight, [C]);
    if (opts.bias) this.f32Shape(op, 'bias', opts.bias, [C]);
    const y = this.output(op, opts.out, x.shape);
    this.run('rms_norm_channels', [x, B, C, x.size / (B * C), opts.weight ?? null, opts.bias ?? null, opts.eps, y]);
    return y;
  }

  pixelShuffle(x: Tensor, r: number, opts: { repeat?: number; accumulate?: boolean; out?: Tensor } = {}): Tensor {
    const op = 'pixelShuffle';
    const [B, Cx, H, W] = this.nchw(op, x);
    const repeat = opts.repeat ?? 1;
    if (!isPositiveInt(repeat)) throw invalidArgument(op, 'a positive integer', 'opts.repeat', repeat);
    const Cr = Cx * repeat;
    if (!isPositiveInt(r) || Cr % (r * r) !== 0) throw invalidArgument(op, `a positive integer whose square divides ${repeat > 1 ? `${Cx}·${repeat} repeated` : Cx} channels`, 'r', r);
    if (opts.accumulate && !opts.out) throw invalidArgument(op, 'the tensor to add to', 'opts.out', opts.out);
    const C = Cr / (r * r);
    const y = this.output(op, opts.out, [B, C, H * r, W * r]);
    this.run('pixel_shuffle', [x, B, C, H, W, r, repeat, opts.accumulate ? 1 : 0, y]);
    return y;
  }

  pixelUnshuffle(x: Tensor, r: number, out?: Tensor): Tensor {
    const op = 'pixelUnshuffle';
    const [B, C, H, W] = this.nchw(op, x);
    if (!isPositiveInt(r) || H % r !== 0 || W % r !== 0) throw invalidArgument(op, `a positive integer dividing H=${H} and W=${W}`, 'r', r);
    const y = this.output(op, out, [B, C * r * r, H / r, W / r]);
    this.run('pixel_unshuffle', [x, B, C, H, W, r, y]);
    return y;
  }

  activation(x: Tensor, act: Activation, out?: Tensor): Tensor {
    const op = 'activation';
    this.f32(op, 'x', x);
    const a = activationCode(op, act);
    const y = out === x ? x : this.output(op, out, x.shape);
    this.run('activation', [x, x.size, a, y]);
    return y;
  }

  rope(x: View4 | Tensor, opts: { positions?: Tensor; theta?: number; out?: View4 | Tensor } = {}): Tensor {
    const op = 'rope';
    const xv = this.view(op, 'x', x);
    const [B, L, H, D] = xv.shape;
    if (D % 2 !== 0) throw invalidArgument(op, 'an even head dimension', 'x.shape[3]', D);
    const theta = opts.theta ?? 10000;
    if (!(theta > 1 && Number.isFinite(theta))) throw invalidArgument(op, 'a finite base > 1', 'theta', theta);
    if (opts.positions !== undefined) this.typed(op, 'positions', opts.positions, 'i32', [L]);
    const [out, outT] = opts.out === x ? [xv, xv.tensor] as const : this.outView(op, opts.out, xv.shape);
    this.run(op, [xv, B, L, H, D, opts.positions ?? null, theta, out]);
    return outT;
  }

  // ---- glue ops ----

  axpby(a: number, x: Tensor, b: number, y: Tensor | null, out?: Tensor): Tensor {
    const op = 'axpby';
    this.f32(op, 'x', x);
    if (y) this.f32Shape(op, 'y', y, [...x.shape]);
    for (const [n, v] of [['a', a], ['b', b]] as const) if (!Number.isFinite(v)) throw invalidArgument(op, 'a finite number', n, v);
    const o = out === x || (out !== undefined && out === y) ? out : this.output(op, out, x.shape);
    this.run(op, [a, x, b, y, x.size, o]);
    return o;
  }

  cfgCombine(uncond: Tensor, cond: Tensor, scale: number, out?: Tensor): Tensor {
    const op = 'cfgCombine';
    this.f32(op, 'uncond', uncond);
    this.f32Shape(op, 'cond', cond, [...uncond.shape]);
    if (!Number.isFinite(scale)) throw invalidArgument(op, 'a finite number', 'scale', scale);
    const o = out === uncond || out === cond ? out : this.output(op, out, uncond.shape);
    this.run('cfg_combine', [uncond, cond, uncond.size, scale, o]);
    return o;
  }

  countNonFinite(x: Tensor, out?: Tensor): Tensor {
    const op = 'countNonFinite';
    this.f32(op, 'x', x);
    const o = this.output(op, out, [1]);
    this.run('count_nonfinite', [x, x.size, o]);
    return o;
  }

  adalnModulation(table: Tensor, emb: Tensor, opts: { shared?: boolean; out?: Tensor } = {}): Tensor {
    const op = 'adalnModulation';
    this.f32(op, 'table', table);
    this.f32(op, 'emb', emb);
    if (table.shape.length !== 2) throw invalidArgument(op, 'a table [K, D]', 'table.shape', table.shape);
    const [K, D] = table.shape;
    const width = opts.shared ? D : K * D;
    const B = emb.size / width;
    if (!Number.isInteger(B) || emb.shape[emb.shape.length - 1] !== width)
      throw invalidArgument(op, `[B, ${width}] for a [${K}, ${D}] table${opts.shared ? ' (shared)' : ''}`, 'emb.shape', emb.shape);
    const o = this.output(op, opts.out, [K, B, D]);
    this.run('adaln_modulation', [table, emb, B, K, D, width, opts.shared ? 0 : D, o]);
    return o;
  }

  patchify(x: Tensor, patch: number, out?: Tensor): Tensor {
    const op = 'patchify';
    const [B, C, H, W] = this.nchw(op, x);
    if (!isPositiveInt(patch) || H % patch || W % patch) throw invalidArgument(op, `a patch size dividing H=${H} and W=${W}`, 'patch', patch);
    const o = this.output(op, out, [B, (H / patch) * (W / patch), patch * patch * C]);
    this.run(op, [x, B, C, H, W, patch, o]);
    return o;
  }

  unpatchify(x: Tensor, opts: { height: number; width: number; patch: number; out?: Tensor }): Tensor {
    const op = 'unpatchify';
    this.f32(op, 'x', x);
    const { height: h, width: w, patch: p } = opts;
    for (const [n, v] of [['height', h], ['width', w], ['patch', p]] as const) if (!isPositiveInt(v)) throw invalidArgument(op, 'a positive integer', n, v);
    if (x.shape.length !== 3 || x.shape[1] !== h * w || x.shape[2] % (p * p) !== 0)
      throw invalidArgument(op, `tokens [B, ${h * w}, p·p·C] for a ${h}×${w} grid and patch ${p}`, 'x.shape', x.shape);
    const [B, , PC] = x.shape;
    const C = PC / (p * p);
    const o = this.output(op, opts.out, [B, C, h * p, w * p]);
    this.run(op, [x, B, h, w, p, C, o]);
    return o;
  }

  copy(src: View4 | Tensor, dst: View4 | Tensor): Tensor {
    const op = 'copy';
    if (src instanceof Tensor && dst instanceof Tensor) {
      // whole tensors: element order, any shapes of one size
      this.f32(op, 'dst', dst);
      if (src.size !== dst.size) throw invalidArgument(op, `${src.size} elements (the size of src)`, 'dst.shape', dst.shape);
      [src, dst] = [view4(src, [1, 1, 1, src.size]), view4(dst, [1, 1, 1, dst.size])];
    }
    const sv = this.view(op, 'src', src);
    const dv = this.view(op, 'dst', dst);
    if (sv.shape.some((d, i) => d !== dv.shape[i])) throw invalidArgument(op, `the shape of src ${JSON.stringify(sv.shape)}`, 'dst.shape', dv.shape);
    this.run('copy4', [sv, dv, ...sv.shape]);
    return dv.tensor;
  }

  embedding(table: Tensor, ids: Tensor, opts: { scale?: number; out?: Tensor } = {}): Tensor {
    const op = 'embedding';
    this.weight(op, 'table', table);
    if (table.shape.length !== 2 || table.layout !== 'dense') throw invalidArgument(op, 'a dense table [V, D]', 'table.shape', table.shape);
    if (table.dtype === 'i32') throw invalidArgument(op, 'an f32, f16 or bf16 table', 'table.dtype', table.dtype);
    this.typed(op, 'ids', ids, 'i32', [ids.size]);
    const scale = opts.scale ?? 1;
    if (!Number.isFinite(scale)) throw invalidArgument(op, 'a finite number', 'scale', scale);
    const [V, D] = table.shape;
    const o = this.output(op, opts.out, [ids.size, D]);
    this.run(op, [table, dtypeCode(table.dtype), V, D, ids, ids.size, scale, o]);
    return o;
  }

  groupMean(x: Tensor, groups: number, out?: Tensor): Tensor {
    const op = 'groupMean';
    const [B, C, H, W] = this.nchw(op, x);
    if (!isPositiveInt(groups) || C % groups !== 0) throw invalidArgument(op, `a divisor of the ${C} channels`, 'groups', groups);
    const o = this.output(op, out, [B, groups, H, W]);
    this.run('group_mean', [x, B, C, H * W, groups, o]);
    return o;
  }

  evitNormalize(x: Tensor, heads: number, eps: number, out?: Tensor): Tensor {
    const op = 'evitNormalize';
    const [B, C, H, W] = this.nchw(op, x);
    if (!isPositiveInt(heads) || C % heads !== 0 || C / heads < 2) throw invalidArgument(op, `a divisor of the ${C} channels leaving ≥ 2 per head`, 'heads', heads);
    if (!(eps >= 0 && eps < 1)) throw invalidArgument(op, '0 <= eps < 1', 'eps', eps);
    const D = C / heads - 1;
    const o = this.output(op, out, [B, heads * D, H, W]);
    this.run('evit_normalize', [x, B, heads, D, H * W, eps, o]);
    return o;
  }

  // ---- helpers ----

  /** Runs op `name` of the kernel table with its arguments in C order (after the context). */
  private run(name: string, args: readonly OpArg[]): void {
    const spec = this.opTable.get(name);
    if (!spec) throw new SanaError('ERR_SANA_UNSUPPORTED', `${name}: the ${this.name} kernels of this build have no such op (rebuild them)`);
    const sig = spec.signature;
    if (args.length !== sig.length) throw new SanaError('ERR_SANA_NATIVE', `${name}: ${args.length} arguments for the C signature (${sig})`);
    const t0 = this.timings ? performance.now() : 0;
    this.call(name, () => this.raw.call(spec.index, encodeArgs(sig, args, this.raw.args())));
    if (!this.timings) return;
    const entry = this.timings.get(name) ?? { calls: 0, ms: 0 };
    entry.calls++;
    entry.ms += performance.now() - t0;
    this.timings.set(name, entry);
  }

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
    if (t.dtype === 'i32') throw invalidArgument(op, 'an f32, f16 or bf16 weight', `${name}.dtype`, t.dtype);
  }

  private typed(op: string, name: string, t: Tensor, dtype: DType, shape: number[]): void {
    this.own(op, name, t);
    if (t.dtype !== dtype) throw invalidArgument(op, `an ${dtype} tensor`, `${name}.dtype`, t.dtype);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) throw invalidArgument(op, JSON.stringify(shape), `${name}.shape`, t.shape);
  }

  private nchw(op: string, x: Tensor): [number, number, number, number] {
    this.f32(op, 'x', x);
    if (x.shape.length !== 4) throw invalidArgument(op, 'an NCHW map [B, C, H, W]', 'x.shape', x.shape);
    return x.shape as [number, number, number, number];
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
}
