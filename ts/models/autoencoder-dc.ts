/**
 * AutoencoderDC (deep-compression autoencoder) over the Backend ops, NCHW like diffusers. Decoder and
 * encoder, ResBlock and EfficientViT stages (multi-scale ReLU linear attention + GLUMBConv), the up/down
 * blocks with their shortcuts, channel RMSNorm, and diffusers-compatible tiled decoding.
 * Formulas and key names: ../shared/design/sana-spec.md §3.
 */
import type { Backend } from '../backends/backend.js';
import { describeValue, SanaError } from '../errors.js';
import { ConfigReader } from '../io/config.js';
import type { JsonValue } from '../io/json.js';
import { WeightStore } from '../io/weights.js';
import type { Tensor } from '../tensor/tensor.js';
import { Params, type LoadOptions, type ParamSpec } from './params.js';
import type { Taps } from './sana-transformer.js';

type BlockType = 'ResBlock' | 'EfficientViTBlock';
type Act = 'silu' | 'relu';

export interface AutoencoderDcConfig {
  inChannels: number;
  latentChannels: number;
  attentionHeadDim: number;
  encoderBlockTypes: BlockType[];
  decoderBlockTypes: BlockType[];
  encoderBlockOutChannels: number[];
  decoderBlockOutChannels: number[];
  encoderLayersPerBlock: number[];
  decoderLayersPerBlock: number[];
  encoderQkvMultiscales: number[][];
  decoderQkvMultiscales: number[][];
  upsampleInterpolate: boolean;
  downsamplePixelUnshuffle: boolean;
  decoderActFns: Act[];
  decoderConvActFn: Act;
  encoderOutShortcut: boolean;
  decoderInShortcut: boolean;
  scalingFactor: number;
}

const ACTS: Record<string, Act> = { silu: 'silu', swish: 'silu', relu: 'relu' };
const DEFAULT_QKV_MULTISCALES = [[], [], [], [5], [5], [5]];

export function readAutoencoderDcConfig(cfg: ConfigReader): AutoencoderDcConfig {
  const cls = cfg.raw._class_name;
  if (cls !== undefined && cls !== 'AutoencoderDC') throw cfg.error('_class_name', '"AutoencoderDC"', cls);
  const intList = (key: string, def: number[], min: number): number[] => {
    const v = cfg.raw[key] ?? def;
    cfg.ignore(key);
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= min))
      throw cfg.error(key, `a non-empty list of integers >= ${min}`, v);
    return v as number[];
  };
  // per-stage values may be one string for all stages or a list with one entry per stage
  const perStage = <T extends string>(key: string, n: number, def: string, allowed: Record<string, T>): T[] => {
    const v = cfg.raw[key] ?? def;
    cfg.ignore(key);
    const list = typeof v === 'string' ? Array<JsonValue>(n).fill(v) : v;
    if (!Array.isArray(list) || list.length !== n) throw cfg.error(key, `a string or a list of ${n} strings (one per block)`, v);
    return list.map((x, i) => {
      if (typeof x !== 'string' || !(x in allowed)) throw cfg.error(`${key}[${i}]`, `one of ${Object.keys(allowed).join(', ')}`, x);
      return allowed[x];
    });
  };
  const multiscales = (key: string, n: number): number[][] => {
    // diffusers indexes its default ((), (), (), (5,), (5,), (5,)) per stage: it covers at most 6 stages
    const v = cfg.raw[key] ?? (n <= DEFAULT_QKV_MULTISCALES.length ? DEFAULT_QKV_MULTISCALES.slice(0, n) : undefined);
    cfg.ignore(key);
    if (!Array.isArray(v) || v.length !== n || !v.every((s) => Array.isArray(s) && s.every((k) => typeof k === 'number' && Number.isInteger(k) && k % 2 === 1)))
      throw cfg.error(key, `a list of ${n} lists of odd kernel sizes (one per stage; the default covers ${DEFAULT_QKV_MULTISCALES.length})`, v);
    return v as number[][];
  };
  const blockTypes = { ResBlock: 'ResBlock', EfficientViTBlock: 'EfficientViTBlock' } as const;
  const encOut = intList('encoder_block_out_channels', [128, 256, 512, 512, 1024, 1024], 1);
  const decOut = intList('decoder_block_out_channels', [128, 256, 512, 512, 1024, 1024], 1);
  const encLayers = intList('encoder_layers_per_block', [2, 2, 2, 3, 3, 3], 0);
  const decLayers = intList('decoder_layers_per_block', [3, 3, 3, 3, 3, 3], 0);
  for (const [key, list] of [['encoder_block_out_channels', encOut], ['decoder_block_out_channels', decOut]] as const) cfg.recordCount(key, list.length, list);
  for (const [key, list] of [['encoder_layers_per_block', encLayers], ['decoder_layers_per_block', decLayers]] as const)
    cfg.recordCount(key, list.reduce((a, b) => a + b, 0), list);
  if (encLayers.length !== encOut.length) throw cfg.error('encoder_layers_per_block', `${encOut.length} entries (one per encoder_block_out_channels)`, encLayers);
  if (decLayers.length !== decOut.length) throw cfg.error('decoder_layers_per_block', `${decOut.length} entries (one per decoder_block_out_channels)`, decLayers);
  if (encLayers[0] === 0 || decLayers[0] === 0 || encLayers.at(-1) === 0 || decLayers.at(-1) === 0)
    throw cfg.error('decoder_layers_per_block', 'layers in the first and last stages (the DC-AE variants without them are not supported)', decLayers);
  const norms = perStage('decoder_norm_types', decOut.length, 'rms_norm', { rms_norm: 'rms_norm' } as const);
  void norms; // only rms_norm is supported (batch_norm / layer_norm variants are not Sana's)
  const c: AutoencoderDcConfig = {
    inChannels: cfg.int('in_channels', 3, 1),
    latentChannels: cfg.int('latent_channels', 32, 1),
    attentionHeadDim: cfg.int('attention_head_dim', 32, 1),
    encoderBlockTypes: perStage('encoder_block_types', encOut.length, 'ResBlock', blockTypes),
    decoderBlockTypes: perStage('decoder_block_types', decOut.length, 'ResBlock', blockTypes),
    encoderBlockOutChannels: encOut,
    decoderBlockOutChannels: decOut,
    encoderLayersPerBlock: encLayers,
    decoderLayersPerBlock: decLayers,
    encoderQkvMultiscales: multiscales('encoder_qkv_multiscales', encOut.length),
    decoderQkvMultiscales: multiscales('decoder_qkv_multiscales', decOut.length),
    upsampleInterpolate: cfg.choice('upsample_block_type', ['interpolate', 'pixel_shuffle'] as const, 'pixel_shuffle') === 'interpolate',
    downsamplePixelUnshuffle: cfg.choice('downsample_block_type', ['conv', 'Conv', 'pixel_unshuffle'] as const, 'pixel_unshuffle') === 'pixel_unshuffle',
    decoderActFns: perStage('decoder_act_fns', decOut.length, 'silu', ACTS),
    decoderConvActFn: perStage('decoder_conv_act_fn', 1, 'relu', ACTS)[0],
    encoderOutShortcut: cfg.bool('encoder_out_shortcut', true),
    decoderInShortcut: cfg.bool('decoder_in_shortcut', true),
    scalingFactor: cfg.number('scaling_factor', 1.0, (v) => Number.isFinite(v) && v > 0, 'a positive number'),
  };
  for (const [key, types, chans] of [['encoder_block_types', c.encoderBlockTypes, encOut], ['decoder_block_types', c.decoderBlockTypes, decOut]] as const)
    types.forEach((t, i) => {
      if (t === 'EfficientViTBlock' && chans[i] % c.attentionHeadDim !== 0)
        throw cfg.error('attention_head_dim', `a divisor of the ${chans[i]} channels of ${key}[${i}] (EfficientViT attn.to_q/k/v are [heads·head_dim, C])`, c.attentionHeadDim);
    });
  if (decOut.at(-1)! % c.latentChannels !== 0 && c.decoderInShortcut)
    throw cfg.error('latent_channels', `a divisor of the last decoder width ${decOut.at(-1)} (decoder_in_shortcut)`, c.latentChannels);
  return c;
}

/** One step of the decoder forward (spec §3.3), in execution order. `channels` is the step's output width,
 * `scale` its spatial factor; `tap` names a stage end for the parity harness. Everything but 'evit' is local
 * (3×3 receptive fields); an EfficientViT block's linear attention is global. */
export type DecoderStep = { channels: number; scale: 1 | 2; tap?: string } & (
  | { kind: 'conv_in' }
  | { kind: 'up'; pre: string }
  | { kind: 'res'; pre: string; act: Act }
  | { kind: 'evit'; pre: string; scales: number[] }
  | { kind: 'head' }
);

export function decoderSteps(c: AutoencoderDcConfig): DecoderStep[] {
  const ch = c.decoderBlockOutChannels;
  const n = ch.length;
  const steps: DecoderStep[] = [{ kind: 'conv_in', channels: ch[n - 1], scale: 1 }];
  for (let i = n - 1; i >= 0; i--) {
    const pre = `decoder.up_blocks.${i}`;
    let k = 0;
    if (i < n - 1) steps.push({ kind: 'up', pre: `${pre}.${k++}`, channels: ch[i], scale: 2 });
    for (let l = 0; l < c.decoderLayersPerBlock[i]; l++, k++)
      steps.push(c.decoderBlockTypes[i] === 'ResBlock'
        ? { kind: 'res', pre: `${pre}.${k}`, act: c.decoderActFns[i], channels: ch[i], scale: 1 }
        : { kind: 'evit', pre: `${pre}.${k}`, scales: c.decoderQkvMultiscales[i], channels: ch[i], scale: 1 });
    steps[steps.length - 1].tap = `${pre}.out`;
  }
  steps.push({ kind: 'head', channels: c.inChannels, scale: 1 });
  return steps;
}

/** A rectangle [y0, y1) × [x0, x1) of a feature map. */
export interface Rect {
  y0: number;
  y1: number;
  x0: number;
  x1: number;
}

/** LiteMLA's ε in out = num / (den + ε) (diffusers SanaMultiscaleAttnProcessor2_0). */
const LINEAR_ATTENTION_EPS = 1e-15;

export interface TilingOptions {
  tileSampleMinHeight: number;
  tileSampleMinWidth: number;
  tileSampleStrideHeight: number;
  tileSampleStrideWidth: number;
}

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
      const out = att.data as Float32Array;
      branches.forEach((t, s) => {
        // [num (hd rows) | den (1 row)] per head as one grouped 1×1 conv over relu([q|k|v]); k and v columns are 0
        const w = new Float32Array(heads * (hd + 1) * 3 * hd);
        for (let g = 0; g < heads; g++)
          for (let r = 0; r <= hd; r++)
            for (let b = 0; b < hd; b++) w[(g * (hd + 1) + r) * 3 * hd + b] = state[((s * heads + g) * (hd + 1) + r) * hd + b];
        const rq = scope.keep(be.activation(t, 'relu'));
        const nd = scope.keep(be.conv2d(rq, scope.keep(be.tensor([heads * (hd + 1), 3 * hd, 1, 1], 'f32', w)), { groups: heads }));
        const v = nd.data as Float32Array;
        for (let g = 0; g < heads; g++) {
          const den = v.subarray((g * (hd + 1) + hd) * HW, (g * (hd + 1) + hd + 1) * HW);
          for (let a = 0; a < hd; a++) {
            const num = (g * (hd + 1) + a) * HW;
            const dst = ((s * heads + g) * hd + a) * HW;
            for (let p = 0; p < HW; p++) out[dst + p] = v[num + p] / (den[p] + LINEAR_ATTENTION_EPS);
          }
        }
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

/** torch.repeat_interleave(x, rep, dim=1) on NCHW: output channel k copies input channel floor(k / rep). */
function repeatInterleave(be: Backend, x: Tensor, rep: number): Tensor {
  const [B, C, H, W] = x.shape;
  if (!Number.isInteger(rep) || rep < 1) throw new SanaError('ERR_SANA_MODEL_FORMAT', `AutoencoderDC: channel shortcut needs an integer repeat, got ${rep}`);
  const HW = H * W;
  const src = x.toFloat32();
  const out = new Float32Array(B * C * rep * HW);
  for (let b = 0; b < B; b++)
    for (let k = 0; k < C * rep; k++) out.set(src.subarray((b * C + Math.floor(k / rep)) * HW, (b * C + Math.floor(k / rep) + 1) * HW), (b * C * rep + k) * HW);
  return be.tensor([B, C * rep, H, W], 'f32', out);
}

/** x.unflatten(1, (Cout, C/Cout)).mean(dim=2): averages of consecutive channel groups (fp32). */
function groupMean(be: Backend, x: Tensor, Cout: number): Tensor {
  const [B, C, H, W] = x.shape;
  const g = C / Cout;
  if (!Number.isInteger(g)) throw new SanaError('ERR_SANA_MODEL_FORMAT', `AutoencoderDC: ${C} channels do not split into ${Cout} groups`);
  const HW = H * W;
  const src = x.toFloat32();
  const out = new Float32Array(B * Cout * HW);
  for (let b = 0; b < B; b++)
    for (let k = 0; k < Cout; k++)
      for (let p = 0; p < HW; p++) {
        let s = 0;
        for (let j = 0; j < g; j++) s += src[(b * C + k * g + j) * HW + p];
        out[(b * Cout + k) * HW + p] = Math.fround(s / g);
      }
  return be.tensor([B, Cout, H, W], 'f32', out);
}

/** Throws ERR_SANA_INVALID_OPTION unless every tile size and stride is a positive multiple of f and no stride exceeds its tile. */
export function checkTiling(t: TilingOptions, f: number): void {
  for (const [k, v] of Object.entries(t))
    if (!(Number.isInteger(v) && v > 0 && v % f === 0)) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a positive multiple of ${f} pixels for tiling.${k} but received ${describeValue(v)}`);
  if (t.tileSampleStrideHeight > t.tileSampleMinHeight || t.tileSampleStrideWidth > t.tileSampleMinWidth)
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected tiling strides no larger than the tiles but received ${JSON.stringify(t)}`);
}

/** The latent tiles of diffusers' tiled decode, row by row: tiles of tile_sample_min / f latents every
 * tile_sample_stride / f (edge tiles smaller), each a copy [B, C, th, tw]. */
export function latentTiles(z: Float32Array, shape: readonly [number, number, number, number], f: number, t: TilingOptions): { z: Float32Array; shape: [number, number, number, number] }[][] {
  const [B, C, h, w] = shape;
  const tileH = t.tileSampleMinHeight / f;
  const tileW = t.tileSampleMinWidth / f;
  const rows = [];
  for (let i = 0; i < h; i += t.tileSampleStrideHeight / f) {
    const row = [];
    for (let j = 0; j < w; j += t.tileSampleStrideWidth / f) {
      const th = Math.min(tileH, h - i);
      const tw = Math.min(tileW, w - j);
      const tile = new Float32Array(B * C * th * tw);
      for (let b = 0; b < B; b++)
        for (let ch = 0; ch < C; ch++)
          for (let y = 0; y < th; y++) {
            const src = ((b * C + ch) * h + i + y) * w + j;
            tile.set(z.subarray(src, src + tw), ((b * C + ch) * th + y) * tw);
          }
      row.push({ z: tile, shape: [B, C, th, tw] as [number, number, number, number] });
    }
    rows.push(row);
  }
  return rows;
}

/** diffusers' blend of decoded tiles [B, Co, th·f, tw·f] (row-major as latentTiles gives them): each tile blends
 * the (already blended) tile above and to its left into its first min − stride rows / columns with a linear
 * ramp, in place, then its first stride × stride pixels are kept. */
export function blendTiles(rows: Float32Array[][], shape: readonly [number, number, number, number], f: number, Co: number, t: TilingOptions): Float32Array {
  const [B, , h, w] = shape;
  const blendH = t.tileSampleMinHeight - t.tileSampleStrideHeight;
  const blendW = t.tileSampleMinWidth - t.tileSampleStrideWidth;
  const H = h * f;
  const W = w * f;
  const tiles = rows.map((row, i) => row.map((data, j) => ({
    data, H: Math.min(t.tileSampleMinHeight, H - i * t.tileSampleStrideHeight), W: Math.min(t.tileSampleMinWidth, W - j * t.tileSampleStrideWidth),
  })));
  const out = new Float32Array(B * Co * H * W);
  let y0 = 0;
  tiles.forEach((row, i) => {
    let x0 = 0;
    let keptH = 0;
    row.forEach((tile, j) => {
      if (tile.data.length !== B * Co * tile.H * tile.W)
        throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `blendTiles: tile (${i}, ${j}) has ${tile.data.length} values, expected [${B}, ${Co}, ${tile.H}, ${tile.W}]`);
      if (i > 0) {
        const above = tiles[i - 1][j];
        const e = Math.min(above.H, tile.H, blendH);
        for (let bc = 0; bc < B * Co; bc++)
          for (let y = 0; y < e; y++)
            for (let x = 0; x < tile.W; x++) {
              const k = (bc * tile.H + y) * tile.W + x;
              tile.data[k] = above.data[(bc * above.H + above.H - e + y) * above.W + x] * (1 - y / e) + tile.data[k] * (y / e);
            }
      }
      if (j > 0) {
        const left = row[j - 1];
        const e = Math.min(left.W, tile.W, blendW);
        for (let bc = 0; bc < B * Co; bc++)
          for (let y = 0; y < tile.H; y++)
            for (let x = 0; x < e; x++) {
              const k = (bc * tile.H + y) * tile.W + x;
              tile.data[k] = left.data[(bc * left.H + y) * left.W + left.W - e + x] * (1 - x / e) + tile.data[k] * (x / e);
            }
      }
      const kh = Math.min(tile.H, t.tileSampleStrideHeight);
      const kw = Math.min(tile.W, t.tileSampleStrideWidth);
      for (let bc = 0; bc < B * Co; bc++)
        for (let y = 0; y < kh; y++)
          out.set(tile.data.subarray((bc * tile.H + y) * tile.W, (bc * tile.H + y) * tile.W + kw), (bc * H + y0 + y) * W + x0);
      x0 += kw;
      keptH = kh;
    });
    y0 += keptH;
  });
  return out;
}

/** A copy of `r` (in x's coordinates) of a one-image NCHW map. */
export function cropTensor(be: Backend, x: Tensor, r: Rect): Tensor {
  const [B, C, H, W] = x.shape;
  if (B !== 1 || r.y0 < 0 || r.x0 < 0 || r.y1 > H || r.x1 > W || r.y0 >= r.y1 || r.x0 >= r.x1)
    throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `crop: Expected a non-empty rectangle inside [1, C, ${H}, ${W}] but received ${JSON.stringify(r)} of ${JSON.stringify(x.shape)}`);
  return cropMap(be, x.data as Float32Array, C, H, W, r);
}

/** A new [1, C, h, w] tensor holding rectangle `r` of the C × H × W float map `src` (tensor or shared memory). */
export function cropMap(be: Backend, src: Float32Array, C: number, H: number, W: number, r: Rect): Tensor {
  const h = r.y1 - r.y0;
  const w = r.x1 - r.x0;
  const out = be.empty([1, C, h, w]);
  const dst = out.data as Float32Array;
  for (let c = 0; c < C; c++)
    for (let y = 0; y < h; y++) {
      const s = (c * H + r.y0 + y) * W + r.x0;
      dst.set(src.subarray(s, s + w), (c * h + y) * w);
    }
  return out;
}

function toChannelsLast(t: Tensor): Float32Array {
  const [B, C, H, W] = t.shape;
  const src = t.toFloat32();
  const out = new Float32Array(src.length);
  for (let b = 0; b < B; b++) for (let c = 0; c < C; c++) for (let p = 0; p < H * W; p++) out[(b * H * W + p) * C + c] = src[(b * C + c) * H * W + p];
  return out;
}

function effVitSpecs(pre: string, C: number, hd: number, scales: number[], from: string): ParamSpec[] {
  const heads = C / hd;
  const inner = heads * hd;
  const attn = `${from}, attention_head_dim = ${hd}, qkv_multiscales = ${JSON.stringify(scales)}`;
  const m = (name: string, shape: number[], group?: string): ParamSpec => ({ name: `${pre}.${name}`, shape, from: attn, group });
  const v = (name: string, n: number): ParamSpec => ({ name: `${pre}.${name}`, shape: [n], vector: true, from });
  // fused into one projection at load (one dtype)
  const qkv = `${pre}.attn.to_qkv`;
  return [
    m('attn.to_q.weight', [inner, C], qkv), m('attn.to_k.weight', [inner, C], qkv), m('attn.to_v.weight', [inner, C], qkv),
    ...scales.flatMap((k, s) => [m(`attn.to_qkv_multiscale.${s}.proj_in.weight`, [3 * inner, 1, k, k]), m(`attn.to_qkv_multiscale.${s}.proj_out.weight`, [3 * inner, hd, 1, 1])]),
    m('attn.to_out.weight', [C, inner * (1 + scales.length)]), v('attn.norm_out.weight', C), v('attn.norm_out.bias', C),
    m('conv_out.conv_inverted.weight', [8 * C, C, 1, 1]), v('conv_out.conv_inverted.bias', 8 * C),
    m('conv_out.conv_depth.weight', [8 * C, 1, 3, 3]), v('conv_out.conv_depth.bias', 8 * C),
    m('conv_out.conv_point.weight', [C, 4 * C, 1, 1]), v('conv_out.norm.weight', C), v('conv_out.norm.bias', C),
  ];
}

function resSpecs(pre: string, C: number, from: string): ParamSpec[] {
  return [
    { name: `${pre}.conv1.weight`, shape: [C, C, 3, 3], from }, { name: `${pre}.conv1.bias`, shape: [C], vector: true, from },
    { name: `${pre}.conv2.weight`, shape: [C, C, 3, 3], from },
    { name: `${pre}.norm.weight`, shape: [C], vector: true, from }, { name: `${pre}.norm.bias`, shape: [C], vector: true, from },
  ];
}

/** Every decoder weight of a config: name, shape (and whether it is a vector). */
export function decoderSpecs(c: AutoencoderDcConfig): ParamSpec[] {
  const ch = c.decoderBlockOutChannels;
  const n = ch.length;
  const stage = (i: number) => `decoder_block_out_channels[${i}] = ${ch[i]}`;
  const specs: ParamSpec[] = [
    { name: 'decoder.conv_in.weight', shape: [ch[n - 1], c.latentChannels, 3, 3], from: `${stage(n - 1)}, latent_channels = ${c.latentChannels}` },
    { name: 'decoder.conv_in.bias', shape: [ch[n - 1]], vector: true, from: stage(n - 1) },
    { name: 'decoder.norm_out.weight', shape: [ch[0]], vector: true, from: stage(0) }, { name: 'decoder.norm_out.bias', shape: [ch[0]], vector: true, from: stage(0) },
    { name: 'decoder.conv_out.weight', shape: [c.inChannels, ch[0], 3, 3], from: `${stage(0)}, in_channels = ${c.inChannels}` },
    { name: 'decoder.conv_out.bias', shape: [c.inChannels], vector: true, from: `in_channels = ${c.inChannels}` },
  ];
  for (let i = 0; i < n; i++) {
    let k = 0;
    const pre = `decoder.up_blocks.${i}`;
    if (i < n - 1) {
      const convOut = c.upsampleInterpolate ? ch[i] : ch[i] * 4;
      const from = `${stage(i)}, ${stage(i + 1)}, upsample_block_type = ${c.upsampleInterpolate ? 'interpolate' : 'pixel_shuffle'}`;
      specs.push({ name: `${pre}.0.conv.weight`, shape: [convOut, ch[i + 1], 3, 3], from }, { name: `${pre}.0.conv.bias`, shape: [convOut], vector: true, from });
      k = 1;
    }
    for (let l = 0; l < c.decoderLayersPerBlock[i]; l++, k++)
      specs.push(...(c.decoderBlockTypes[i] === 'ResBlock' ? resSpecs(`${pre}.${k}`, ch[i], stage(i)) : effVitSpecs(`${pre}.${k}`, ch[i], c.attentionHeadDim, c.decoderQkvMultiscales[i], stage(i))));
  }
  return specs;
}

function encoderSpecs(c: AutoencoderDcConfig): ParamSpec[] {
  const ch = c.encoderBlockOutChannels;
  const n = ch.length;
  const stage = (i: number) => `encoder_block_out_channels[${i}] = ${ch[i]}`;
  const specs: ParamSpec[] = [
    { name: 'encoder.conv_in.weight', shape: [ch[0], c.inChannels, 3, 3], from: `${stage(0)}, in_channels = ${c.inChannels}` },
    { name: 'encoder.conv_in.bias', shape: [ch[0]], vector: true, from: stage(0) },
    { name: 'encoder.conv_out.weight', shape: [c.latentChannels, ch[n - 1], 3, 3], from: `${stage(n - 1)}, latent_channels = ${c.latentChannels}` },
    { name: 'encoder.conv_out.bias', shape: [c.latentChannels], vector: true, from: `latent_channels = ${c.latentChannels}` },
  ];
  for (let i = 0; i < n; i++) {
    const pre = `encoder.down_blocks.${i}`;
    let k = 0;
    for (; k < c.encoderLayersPerBlock[i]; k++)
      specs.push(...(c.encoderBlockTypes[i] === 'ResBlock' ? resSpecs(`${pre}.${k}`, ch[i], stage(i)) : effVitSpecs(`${pre}.${k}`, ch[i], c.attentionHeadDim, c.encoderQkvMultiscales[i], stage(i))));
    if (i < n - 1) {
      const convOut = c.downsamplePixelUnshuffle ? ch[i + 1] / 4 : ch[i + 1];
      const from = `${stage(i)}, ${stage(i + 1)}, downsample_block_type = ${c.downsamplePixelUnshuffle ? 'pixel_unshuffle' : 'conv'}`;
      specs.push({ name: `${pre}.${k}.conv.weight`, shape: [convOut, ch[i], 3, 3], from }, { name: `${pre}.${k}.conv.bias`, shape: [convOut], vector: true, from });
    }
  }
  return specs;
}
