/**
 * AutoencoderDC (deep-compression autoencoder) over the Backend ops, NCHW like diffusers. Decoder and
 * encoder, ResBlock and EfficientViT stages (multi-scale ReLU linear attention + GLUMBConv), the up/down
 * blocks with their shortcuts, channel RMSNorm, and diffusers-compatible tiled decoding.
 * Formulas and key names: ../shared/design/sana-spec.md §3.
 */
import type { Backend } from '../backends/backend.js';
import { SanaError } from '../errors.js';
import { ConfigReader } from '../io/config.js';
import { WeightStore } from '../io/weights.js';
import { view4, type Tensor } from '../tensor/tensor.js';
import { decoderSteps, readAutoencoderDcConfig, type Act, type AutoencoderDcConfig, type BlockType, type DecoderStep } from './dcae-config.js';
import { decoderSpecs, encoderSpecs } from './dcae-specs.js';
import { blendTiles, cropTensor, latentTiles, type Rect, type TilingOptions } from './dcae-tiling.js';
import { Params, type LoadOptions } from './params.js';
import type { Taps } from './sana-transformer.js';

/** LiteMLA's ε in out = num / (den + ε) (diffusers SanaMultiscaleAttnProcessor2_0). */
const LINEAR_ATTENTION_EPS = 1e-15;

export class AutoencoderDC {
  private constructor(
    readonly backend: Backend,
    readonly config: AutoencoderDcConfig,
    private readonly p: Params,
    readonly hasEncoder: boolean,
    readonly warnings: string[],
  ) {}

  /** Loads decoder weights (and the encoder's when present: released checkpoints carry both; decoder-only
   * folders are accepted and then cannot encode). */
  static fromFolder(dir: string, backend: Backend, opts: LoadOptions = {}): AutoencoderDC {
    const cfg = ConfigReader.load(dir, 'config.json', opts.configOverrides);
    const config = readAutoencoderDcConfig(cfg);
    const store = WeightStore.open(dir, 'diffusion_pytorch_model', opts.variant);
    try {
      cfg.checkCounts(store.names().length, store.source);
      const hasEncoder = store.names().some((n) => n.startsWith('encoder.'));
      const specs = [...decoderSpecs(config), ...(hasEncoder ? encoderSpecs(config) : [])];
      // bf16's 8-bit mantissa costs 1–3 % relative L2 error through the DC-AE's ~40 weight layers on the
      // golden cases, f16's 11 bits < 0.2 %: the same memory, so reduced-precision mode holds DC-AE weights as f16
      const weightDtype = opts.weightDtype === 'bf16' ? 'f16' : opts.weightDtype;
      const params = Params.load(backend, store, specs, 'AutoencoderDC', weightDtype, opts.onBytesRead);
      // the real q/k/v of a head are consecutive [q|k|v] channel blocks of one fused [3C, C, 1, 1] projection
      for (const s of specs)
        if (s.name.endsWith('.attn.to_q.weight')) {
          const pre = s.name.slice(0, -'.to_q.weight'.length);
          params.fuse(backend, `${pre}.to_qkv`, ['to_q', 'to_k', 'to_v'].map((n) => `${pre}.${n}.weight`), [3 * s.shape[0], s.shape[1], 1, 1]);
        }
      const warnings = [
        ...(opts.weightDtype === 'bf16' ? ['reduced-precision mode: AutoencoderDC weights are held as f16 (same memory as bf16, 8× finer mantissa)'] : []),
        ...params.warnings(cfg),
      ];
      return new AutoencoderDC(backend, config, params, hasEncoder, warnings);
    } finally {
      store.close();
    }
  }

  get spatialCompression(): number {
    return 2 ** (this.config.decoderBlockOutChannels.length - 1);
  }

  dispose(): void {
    this.p.dispose();
  }

  /** Image [B, in_channels, h·f, w·f] from latents [B, latent_channels, h, w]. Throws ERR_SANA_NON_FINITE on NaN/Inf. */
  decode(z: Float32Array, shape: readonly [number, number, number, number], opts: { tiling?: TilingOptions; taps?: Taps } = {}): Float32Array {
    const [, C, h, w] = shape;
    if (C !== this.config.latentChannels)
      throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `AutoencoderDC.decode: Expected ${this.config.latentChannels} latent channels for z but received ${C}`);
    const f = this.spatialCompression;
    let out: Float32Array;
    if (opts.tiling) {
      const t = opts.tiling;
      const tileH = t.tileSampleMinHeight / f;
      const tileW = t.tileSampleMinWidth / f;
      out = h > tileH || w > tileW ? this.tiledDecode(z, shape, t) : this.decodeWhole(z, shape, opts.taps);
    } else {
      out = this.decodeWhole(z, shape, opts.taps);
    }
    if (!out.every(Number.isFinite))
      throw new SanaError('ERR_SANA_NON_FINITE', 'AutoencoderDC.decode produced non-finite values (NaN or Infinity): the latents or weights hold NaN/Inf');
    return out;
  }

  /** Unscaled latent [B, latent_channels, H/f, W/f] of an image [B, in_channels, H, W] in [-1, 1]. */
  encode(x: Float32Array, shape: readonly [number, number, number, number]): Float32Array {
    if (!this.hasEncoder) throw new SanaError('ERR_SANA_INVALID_ARGUMENT', 'AutoencoderDC.encode: this checkpoint has no encoder weights');
    const be = this.backend;
    const c = this.config;
    const [B, Cin, H, W] = shape;
    const f = this.spatialCompression;
    if (Cin !== c.inChannels || H % f || W % f)
      throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `AutoencoderDC.encode: Expected [B, ${c.inChannels}, H, W] with H, W multiples of ${f} for x but received ${JSON.stringify(shape)}`);
    const scope = new Scope();
    try {
      const P = (n: string) => this.p.get(n);
      let hs = scope.keep(be.conv2d(scope.keep(be.tensor([...shape], 'f32', x)), P('encoder.conv_in.weight'), { bias: P('encoder.conv_in.bias'), padding: 1 }));
      const n = c.encoderBlockOutChannels.length;
      for (let i = 0; i < n; i++) {
        const pre = `encoder.down_blocks.${i}`;
        let k = 0;
        for (; k < c.encoderLayersPerBlock[i]; k++)
          hs = this.block(scope, `${pre}.${k}`, c.encoderBlockTypes[i], hs, 'silu', c.encoderQkvMultiscales[i]);
        if (i < n - 1) hs = this.downBlock(scope, `${pre}.${k}`, hs, c.encoderBlockOutChannels[i + 1]);
      }
      let out = scope.keep(be.conv2d(hs, P('encoder.conv_out.weight'), { bias: P('encoder.conv_out.bias'), padding: 1 }));
      if (c.encoderOutShortcut) out = scope.keep(be.residual(out, scope.keep(groupMean(be, hs, c.latentChannels))));
      const res = out.toFloat32();
      if (!res.every(Number.isFinite)) throw new SanaError('ERR_SANA_NON_FINITE', 'AutoencoderDC.encode produced non-finite values (NaN or Infinity)');
      return res;
    } finally {
      scope.dispose();
    }
  }

  private decodeWhole(z: Float32Array, shape: readonly [number, number, number, number], taps?: Taps): Float32Array {
    const steps = decoderSteps(this.config);
    let hs = this.backend.tensor([...shape], 'f32', z);
    try {
      for (const step of steps) {
        const next = this.runStep(step, hs, taps);
        hs.dispose();
        hs = next;
        if (taps && step.tap) taps(step.tap, hs.toFloat32(), [...hs.shape]);
      }
      return hs.toFloat32();
    } finally {
      hs.dispose();
    }
  }

  /** One decoder step on a whole map or a crop of it (zero padding at the crop's edges: the shard planner
   * gives crops enough halo that no kept pixel sees it). The step's intermediates are freed before it returns. */
  runStep(step: DecoderStep, x: Tensor, taps?: Taps): Tensor {
    const be = this.backend;
    const c = this.config;
    const P = (n: string) => this.p.get(n);
    const scope = new Scope();
    try {
      switch (step.kind) {
        case 'conv_in': {
          const hs = scope.keep(be.conv2d(x, P('decoder.conv_in.weight'), { bias: P('decoder.conv_in.bias'), padding: 1 }));
          return c.decoderInShortcut ? be.residual(hs, scope.keep(repeatInterleave(be, x, step.channels / c.latentChannels))) : scope.release(hs);
        }
        case 'up':
          return scope.release(this.upBlock(scope, step.pre, x, step.channels));
        case 'res':
          return scope.release(this.resBlock(scope, step.pre, x, step.act));
        case 'evit':
          return scope.release(this.efficientVitBlock(scope, step.pre, x, step.scales));
        case 'head': {
          const n = scope.keep(be.rmsNormChannels(x, { eps: 1e-5, weight: P('decoder.norm_out.weight'), bias: P('decoder.norm_out.bias') }));
          if (taps) taps('decoder.norm_out.out_channels_last', toChannelsLast(n), [n.shape[0], n.shape[2], n.shape[3], n.shape[1]]);
          be.activation(n, c.decoderConvActFn, n);
          return be.conv2d(n, P('decoder.conv_out.weight'), { bias: P('decoder.conv_out.bias'), padding: 1 });
        }
      }
    } finally {
      scope.dispose();
    }
  }

  /** diffusers' tiled decode: overlapping latent tiles decoded one by one, then blended (blendTiles). */
  private tiledDecode(z: Float32Array, shape: readonly [number, number, number, number], t: TilingOptions): Float32Array {
    const rows = latentTiles(z, shape, this.spatialCompression, t).map((row) => row.map((tile) => this.decodeWhole(tile.z, tile.shape)));
    return blendTiles(rows, shape, this.spatialCompression, this.config.inChannels, t);
  }

  private block(scope: Scope, pre: string, type: BlockType, x: Tensor, act: Act, scales: number[]): Tensor {
    return type === 'ResBlock' ? this.resBlock(scope, pre, x, act) : this.efficientVitBlock(scope, pre, x, scales);
  }

  private resBlock(scope: Scope, pre: string, x: Tensor, act: Act): Tensor {
    const be = this.backend;
    const P = (n: string) => this.p.get(`${pre}.${n}`);
    const h1 = scope.keep(be.conv2d(x, P('conv1.weight'), { bias: P('conv1.bias'), padding: 1, act }));
    const h2 = scope.keep(be.conv2d(h1, P('conv2.weight'), { padding: 1 }));
    const n = scope.keep(be.rmsNormChannels(h2, { eps: 1e-5, weight: P('norm.weight'), bias: P('norm.bias') }));
    return scope.keep(be.residual(x, n));
  }

  /** LiteMLA (multi-scale ReLU linear attention, residual inside) then GLUMBConv (residual inside). */
  private efficientVitBlock(scope: Scope, pre: string, x: Tensor, scales: number[]): Tensor {
    const be = this.backend;
    const [B, C, H, W] = x.shape;
    const HW = H * W;
    const hd = this.config.attentionHeadDim;
    const heads = C / hd;
    const branches = this.evitBranches(scope, pre, x, scales);
    // heads of each branch: channel blocks [q hd | k hd | v hd]; output channel g·hd + j of the concatenation
    const G = branches.length * heads;
    const att = scope.keep(be.empty([B, G * hd, H, W]));
    branches.forEach((t, s) => {
      const strides = [3 * C * HW, 1, 3 * hd * HW, HW] as const; // [B, HW, heads, hd] over NCHW [B, 3C, HW]
      const view = (offset: number) => ({ tensor: t, shape: [B, HW, heads, hd] as const, strides, offset });
      be.linearAttention(view(0), view(hd * HW), view(2 * hd * HW), {
        eps: LINEAR_ATTENTION_EPS,
        out: { tensor: att, shape: [B, HW, heads, hd] as const, strides: [G * hd * HW, 1, hd * HW, HW] as const, offset: s * heads * hd * HW },
      });
    });
    return this.evitFinish(scope, pre, x, att);
  }

  /** q|k|v as one [3C, C] 1×1 conv, then each multi-scale branch's aggregation of it (k×k depth-wise, grouped 1×1). */
  private evitBranches(scope: Scope, pre: string, x: Tensor, scales: number[]): Tensor[] {
    const be = this.backend;
    const C = x.shape[1];
    const heads = C / this.config.attentionHeadDim;
    const qkv = scope.keep(be.conv2d(x, this.p.get(`${pre}.attn.to_qkv`), {}));
    const branches = [qkv];
    scales.forEach((k, s) => {
      const agg = scope.keep(be.conv2d(qkv, this.p.get(`${pre}.attn.to_qkv_multiscale.${s}.proj_in.weight`), { padding: Math.floor(k / 2), groups: 3 * C }));
      branches.push(scope.keep(be.conv2d(agg, this.p.get(`${pre}.attn.to_qkv_multiscale.${s}.proj_out.weight`), { groups: 3 * heads })));
    });
    return branches;
  }

  /** to_out, norm_out and the attention residual, then GLUMBConv: silu(1×1 expand) → 3×3 depth-wise →
   * value · silu(gate) → 1×1 project → RMSNorm → residual. */
  private evitFinish(scope: Scope, pre: string, x: Tensor, att: Tensor): Tensor {
    const be = this.backend;
    const P = (n: string) => this.p.get(`${pre}.${n}`);
    const [B, C, H, W] = x.shape;
    const HW = H * W;
    const o = scope.keep(be.conv2d(att, P('attn.to_out.weight').reshape([C, att.shape[1], 1, 1]), {}));
    const on = scope.keep(be.rmsNormChannels(o, { eps: 1e-5, weight: P('attn.norm_out.weight'), bias: P('attn.norm_out.bias') }));
    const x1 = scope.keep(be.residual(x, on));
    const E = 8 * C;
    const t1 = scope.keep(be.conv2d(x1, P('conv_out.conv_inverted.weight'), { bias: P('conv_out.conv_inverted.bias'), act: 'silu' }));
    const t2 = scope.keep(be.conv2d(t1, P('conv_out.conv_depth.weight'), { bias: P('conv_out.conv_depth.bias'), padding: 1, groups: E }));
    const u = scope.keep(be.empty([B, E / 2, H, W]));
    for (let b = 0; b < B; b++) {
      const value = t2.slice(b * E * HW, [E / 2, HW]);
      const gate = t2.slice(b * E * HW + (E / 2) * HW, [E / 2, HW]);
      be.activation(gate, 'silu', gate);
      be.mul(value, gate, u.slice(b * (E / 2) * HW, [E / 2, HW]));
    }
    const t3 = scope.keep(be.conv2d(u, P('conv_out.conv_point.weight'), {}));
    const t4 = scope.keep(be.rmsNormChannels(t3, { eps: 1e-5, weight: P('conv_out.norm.weight'), bias: P('conv_out.norm.bias') }));
    return scope.keep(be.residual(x1, t4));
  }

  /**
   * Sharded decoding, first half of an EfficientViT block: this crop's share of every head's linear-attention
   * state, summed over the pixels of `own` (crop coordinates). Per branch and head, hd + 1 rows of hd:
   * Σ v·relu(k)ᵀ, then Σ relu(k). The shares of all shards add up to the whole map's state.
   */
  evitStatePartial(step: DecoderStep & { kind: 'evit' }, x: Tensor, own: Rect): Float32Array {
    const be = this.backend;
    const hd = this.config.attentionHeadDim;
    const heads = x.shape[1] / hd;
    const scope = new Scope();
    try {
      const branches = this.evitBranches(scope, step.pre, x, step.scales);
      const P = (own.y1 - own.y0) * (own.x1 - own.x0);
      const ones = scope.keep(be.tensor([1, P], 'f32', new Float32Array(P).fill(1)));
      const state = new Float32Array(branches.length * heads * (hd + 1) * hd);
      branches.forEach((t, s) => {
        const z = scope.keep(cropTensor(be, t, own));
        for (let g = 0; g < heads; g++) {
          const k = z.slice((g * 3 + 1) * hd * P, [hd, P]);
          const v = z.slice((g * 3 + 2) * hd * P, [hd, P]);
          be.activation(k, 'relu', k);
          const base = (s * heads + g) * (hd + 1) * hd;
          const kv = be.linear(v, k); // [hd (v), hd (k)]
          const ksum = be.linear(k, ones); // [hd, 1]
          state.set(kv.data as Float32Array, base);
          state.set(ksum.data as Float32Array, base + hd * hd);
          kv.dispose();
          ksum.dispose();
        }
      });
      return state;
    } finally {
      scope.dispose();
    }
  }

  /** Sharded decoding, second half: the EfficientViT block on a crop with the whole map's attention state
   * (the sum of evitStatePartial over all shards): out = (kv·relu(q)) / (ksum·relu(q) + ε) per head. */
  evitWithState(step: DecoderStep & { kind: 'evit' }, x: Tensor, state: Float32Array): Tensor {
    const be = this.backend;
    const [, C, H, W] = x.shape;
    const HW = H * W;
    const hd = this.config.attentionHeadDim;
    const heads = C / hd;
    const scope = new Scope();
    try {
      const branches = this.evitBranches(scope, step.pre, x, step.scales);
      if (state.length !== branches.length * heads * (hd + 1) * hd)
        throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `AutoencoderDC: attention state of ${state.length} values does not fit ${step.pre}`);
      const att = scope.keep(be.empty([1, branches.length * heads * hd, H, W]));
      branches.forEach((t, s) => {
        // [num (hd rows) | den (1 row)] per head as one grouped 1×1 conv over relu([q|k|v]); k and v columns are 0
        const w = new Float32Array(heads * (hd + 1) * 3 * hd);
        for (let g = 0; g < heads; g++)
          for (let r = 0; r <= hd; r++)
            for (let b = 0; b < hd; b++) w[(g * (hd + 1) + r) * 3 * hd + b] = state[((s * heads + g) * (hd + 1) + r) * hd + b];
        const rq = scope.keep(be.activation(t, 'relu'));
        const nd = scope.keep(be.conv2d(rq, scope.keep(be.tensor([heads * (hd + 1), 3 * hd, 1, 1], 'f32', w)), { groups: heads }));
        be.evitNormalize(nd, heads, LINEAR_ATTENTION_EPS, att.slice(s * heads * hd * HW, [1, heads * hd, H, W]));
      });
      return scope.release(this.evitFinish(scope, step.pre, x, att));
    } finally {
      scope.dispose();
    }
  }

  /** DCUpBlock2d with shortcut: conv3×3(nearest ×2) (or pixel-shuffled conv) + pixel_shuffle(repeat_interleave(x)). */
  private upBlock(scope: Scope, pre: string, x: Tensor, Cout: number): Tensor {
    const be = this.backend;
    const P = (n: string) => this.p.get(`${pre}.${n}`);
    const Cin = x.shape[1];
    const main = this.config.upsampleInterpolate
      ? scope.keep(be.conv2d(scope.keep(be.upsampleNearest2x(x)), P('conv.weight'), { bias: P('conv.bias'), padding: 1 }))
      : scope.keep(be.pixelShuffle(scope.keep(be.conv2d(x, P('conv.weight'), { bias: P('conv.bias'), padding: 1 })), 2));
    const sc = scope.keep(be.pixelShuffle(scope.keep(repeatInterleave(be, x, (Cout * 4) / Cin)), 2));
    return scope.keep(be.residual(main, sc));
  }

  /** DCDownBlock2d with shortcut: stride-2 conv (or pixel-unshuffled conv) + mean of pixel_unshuffle(x) groups. */
  private downBlock(scope: Scope, pre: string, x: Tensor, Cout: number): Tensor {
    const be = this.backend;
    const P = (n: string) => this.p.get(`${pre}.${n}`);
    const main = this.config.downsamplePixelUnshuffle
      ? scope.keep(be.pixelUnshuffle(scope.keep(be.conv2d(x, P('conv.weight'), { bias: P('conv.bias'), padding: 1 })), 2))
      : scope.keep(be.conv2d(x, P('conv.weight'), { bias: P('conv.bias'), padding: 1, stride: 2 }));
    const sc = scope.keep(groupMean(be, scope.keep(be.pixelUnshuffle(x, 2)), Cout));
    return scope.keep(be.residual(main, sc));
  }
}

/** Tensors made while running a stage, freed together. */
class Scope {
  private readonly tensors: Tensor[] = [];
  keep<T extends Tensor>(t: T): T {
    this.tensors.push(t);
    return t;
  }
  /** Hands a kept tensor back to the caller (it outlives the scope). */
  release<T extends Tensor>(t: T): T {
    const i = this.tensors.lastIndexOf(t);
    if (i >= 0) this.tensors.splice(i, 1);
    return t;
  }
  dispose(): void {
    for (const t of this.tensors) t.dispose();
  }
}

/** torch.repeat_interleave(x, rep, dim=1) on NCHW: output channel k copies input channel floor(k / rep) (one
 * strided copy whose source repeats with stride 0). */
function repeatInterleave(be: Backend, x: Tensor, rep: number): Tensor {
  const [B, C, H, W] = x.shape;
  if (!Number.isInteger(rep) || rep < 1) throw new SanaError('ERR_SANA_MODEL_FORMAT', `AutoencoderDC: channel shortcut needs an integer repeat, got ${rep}`);
  const HW = H * W;
  const out = be.empty([B, C * rep, H, W]);
  try {
    return be.copy(view4(x, [B, C, rep, HW], [C * HW, HW, 0, 1]), view4(out, [B, C, rep, HW]));
  } catch (e) {
    out.dispose();
    throw e;
  }
}

/** x.unflatten(1, (Cout, C/Cout)).mean(dim=2): averages of consecutive channel groups (fp32). */
function groupMean(be: Backend, x: Tensor, Cout: number): Tensor {
  const C = x.shape[1];
  if (C % Cout !== 0) throw new SanaError('ERR_SANA_MODEL_FORMAT', `AutoencoderDC: ${C} channels do not split into ${Cout} groups`);
  return be.groupMean(x, Cout);
}

function toChannelsLast(t: Tensor): Float32Array {
  const [B, C, H, W] = t.shape;
  const src = t.toFloat32();
  const out = new Float32Array(src.length);
  for (let b = 0; b < B; b++) for (let c = 0; c < C; c++) for (let p = 0; p < H * W; p++) out[(b * H * W + p) * C + c] = src[(b * C + c) * H * W + p];
  return out;
}
