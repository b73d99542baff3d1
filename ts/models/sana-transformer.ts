/**
 * SanaTransformer2DModel (Linear DiT) over the Backend ops. Module and parameter names mirror diffusers'
 * state-dict keys; formulas: ../shared/design/sana-spec.md §2. Activations are fp32, token-major [B, N, D].
 */
import { throwIfNonFinite, type Backend } from '../backends/backend.js';
import { SanaError } from '../errors.js';
import { ConfigReader } from '../io/config.js';
import { WeightStore } from '../io/weights.js';
import type { Tensor } from '../tensor/tensor.js';
import { view4, type View4 } from '../tensor/tensor.js';
import { LoraSet } from './lora.js';
import { Linear, RmsNorm, Scope, Weights } from './modules.js';
import type { LoadOptions, Params } from './params.js';
import type { Precision, PrecisionDecision } from './precision.js';

export interface SanaTransformerConfig {
  inChannels: number;
  outChannels: number;
  numAttentionHeads: number;
  attentionHeadDim: number;
  numLayers: number;
  numCrossAttentionHeads: number;
  crossAttentionHeadDim: number;
  crossAttentionDim: number;
  captionChannels: number;
  mlpRatio: number;
  attentionBias: boolean;
  sampleSize: number;
  patchSize: number;
  normEps: number;
  interpolationScale: number | null;
  guidanceEmbeds: boolean;
  guidanceEmbedsScale: number;
  qkNorm: 'rms_norm_across_heads' | null;
  timestepScale: number;
}

/** Reads config.json with diffusers' __init__ defaults for absent keys; rejects what the model cannot run. */
export function readSanaTransformerConfig(cfg: ConfigReader): SanaTransformerConfig {
  const cls = cfg.raw._class_name;
  if (cls !== undefined && cls !== 'SanaTransformer2DModel') throw cfg.error('_class_name', '"SanaTransformer2DModel"', cls);
  const c: SanaTransformerConfig = {
    inChannels: cfg.int('in_channels', 32, 1),
    outChannels: 0,
    numAttentionHeads: cfg.int('num_attention_heads', 70, 1),
    attentionHeadDim: cfg.int('attention_head_dim', 32, 1),
    numLayers: cfg.count('num_layers', 20, 0),
    numCrossAttentionHeads: cfg.int('num_cross_attention_heads', 20, 1),
    crossAttentionHeadDim: cfg.int('cross_attention_head_dim', 112, 1),
    crossAttentionDim: cfg.int('cross_attention_dim', 2240, 1),
    captionChannels: cfg.int('caption_channels', 2304, 1),
    mlpRatio: cfg.number('mlp_ratio', 2.5, (v) => Number.isFinite(v) && v > 0, 'a positive number'),
    attentionBias: cfg.bool('attention_bias', false),
    sampleSize: cfg.int('sample_size', 32, 1),
    patchSize: cfg.int('patch_size', 1, 1),
    normEps: cfg.number('norm_eps', 1e-6, (v) => v > 0 && v < 1, 'a number in (0, 1)'),
    interpolationScale: cfg.nullableNumber('interpolation_scale', null),
    guidanceEmbeds: cfg.bool('guidance_embeds', false),
    guidanceEmbedsScale: cfg.number('guidance_embeds_scale', 0.1),
    qkNorm: cfg.choice('qk_norm', ['rms_norm_across_heads', null] as const, null),
    timestepScale: cfg.number('timestep_scale', 1.0),
  };
  // diffusers: `out_channels: Optional[int] = 32`, then `out_channels = out_channels or in_channels`
  const out = cfg.raw.out_channels;
  cfg.ignore('out_channels');
  c.outChannels = out === null || out === 0 ? c.inChannels : cfg.int('out_channels', 32, 1);
  cfg.number('dropout', 0, (v) => v >= 0 && v < 1, 'a number in [0, 1)'); // inference: dropout is identity
  if (cfg.bool('norm_elementwise_affine', false)) throw cfg.error('norm_elementwise_affine', 'false (Sana norms have no affine parameters)', true);
  const width = c.numAttentionHeads * c.attentionHeadDim;
  if (c.crossAttentionDim !== width)
    throw cfg.error('cross_attention_dim', `the model width num_attention_heads × attention_head_dim = ${width} (the caption projection's output)`, c.crossAttentionDim);
  if (Math.floor(c.mlpRatio * width) < 1) throw cfg.error('mlp_ratio', 'a ratio giving at least one hidden channel', c.mlpRatio);
  return c;
}

/** Sinusoidal timestep features (Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)), fp32. */
export function timestepEmbedding(t: Float32Array, dim = 256): Float32Array {
  const half = dim / 2;
  const out = new Float32Array(t.length * dim);
  for (let b = 0; b < t.length; b++)
    for (let k = 0; k < half; k++) {
      const freq = Math.fround(Math.exp(Math.fround((-Math.log(10000) * k) / half)));
      const arg = Math.fround(t[b] * freq);
      out[b * dim + k] = Math.cos(arg);
      out[b * dim + half + k] = Math.sin(arg);
    }
  return out;
}

/** 2-D sin-cos position embedding [h·w, D] (spec §2.4): x (column) encoding in the first D/2 channels. */
export function positionEmbedding2d(D: number, h: number, w: number, base: number, scale: number): Float32Array {
  const out = new Float32Array(h * w * D);
  const E = D / 2;
  const half = E / 2;
  const omega = Array.from({ length: half }, (_, k) => 1 / 10000 ** (k / half));
  for (let i = 0; i < h; i++)
    for (let j = 0; j < w; j++) {
      const py = Math.fround(Math.fround((i * base) / h) / scale);
      const px = Math.fround(Math.fround((j * base) / w) / scale);
      const row = (i * w + j) * D;
      for (let k = 0; k < half; k++) {
        out[row + k] = Math.sin(px * omega[k]);
        out[row + half + k] = Math.cos(px * omega[k]);
        out[row + E + k] = Math.sin(py * omega[k]);
        out[row + E + half + k] = Math.cos(py * omega[k]);
      }
    }
  return out;
}

export interface TransformerInput {
  /** latents [B, C, H, W] */
  hiddenStates: Float32Array;
  shape: readonly [number, number, number, number];
  /** text hidden states [B, T, caption_channels], its length T and mask [B, T] (1 = keep, 0 = padding); or
   * `text` below instead */
  encoderHiddenStates?: Float32Array;
  textLength?: number;
  encoderAttentionMask?: ArrayLike<number>;
  /** [B], on the 0…1000 scale */
  timestep: Float32Array;
  /** [B], guidance_embeds models only */
  guidance?: Float32Array;
  /** the text side made once per generation by prepareText */
  text?: TextConditioning;
}

/**
 * The text side of a forward, constant over a whole generation: the key bias and every block's
 * cross-attention keys and values (caption projection → RMSNorm → to_k / to_v, with qk-norm where the model
 * has it). diffusers recomputes them every step; made once, they save 2·T·D·(caption_channels + D) +
 * 4·layers·T·D² FLOPs per step (≈ 4 % of a 600M step at 300 tokens) for layers·2·B·T·D floats of memory.
 * With right padding only the valid tokens are projected (`rows`), which shrinks that work and memory by the
 * padding's share (a 600M forward on the peer inputs, 38 of 600 tokens valid: ≈ 4 % of its FLOPs).
 */
export class TextConditioning {
  constructor(
    readonly batch: number,
    readonly length: number,
    readonly keyBias: Tensor,
    /** per block: keys and values [B, T, ·], or [Σ rows.length, ·] when `rows` is set */
    readonly kv: readonly { k: Tensor; v: Tensor }[],
    /** when every row's mask is a run of ones then zeros (right padding, as the pipeline pads) with at least
     * one token: per row, where its keys start in `kv` (in tokens) and how many it has; null otherwise */
    readonly rows: readonly { start: number; length: number }[] | null = null,
  ) {}

  dispose(): void {
    this.keyBias.dispose();
    for (const { k, v } of this.kv) {
      k.dispose();
      v.dispose();
    }
  }
}

/** The number of leading ones of each of the B rows of a [B, T] 0/1 mask, when every row is ones then zeros
 * with at least one 1; otherwise null. */
function rightPaddedLengths(mask: ArrayLike<number>, B: number, T: number): number[] | null {
  const lengths: number[] = [];
  for (let b = 0; b < B; b++) {
    let n = 0;
    while (n < T && Number(mask[b * T + n]) === 1) n++;
    for (let j = n; j < T; j++) if (Number(mask[b * T + j]) !== 0) return null;
    if (n === 0) return null;
    lengths.push(n);
  }
  return lengths;
}

/**
 * Cross-attention of the latent tokens q [B, N, H·d] on the text keys and values (TextConditioning.kv). With
 * right padding each row attends to its own tokens only: a padded key's −10000 bias gives it a weight of
 * exactly 0 in fp32 (exp underflows; the kernel and torch both make it 0), so leaving it out changes nothing
 * but the summation order, and a negative prompt of one token costs 1/300 of the full softmax (the peer
 * benchmark's README allows it: "an engine that skips masked keys does less"). Otherwise all T keys with the
 * bias.
 */
function crossAttention(be: Backend, q: Tensor, k: Tensor, v: Tensor, text: TextConditioning, [B, N, H, d]: number[]): Tensor {
  const T = text.length;
  if (!text.rows) return be.attention(view4(q, [B, N, H, d]), view4(k, [B, T, H, d]), view4(v, [B, T, H, d]), { keyBias: text.keyBias });
  const out = be.empty([B, N, H, d]);
  try {
    const tokens = (t: Tensor, start: number, len: number) => view4(t, [1, len, H, d], [len * H * d, H * d, d, 1], start * H * d);
    text.rows.forEach(({ start, length }, b) =>
      be.attention(tokens(q, b * N, N), tokens(k, start, length), tokens(v, start, length), { out: tokens(out, b * N, N) }));
    return out;
  } catch (e) {
    out.dispose();
    throw e;
  }
}

/** What a denoising step conditions on besides the latents, as tensors on the model's backend. */
export interface StepConditioning {
  text: TextConditioning;
  /** sinusoidal features [B, 256] of the timesteps (timestepFeatures): per generation, one row block per step */
  timestep: Tensor;
  /** the same of the guidance values, guidance_embeds models only */
  guidance?: Tensor;
}

/** Debug taps: host copies of intermediate values in the reference layout. */
export type Taps = (name: string, value: Float32Array, shape: number[]) => void;

/** The modules of a SanaTransformer2DModel config: every weight declared once, where it is used. */
class SanaModules {
  readonly weights = new Weights();
  readonly patchEmbed: { weight: string; bias: string };
  readonly captionProjection: [Linear, Linear];
  readonly captionNorm: RmsNorm;
  readonly timestepEmbedder: TimestepMlp;
  readonly guidanceEmbedder: TimestepMlp | null;
  readonly timeLinear: Linear;
  readonly scaleShiftTable: string;
  readonly projOut: Linear;
  readonly blocks: SanaBlock[];

  constructor(c: SanaTransformerConfig) {
    const w = this.weights;
    const D = c.numAttentionHeads * c.attentionHeadDim;
    const p = c.patchSize;
    // the config values behind each shape, for mismatch messages
    const width = `num_attention_heads = ${c.numAttentionHeads}, attention_head_dim = ${c.attentionHeadDim}`;
    const patch = `${width}, in_channels = ${c.inChannels}, patch_size = ${p}`;
    this.patchEmbed = { weight: w.matrix('patch_embed.proj.weight', [D, c.inChannels, p, p], patch), bias: w.vector('patch_embed.proj.bias', [D], width) };
    this.captionProjection = [
      Linear.declare(w, 'caption_projection.linear_1', D, c.captionChannels, `${width}, caption_channels = ${c.captionChannels}`),
      Linear.declare(w, 'caption_projection.linear_2', D, D, width),
    ];
    this.captionNorm = new RmsNorm(w, 'caption_norm', D, width, 1e-5);
    const time = c.guidanceEmbeds ? 'time_embed.timestep_embedder' : 'time_embed.emb.timestep_embedder';
    this.timestepEmbedder = new TimestepMlp(w, time, D, width);
    this.guidanceEmbedder = c.guidanceEmbeds ? new TimestepMlp(w, 'time_embed.guidance_embedder', D, width) : null;
    this.timeLinear = Linear.declare(w, 'time_embed.linear', 6 * D, D, width);
    this.scaleShiftTable = w.vector('scale_shift_table', [2, D], width);
    this.projOut = Linear.declare(w, 'proj_out', p * p * c.outChannels, D, `${width}, out_channels = ${c.outChannels}, patch_size = ${p}`);
    this.blocks = Array.from({ length: c.numLayers }, (_, l) => new SanaBlock(w, `transformer_blocks.${l}`, c));
  }
}

/** Sinusoidal features [B, 256] → linear_1 → SiLU → linear_2 (diffusers' TimestepEmbedding). */
class TimestepMlp {
  private readonly l1: Linear;
  private readonly l2: Linear;
  constructor(w: Weights, prefix: string, D: number, from: string) {
    this.l1 = Linear.declare(w, `${prefix}.linear_1`, D, 256, from);
    this.l2 = Linear.declare(w, `${prefix}.linear_2`, D, D, from);
  }
  forward(be: Backend, p: Params, features: Tensor, scope: Scope): Tensor {
    return scope.keep(this.l2.forward(be, p, scope.keep(this.l1.forward(be, p, features, { act: 'silu' }))));
  }
}

/** One SanaTransformerBlock: adaLN-single modulation, linear self-attention (q/k/v one fused GEMM without
 * qk-norm), cross-attention on the text, Mix-FFN (GLUMBConv) on the token grid. */
class SanaBlock {
  readonly table: string;
  readonly qkv: Linear | null;
  readonly q: Linear | null;
  readonly k: Linear | null;
  readonly v: Linear | null;
  readonly normQ: RmsNorm | null;
  readonly normK: RmsNorm | null;
  readonly out: Linear;
  readonly crossQ: Linear;
  readonly crossK: Linear;
  readonly crossV: Linear;
  readonly crossOut: Linear;
  readonly crossNormQ: RmsNorm | null;
  readonly crossNormK: RmsNorm | null;
  readonly ff: { inverted: Linear; depth: { weight: string; bias: string }; point: Linear };

  constructor(w: Weights, readonly pre: string, private readonly config: SanaTransformerConfig) {
    const c = config;
    const D = c.numAttentionHeads * c.attentionHeadDim;
    const Dx = c.numCrossAttentionHeads * c.crossAttentionHeadDim;
    const F = Math.floor(c.mlpRatio * D);
    const width = `num_attention_heads = ${c.numAttentionHeads}, attention_head_dim = ${c.attentionHeadDim}`;
    const cross = `${width}, num_cross_attention_heads = ${c.numCrossAttentionHeads}, cross_attention_head_dim = ${c.crossAttentionHeadDim}`;
    const kv = `${cross}, cross_attention_dim = ${c.crossAttentionDim}`;
    const ff = `${width}, mlp_ratio = ${c.mlpRatio}`;
    const bias = c.attentionBias;
    this.table = w.vector(`${pre}.scale_shift_table`, [6, D], width);
    const a = `${pre}.attn1`;
    const fuse = c.qkNorm === null; // qk-norm normalises q and k as whole rows across heads: they stay separate
    const [q, k, v] = ['to_q', 'to_k', 'to_v'].map((n) => Linear.declare(w, `${a}.${n}`, D, D, width, { bias, group: fuse ? `${a}.qkv` : undefined }));
    if (fuse) {
      const weight = w.fuse(`${a}.to_qkv.weight`, [q, k, v].map((t) => t.weight), [3 * D, D], true);
      this.qkv = new Linear(weight, bias ? w.fuse(`${a}.to_qkv.bias`, [q, k, v].map((t) => t.bias!), [3 * D], false) : null);
      [this.q, this.k, this.v] = [null, null, null];
    } else {
      this.qkv = null;
      [this.q, this.k, this.v] = [q, k, v];
    }
    this.out = Linear.declare(w, `${a}.to_out.0`, D, D, width);
    this.normQ = c.qkNorm ? new RmsNorm(w, `${a}.norm_q`, D, width, 1e-5) : null;
    this.normK = c.qkNorm ? new RmsNorm(w, `${a}.norm_k`, D, width, 1e-5) : null;
    const x = `${pre}.attn2`;
    this.crossQ = Linear.declare(w, `${x}.to_q`, Dx, D, cross);
    this.crossK = Linear.declare(w, `${x}.to_k`, Dx, c.crossAttentionDim, kv);
    this.crossV = Linear.declare(w, `${x}.to_v`, Dx, c.crossAttentionDim, kv);
    this.crossOut = Linear.declare(w, `${x}.to_out.0`, D, Dx, cross);
    this.crossNormQ = c.qkNorm ? new RmsNorm(w, `${x}.norm_q`, Dx, cross, 1e-5) : null;
    this.crossNormK = c.qkNorm ? new RmsNorm(w, `${x}.norm_k`, Dx, cross, 1e-5) : null;
    // the fused Mix-FFN kernel reads these three together (one dtype group)
    const g = `${pre}.ff`;
    this.ff = {
      inverted: Linear.declare(w, `${g}.conv_inverted`, 2 * F, D, ff, { conv1x1: true, group: g }),
      depth: { weight: w.matrix(`${g}.conv_depth.weight`, [2 * F, 1, 3, 3], ff, { group: g }), bias: w.vector(`${g}.conv_depth.bias`, [2 * F], ff) },
      point: Linear.declare(w, `${g}.conv_point`, D, F, ff, { conv1x1: true, bias: false, group: g }),
    };
  }

  /** Block `l` on the residual stream X [B, N, D]; returns the new stream (X is left to the caller). */
  forward(be: Backend, p: Params, l: number, X: Tensor, text: TextConditioning, mod: Tensor, [B, N, h, w]: number[], taps?: Taps): Tensor {
    const c = this.config;
    const scope = new Scope();
    const keep = <T2 extends Tensor>(t: T2): T2 => scope.keep(t);
    const tap = (name: string, t: Tensor, shape = [...t.shape]) => taps?.(`block${l}.${name}`, t.toFloat32(), shape);
    const D = c.numAttentionHeads * c.attentionHeadDim;
    const Hc = c.numCrossAttentionHeads;
    const dc = c.crossAttentionHeadDim;
    try {
      // shift/scale/gate rows: scale_shift_table[6, D] + mod.reshape(B, 6, D), as six [B, D] chunks
      const chunks = keep(be.adalnModulation(p.get(this.table), mod));
      const [shiftSa, scaleSa, gateSa, shiftFf, scaleFf, gateFf] = [0, 1, 2, 3, 4, 5].map((k) => chunks.slice(k * B * D, [B, D]));

      // (a) linear self-attention
      const Y = keep(be.layerNorm(X, { eps: c.normEps, scale: scaleSa, shift: shiftSa }));
      const heads = [B, N, c.numAttentionHeads, c.attentionHeadDim] as const; // [B, N, heads, headDim]
      let q: View4, k: View4, v: View4;
      if (this.qkv) {
        // one [3D, D] GEMM; q, k and v are strided views of its [B, N, 3D] output
        const QKV = keep(this.qkv.forward(be, p, Y));
        const strides = [N * 3 * D, 3 * D, c.attentionHeadDim, 1] as const;
        [q, k, v] = [0, D, 2 * D].map((offset) => view4(QKV, heads, strides, offset));
      } else {
        const Q = keep(this.normQ!.forward(be, p, keep(this.q!.forward(be, p, Y))));
        const K = keep(this.normK!.forward(be, p, keep(this.k!.forward(be, p, Y))));
        const V = keep(this.v!.forward(be, p, Y));
        [q, k, v] = [Q, K, V].map((t) => view4(t, heads));
      }
      const A = keep(be.linearAttention(q, k, v, { eps: 1e-15 }));
      const a1 = keep(this.out.forward(be, p, A.reshape([B, N, D])));
      tap('attn1.out', a1);
      const X1 = keep(be.residual(X, a1, { gate: gateSa }));
      tap('resid_after_self_attn', X1);

      // (b) cross-attention on the raw residual stream (no norm, no gate); keys and values come with the text
      let q2 = keep(this.crossQ.forward(be, p, X1));
      if (this.crossNormQ) q2 = keep(this.crossNormQ.forward(be, p, q2));
      const { k: k2, v: v2 } = text.kv[l];
      const o2 = keep(crossAttention(be, q2, k2, v2, text, [B, N, Hc, dc]));
      const a2 = keep(this.crossOut.forward(be, p, o2.reshape([B, N, Hc * dc])));
      tap('attn2.out', a2);
      const X2 = keep(be.residual(X1, a2));
      tap('resid_after_cross_attn', X2);

      // (c) Mix-FFN on the h×w token grid
      const Y2 = keep(be.layerNorm(X2, { eps: c.normEps, scale: scaleFf, shift: shiftFf }));
      const { inverted, depth, point } = this.ff;
      const wInverted = p.get(inverted.weight);
      const Z = keep(be.glumbconv(Y2, {
        wInverted, bInverted: p.get(inverted.bias!), wDepth: p.get(depth.weight), bDepth: p.get(depth.bias), wPoint: p.get(point.weight),
      }, { height: h, width: w, fastBf16: p.fastBf16(wInverted) }));
      if (taps) tap('ff.out', keep(be.unpatchify(Z, { height: h, width: w, patch: 1 })));
      const X3 = be.residual(X2, Z, { gate: gateFf });
      tap('out', X3);
      return X3;
    } finally {
      scope.dispose();
    }
  }
}

export class SanaTransformer2DModel {
  private constructor(
    readonly backend: Backend,
    readonly config: SanaTransformerConfig,
    private readonly m: SanaModules,
    private readonly p: Params,
    /** unused checkpoint tensors and config keys (diffusers logs these too) */
    readonly warnings: string[],
  ) {}

  /** the sin-cos position embedding [h·w, D] of the last token grid (PE models): the same every step */
  private positions: { h: number; w: number; pe: Tensor } | null = null;

  private positionEmbedding(h: number, w: number): Tensor {
    if (this.positions?.h !== h || this.positions.w !== w) {
      this.positions?.pe.dispose();
      const c = this.config;
      const D = c.numAttentionHeads * c.attentionHeadDim;
      const pe = positionEmbedding2d(D, h, w, c.sampleSize / c.patchSize, c.interpolationScale!);
      this.positions = { h, w, pe: this.backend.tensor([h * w, D], 'f32', pe, 'weight') };
    }
    return this.positions.pe;
  }

  static fromFolder(dir: string, backend: Backend, opts: LoadOptions = {}): SanaTransformer2DModel {
    const cfg = ConfigReader.load(dir, 'config.json', opts.configOverrides);
    const config = readSanaTransformerConfig(cfg);
    const store = WeightStore.open(dir, 'diffusion_pytorch_model', opts.variant);
    try {
      cfg.checkCounts(store.names().length, store.source);
      const modules = new SanaModules(config);
      const params = modules.weights.load(backend, store, 'SanaTransformer2DModel', opts);
      return new SanaTransformer2DModel(backend, config, modules, params, params.warnings(cfg));
    } finally {
      store.close();
    }
  }

  /** the precision this model runs in, and why */
  get precision(): PrecisionDecision {
    return this.p.precision;
  }

  /** LoRA adapters on this model's linears and 1×1 convs (ts/models/lora.ts) */
  get lora(): LoraSet {
    return (this.loraSet ??= new LoraSet(this.backend, this.p));
  }
  private loraSet: LoraSet | null = null;

  /** Runs in `precision` until the returned function is called (Params.override). */
  overridePrecision(precision: Precision): () => void {
    return this.p.override(precision, 'SanaTransformer2DModel');
  }

  dispose(): void {
    this.p.dispose();
    this.positions?.pe.dispose();
    this.positions = null;
  }

  /** The text conditioning of `batch` rows of `textLength` tokens: hidden states [B, T, caption_channels], mask [B, T]. */
  prepareText(encoderHiddenStates: Float32Array, textLength: number, mask: ArrayLike<number>, batch: number, taps?: Taps): TextConditioning {
    const be = this.backend;
    const { m, p } = this;
    const c = this.config;
    const [B, T] = [batch, textLength];
    if (encoderHiddenStates.length !== B * T * c.captionChannels || mask.length !== B * T)
      throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `SanaTransformer2DModel: Expected [${B}, ${T}, ${c.captionChannels}] encoder hidden states and a [${B}, ${T}] mask but received ${encoderHiddenStates.length} and ${mask.length} values`);
    const temp = new Scope(); // freed at the end
    const made = new Scope(); // the result's tensors: freed on failure only
    const bias = new Float32Array(B * T);
    for (let i = 0; i < B * T; i++) bias[i] = (1 - Number(mask[i])) * -10000.0;
    // right padding: the valid tokens only, packed row after row (with taps, which show the reference's
    // [B, T] layout, all tokens are projected and the padded ones skipped by the attention alone)
    const lengths = rightPaddedLengths(mask, B, T);
    const Dc = c.captionChannels;
    let rows: { start: number; length: number }[] | null = null;
    let states = encoderHiddenStates;
    if (lengths && taps) rows = lengths.map((length, b) => ({ start: b * T, length }));
    else if (lengths) {
      let start = 0;
      rows = lengths.map((length) => ({ start: (start += length) - length, length }));
      states = new Float32Array(start * Dc);
      rows.forEach(({ start: at, length }, b) => states.set(encoderHiddenStates.subarray(b * T * Dc, (b * T + length) * Dc), at * Dc));
    }
    try {
      const keyBias = made.keep(be.tensor([B, T], 'f32', bias));
      const ctx = temp.keep(be.tensor(states === encoderHiddenStates ? [B, T, Dc] : [1, states.length / Dc, Dc], 'f32', states));
      const [l1, l2] = m.captionProjection;
      const c2 = temp.keep(l2.forward(be, p, temp.keep(l1.forward(be, p, ctx, { act: 'gelu-tanh' }))));
      const Cn = temp.keep(m.captionNorm.forward(be, p, c2));
      taps?.('caption_norm.out', Cn.toFloat32(), [...Cn.shape]);
      const kv = m.blocks.map((blk) => {
        const raw = blk.crossK.forward(be, p, Cn);
        const k = blk.crossNormK ? made.keep(blk.crossNormK.forward(be, p, temp.keep(raw))) : made.keep(raw);
        return { k, v: made.keep(blk.crossV.forward(be, p, Cn)) };
      });
      return new TextConditioning(B, T, keyBias, kv, rows);
    } catch (e) {
      made.dispose();
      throw e;
    } finally {
      temp.dispose();
    }
  }

  /** Sinusoidal features [n, 256] of timestep (or guidance) values, uploaded once: a generation makes them
   * for all its steps together and hands each step its rows (Tensor.slice). */
  timestepFeatures(values: ArrayLike<number>): Tensor {
    return this.backend.tensor([values.length, 256], 'f32', timestepEmbedding(Float32Array.from(values)));
  }

  /** Predicts the flow velocity [B, out_channels, H, W] from host arrays (the parity harness and one-off
   * calls; a generation uses forwardTensor). Throws ERR_SANA_NON_FINITE if the result has NaN/Inf. */
  forward(input: TransformerInput, taps?: Taps): Float32Array {
    const be = this.backend;
    const c = this.config;
    const [B] = input.shape;
    const { encoderHiddenStates: ehs, textLength: T, encoderAttentionMask: mask } = input;
    if (!input.text && (!ehs || T === undefined || !mask))
      throw new SanaError('ERR_SANA_INVALID_ARGUMENT', 'SanaTransformer2DModel: Expected text conditioning (encoderHiddenStates, textLength and encoderAttentionMask, or text) but received none');
    if (c.guidanceEmbeds && !input.guidance) throw new SanaError('ERR_SANA_INVALID_ARGUMENT', 'SanaTransformer2DModel: Expected guidance values for guidance (the model has guidance_embeds) but received undefined');
    const scope = new Scope();
    try {
      const x = scope.keep(be.tensor([...input.shape], 'f32', input.hiddenStates));
      const text = input.text ?? scope.keep(this.prepareText(ehs!, T!, mask!, B, taps));
      const timestep = scope.keep(this.timestepFeatures(input.timestep));
      const guidance = input.guidance && scope.keep(this.timestepFeatures(input.guidance));
      const out = scope.keep(this.forwardTensor(x, { text, timestep, guidance }, taps));
      throwIfNonFinite(be, out, 'SanaTransformer2DModel produced non-finite values (NaN or Infinity) in its output: the weights or inputs hold NaN/Inf');
      return out.toFloat32();
    } finally {
      scope.dispose();
    }
  }

  /** The velocity [B, out_channels, H, W] of latents x [B, in_channels, H, W], tensor in, tensor out: no host
   * access to tensor data except through `taps`. */
  forwardTensor(x: Tensor, step: StepConditioning, taps?: Taps): Tensor {
    const be = this.backend;
    const c = this.config;
    const [B, C, H, W] = x.shape;
    const p = c.patchSize;
    if (x.shape.length !== 4 || C !== c.inChannels) throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `SanaTransformer2DModel: Expected [B, ${c.inChannels}, H, W] for hidden_states but received ${JSON.stringify(x.shape)}`);
    if (H % p || W % p) throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `SanaTransformer2DModel: Expected a height and width divisible by patch_size ${p} for hidden_states but received ${H}×${W}`);
    const { text } = step;
    if (text.batch !== B) throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `SanaTransformer2DModel: Expected text conditioning of ${B} rows for the latents' batch but received ${text.batch}`);
    for (const [name, t] of [['timestep', step.timestep], ['guidance', step.guidance]] as const)
      if (t && (t.shape[0] !== B || t.shape[1] !== 256)) throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `SanaTransformer2DModel: Expected [${B}, 256] ${name} features but received ${JSON.stringify(t.shape)}`);
    if (c.guidanceEmbeds && !step.guidance) throw new SanaError('ERR_SANA_INVALID_ARGUMENT', 'SanaTransformer2DModel: Expected guidance features (the model has guidance_embeds) but received none');
    const h = H / p;
    const w = W / p;
    const N = h * w;
    const D = c.numAttentionHeads * c.attentionHeadDim;
    const { m, p: params } = this;
    const scope = new Scope();
    const keep = <T2 extends Tensor>(t: T2): T2 => scope.keep(t);
    const tap = (name: string, t: Tensor, shape = [...t.shape]) => taps?.(name, t.toFloat32(), shape);
    let X: Tensor | null = null;
    try {
      // 1. patch embedding → tokens [B, N, D]
      const [pw, pb] = [params.get(m.patchEmbed.weight), params.get(m.patchEmbed.bias)];
      if (p === 1) X = be.linear(keep(be.patchify(x, 1)), pw.reshape([D, C]), { bias: pb, fastBf16: params.fastBf16(pw) });
      else X = be.patchify(keep(be.conv2d(x, pw, { bias: pb, stride: p })), 1);
      if (c.interpolationScale !== null) {
        const pe = this.positionEmbedding(h, w);
        for (let b = 0; b < B; b++) {
          const row = X.slice(b * N * D, [N, D]);
          be.residual(row, pe, { out: row });
        }
      }
      tap('patch_embed.out', X);

      // 2. timestep conditioning (adaLN-single)
      const emb = m.timestepEmbedder.forward(be, params, step.timestep, scope);
      if (m.guidanceEmbedder) be.residual(emb, m.guidanceEmbedder.forward(be, params, step.guidance!, scope), { out: emb });
      const mod = keep(m.timeLinear.forward(be, params, keep(be.activation(emb, 'silu'))));
      tap('time_embed.out0_timestep_mod', mod);
      tap('time_embed.out1_embedded_timestep', emb);

      // 3. blocks
      m.blocks.forEach((blk, l) => {
        const prev: Tensor = X!;
        X = blk.forward(be, params, l, prev, text, mod, [B, N, h, w], l === 0 ? taps : undefined);
        prev.dispose(); // the residual stream of the previous block is no longer needed
      });

      // 4. output head: LayerNorm · (1 + scale) + shift with [shift; scale] = scale_shift_table + emb, then proj_out
      const head = keep(be.adalnModulation(params.get(m.scaleShiftTable), emb, { shared: true })); // [2, B, D]
      const Y = keep(be.layerNorm(X, { eps: 1e-6, shift: head.slice(0, [B, D]), scale: head.slice(B * D, [B, D]) }));
      const outTok = keep(m.projOut.forward(be, params, Y)); // [B, N, p·p·Cout]
      return be.unpatchify(outTok, { height: h, width: w, patch: p });
    } finally {
      scope.dispose();
      X?.dispose();
    }
  }
}
