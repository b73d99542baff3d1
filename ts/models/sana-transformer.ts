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
import { Params, type LoadOptions, type ParamSpec } from './params.js';

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
 */
export class TextConditioning {
  constructor(
    readonly batch: number,
    readonly length: number,
    readonly keyBias: Tensor,
    readonly kv: readonly { k: Tensor; v: Tensor }[],
  ) {}

  dispose(): void {
    this.keyBias.dispose();
    for (const { k, v } of this.kv) {
      k.dispose();
      v.dispose();
    }
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

export class SanaTransformer2DModel {
  private constructor(
    readonly backend: Backend,
    readonly config: SanaTransformerConfig,
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
      const specs = paramSpecs(config);
      const params = Params.load(backend, store, specs, 'SanaTransformer2DModel', opts.weightDtype, opts.onBytesRead);
      // every GEMM weight except the patch embedding (used through a reshape) and the depth-wise kernels
      const gemm = specs.filter((s) => !s.vector && !s.name.startsWith('patch_embed') && !s.name.endsWith('conv_depth.weight')).map((s) => s.name);
      if (fusesQkv(config)) {
        const D = config.numAttentionHeads * config.attentionHeadDim;
        for (let l = 0; l < config.numLayers; l++) {
          const a = `transformer_blocks.${l}.attn1`;
          const parts = (kind: string) => ['to_q', 'to_k', 'to_v'].map((n) => `${a}.${n}.${kind}`);
          params.fuse(backend, `${a}.to_qkv.weight`, parts('weight'), [3 * D, D]);
          if (config.attentionBias) params.fuse(backend, `${a}.to_qkv.bias`, parts('bias'), [3 * D]);
          gemm.push(`${a}.to_qkv.weight`);
        }
      }
      params.packLinear(backend, gemm.filter((n) => params.has(n)));
      return new SanaTransformer2DModel(backend, config, params, params.warnings(cfg));
    } finally {
      store.close();
    }
  }

  dispose(): void {
    this.p.dispose();
    this.positions?.pe.dispose();
    this.positions = null;
  }

  /** The text conditioning of `batch` rows of `textLength` tokens: hidden states [B, T, caption_channels], mask [B, T]. */
  prepareText(encoderHiddenStates: Float32Array, textLength: number, mask: ArrayLike<number>, batch: number, taps?: Taps): TextConditioning {
    const be = this.backend;
    const c = this.config;
    const [B, T] = [batch, textLength];
    if (encoderHiddenStates.length !== B * T * c.captionChannels || mask.length !== B * T)
      throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `SanaTransformer2DModel: Expected [${B}, ${T}, ${c.captionChannels}] encoder hidden states and a [${B}, ${T}] mask but received ${encoderHiddenStates.length} and ${mask.length} values`);
    const P = (name: string) => this.p.get(name);
    const temp: Tensor[] = []; // freed at the end
    const made: Tensor[] = []; // the result's tensors: freed only on failure (dispose is idempotent)
    const t = <T2 extends Tensor>(x: T2): T2 => (temp.push(x), x);
    const own = <T2 extends Tensor>(x: T2): T2 => (made.push(x), x);
    const bias = new Float32Array(B * T);
    for (let i = 0; i < B * T; i++) bias[i] = (1 - Number(mask[i])) * -10000.0;
    try {
      const keyBias = own(be.tensor([B, T], 'f32', bias));
      const ctx = t(be.tensor([B, T, c.captionChannels], 'f32', encoderHiddenStates));
      const c1 = t(be.linear(ctx, P('caption_projection.linear_1.weight'), { bias: P('caption_projection.linear_1.bias'), act: 'gelu-tanh' }));
      const c2 = t(be.linear(c1, P('caption_projection.linear_2.weight'), { bias: P('caption_projection.linear_2.bias') }));
      const Cn = t(be.rmsNorm(c2, { eps: 1e-5, weight: P('caption_norm.weight') }));
      taps?.('caption_norm.out', Cn.toFloat32(), [...Cn.shape]);
      const kv: { k: Tensor; v: Tensor }[] = [];
      for (let l = 0; l < c.numLayers; l++) {
        const pre = `transformer_blocks.${l}.attn2`;
        let k = own(be.linear(Cn, P(`${pre}.to_k.weight`), { bias: P(`${pre}.to_k.bias`) }));
        const v = own(be.linear(Cn, P(`${pre}.to_v.weight`), { bias: P(`${pre}.to_v.bias`) }));
        if (c.qkNorm) {
          const raw = k;
          k = own(be.rmsNorm(raw, { eps: 1e-5, weight: P(`${pre}.norm_k.weight`) }));
          raw.dispose();
        }
        kv.push({ k, v });
      }
      return new TextConditioning(B, T, keyBias, kv);
    } catch (e) {
      for (const x of made) x.dispose();
      throw e;
    } finally {
      for (const x of temp) x.dispose();
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
    const made: { dispose(): void }[] = [];
    const own = <T2 extends { dispose(): void }>(t: T2): T2 => (made.push(t), t);
    try {
      const x = own(be.tensor([...input.shape], 'f32', input.hiddenStates));
      const text = input.text ?? own(this.prepareText(ehs!, T!, mask!, B, taps));
      const step: StepConditioning = { text, timestep: own(this.timestepFeatures(input.timestep)), guidance: input.guidance && own(this.timestepFeatures(input.guidance)) };
      const out = own(this.forwardTensor(x, step, taps));
      throwIfNonFinite(be, out, 'SanaTransformer2DModel produced non-finite values (NaN or Infinity) in its output: the weights or inputs hold NaN/Inf');
      return out.toFloat32();
    } finally {
      for (const t of made) t.dispose();
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
    const live: Tensor[] = [];
    const keep = <T2 extends Tensor>(t: T2): T2 => (live.push(t), t);
    const tap = (name: string, t: Tensor, shape = [...t.shape]) => taps?.(name, t.toFloat32(), shape);
    const P = (name: string) => this.p.get(name);
    let X: Tensor | null = null;
    try {
      // 1. patch embedding → tokens [B, N, D]
      if (p === 1) {
        X = be.linear(keep(be.patchify(x, 1)), P('patch_embed.proj.weight').reshape([D, C]), { bias: P('patch_embed.proj.bias') });
      } else {
        X = be.patchify(keep(be.conv2d(x, P('patch_embed.proj.weight'), { bias: P('patch_embed.proj.bias'), stride: p })), 1);
      }
      if (c.interpolationScale !== null) {
        const pe = this.positionEmbedding(h, w);
        for (let b = 0; b < B; b++) {
          const row = X.slice(b * N * D, [N, D]);
          be.residual(row, pe, { out: row });
        }
      }
      tap('patch_embed.out', X);

      // 2. timestep conditioning (adaLN-single)
      const embedder = (prefix: string, features: Tensor) => {
        const h1 = keep(be.linear(features, P(`${prefix}.linear_1.weight`), { bias: P(`${prefix}.linear_1.bias`), act: 'silu' }));
        return keep(be.linear(h1, P(`${prefix}.linear_2.weight`), { bias: P(`${prefix}.linear_2.bias`) }));
      };
      let emb: Tensor;
      if (c.guidanceEmbeds) {
        emb = embedder('time_embed.timestep_embedder', step.timestep);
        be.residual(emb, embedder('time_embed.guidance_embedder', step.guidance!), { out: emb });
      } else {
        emb = embedder('time_embed.emb.timestep_embedder', step.timestep);
      }
      const mod = keep(be.linear(keep(be.activation(emb, 'silu')), P('time_embed.linear.weight'), { bias: P('time_embed.linear.bias') }));
      tap('time_embed.out0_timestep_mod', mod);
      tap('time_embed.out1_embedded_timestep', emb);

      // 3. blocks
      for (let l = 0; l < c.numLayers; l++) {
        const blockLive: Tensor[] = [];
        const k2 = <T2 extends Tensor>(t: T2): T2 => (blockLive.push(t), t);
        try {
          const prev: Tensor = X;
          X = this.block(l, prev, text, mod, B, N, h, w, k2, l === 0 ? taps : undefined);
          prev.dispose(); // the residual stream of the previous block is no longer needed
        } finally {
          for (const t of blockLive) if (t !== X) t.dispose();
        }
      }

      // 4. output head: LayerNorm · (1 + scale) + shift with [shift; scale] = scale_shift_table + emb, then proj_out
      const head = keep(be.adalnModulation(P('scale_shift_table'), emb, { shared: true })); // [2, B, D]
      const Y = keep(be.layerNorm(X, { eps: 1e-6, shift: head.slice(0, [B, D]), scale: head.slice(B * D, [B, D]) }));
      const outTok = keep(be.linear(Y, P('proj_out.weight'), { bias: P('proj_out.bias') })); // [B, N, p·p·Cout]
      return be.unpatchify(outTok, { height: h, width: w, patch: p });
    } finally {
      for (const t of live) t.dispose();
      X?.dispose();
    }
  }

  private block(l: number, X: Tensor, text: TextConditioning, mod: Tensor, B: number, N: number, h: number, w: number,
    keep: <T2 extends Tensor>(t: T2) => T2, taps?: Taps): Tensor {
    const be = this.backend;
    const c = this.config;
    const pre = `transformer_blocks.${l}`;
    const P = (name: string) => this.p.get(`${pre}.${name}`);
    const opt = (name: string) => (this.config.attentionBias ? P(name) : undefined);
    const tap = (name: string, t: Tensor, shape = [...t.shape]) => taps?.(`block${l}.${name}`, t.toFloat32(), shape);
    const D = c.numAttentionHeads * c.attentionHeadDim;
    const Hc = c.numCrossAttentionHeads;
    const dc = c.crossAttentionHeadDim;

    // shift/scale/gate rows: scale_shift_table[6, D] + mod.reshape(B, 6, D), as six [B, D] chunks
    const chunks = keep(be.adalnModulation(P('scale_shift_table'), mod));
    const [shiftSa, scaleSa, gateSa, shiftFf, scaleFf, gateFf] = [0, 1, 2, 3, 4, 5].map((k) => chunks.slice(k * B * D, [B, D]));

    // (a) linear self-attention
    const Y = keep(be.layerNorm(X, { eps: c.normEps, scale: scaleSa, shift: shiftSa }));
    const heads = [B, N, c.numAttentionHeads, c.attentionHeadDim] as const; // [B, N, heads, headDim]
    let q: View4, k: View4, v: View4;
    if (fusesQkv(c)) {
      // one [3D, D] GEMM; q, k and v are strided views of its [B, N, 3D] output
      const QKV = keep(be.linear(Y, P('attn1.to_qkv.weight'), { bias: opt('attn1.to_qkv.bias') }));
      const strides = [N * 3 * D, 3 * D, c.attentionHeadDim, 1] as const;
      [q, k, v] = [0, D, 2 * D].map((offset) => view4(QKV, heads, strides, offset));
    } else {
      let Q = keep(be.linear(Y, P('attn1.to_q.weight'), { bias: opt('attn1.to_q.bias') }));
      let K = keep(be.linear(Y, P('attn1.to_k.weight'), { bias: opt('attn1.to_k.bias') }));
      const V = keep(be.linear(Y, P('attn1.to_v.weight'), { bias: opt('attn1.to_v.bias') }));
      Q = keep(be.rmsNorm(Q, { eps: 1e-5, weight: P('attn1.norm_q.weight') }));
      K = keep(be.rmsNorm(K, { eps: 1e-5, weight: P('attn1.norm_k.weight') }));
      [q, k, v] = [Q, K, V].map((t) => view4(t, heads));
    }
    const A = keep(be.linearAttention(q, k, v, { eps: 1e-15 }));
    const a1 = keep(be.linear(A.reshape([B, N, D]), P('attn1.to_out.0.weight'), { bias: P('attn1.to_out.0.bias') }));
    tap('attn1.out', a1);
    const X1 = keep(be.residual(X, a1, { gate: gateSa }));
    tap('resid_after_self_attn', X1);

    // (b) cross-attention on the raw residual stream (no norm, no gate); keys and values come with the text
    let q2 = keep(be.linear(X1, P('attn2.to_q.weight'), { bias: P('attn2.to_q.bias') }));
    if (c.qkNorm) q2 = keep(be.rmsNorm(q2, { eps: 1e-5, weight: P('attn2.norm_q.weight') }));
    const T = text.length;
    const { k: k2, v: v2 } = text.kv[l];
    const o2 = keep(be.attention(view4(q2, [B, N, Hc, dc]), view4(k2, [B, T, Hc, dc]), view4(v2, [B, T, Hc, dc]), { keyBias: text.keyBias }));
    const a2 = keep(be.linear(o2.reshape([B, N, Hc * dc]), P('attn2.to_out.0.weight'), { bias: P('attn2.to_out.0.bias') }));
    tap('attn2.out', a2);
    const X2 = keep(be.residual(X1, a2));
    tap('resid_after_cross_attn', X2);

    // (c) Mix-FFN on the h×w token grid
    const Y2 = keep(be.layerNorm(X2, { eps: c.normEps, scale: scaleFf, shift: shiftFf }));
    const Z = keep(be.glumbconv(Y2, {
      wInverted: P('ff.conv_inverted.weight'), bInverted: P('ff.conv_inverted.bias'),
      wDepth: P('ff.conv_depth.weight'), bDepth: P('ff.conv_depth.bias'), wPoint: P('ff.conv_point.weight'),
    }, { height: h, width: w }));
    if (taps) {
      const nchw = be.unpatchify(Z, { height: h, width: w, patch: 1 });
      taps(`block${l}.ff.out`, nchw.toFloat32(), [B, D, h, w]);
      nchw.dispose();
    }
    const X3 = be.residual(X2, Z, { gate: gateFf });
    tap('out', X3);
    return X3;
  }
}

/** Self-attention q, k and v run as one fused GEMM, except with qk-norm: it normalises q and k as whole rows
 * across heads, which needs them contiguous. */
function fusesQkv(c: SanaTransformerConfig): boolean {
  return c.qkNorm === null;
}

function paramSpecs(c: SanaTransformerConfig): ParamSpec[] {
  const D = c.numAttentionHeads * c.attentionHeadDim;
  const Dx = c.numCrossAttentionHeads * c.crossAttentionHeadDim;
  const F = Math.floor(c.mlpRatio * D);
  const p = c.patchSize;
  // the config values behind each shape, for mismatch messages
  const width = `num_attention_heads = ${c.numAttentionHeads}, attention_head_dim = ${c.attentionHeadDim}`;
  const cross = `${width}, num_cross_attention_heads = ${c.numCrossAttentionHeads}, cross_attention_head_dim = ${c.crossAttentionHeadDim}`;
  const m = (name: string, shape: number[], from = width, group?: string): ParamSpec => ({ name, shape, from, group });
  const v = (name: string, shape: number[], from = width): ParamSpec => ({ name, shape, vector: true, from });
  const mlp = (prefix: string) => [m(`${prefix}.linear_1.weight`, [D, 256]), v(`${prefix}.linear_1.bias`, [D]), m(`${prefix}.linear_2.weight`, [D, D]), v(`${prefix}.linear_2.bias`, [D])];
  const patch = `${width}, in_channels = ${c.inChannels}, patch_size = ${p}`;
  const output = `${width}, out_channels = ${c.outChannels}, patch_size = ${p}`;
  const specs: ParamSpec[] = [
    m('patch_embed.proj.weight', [D, c.inChannels, p, p], patch), v('patch_embed.proj.bias', [D]),
    m('caption_projection.linear_1.weight', [D, c.captionChannels], `${width}, caption_channels = ${c.captionChannels}`), v('caption_projection.linear_1.bias', [D]),
    m('caption_projection.linear_2.weight', [D, D]), v('caption_projection.linear_2.bias', [D]),
    v('caption_norm.weight', [D]),
    ...(c.guidanceEmbeds ? [...mlp('time_embed.timestep_embedder'), ...mlp('time_embed.guidance_embedder')] : mlp('time_embed.emb.timestep_embedder')),
    m('time_embed.linear.weight', [6 * D, D]), v('time_embed.linear.bias', [6 * D]),
    v('scale_shift_table', [2, D]),
    m('proj_out.weight', [p * p * c.outChannels, D], output), v('proj_out.bias', [p * p * c.outChannels], output),
  ];
  const kv = `${cross}, cross_attention_dim = ${c.crossAttentionDim}`;
  const ff = `${width}, mlp_ratio = ${c.mlpRatio}`;
  for (let l = 0; l < c.numLayers; l++) {
    const b = `transformer_blocks.${l}`;
    specs.push(v(`${b}.scale_shift_table`, [6, D]));
    for (const n of ['to_q', 'to_k', 'to_v']) {
      specs.push(m(`${b}.attn1.${n}.weight`, [D, D], width, fusesQkv(c) ? `${b}.attn1.qkv` : undefined)); // fused at load: one dtype
      if (c.attentionBias) specs.push(v(`${b}.attn1.${n}.bias`, [D]));
    }
    specs.push(m(`${b}.attn1.to_out.0.weight`, [D, D]), v(`${b}.attn1.to_out.0.bias`, [D]));
    if (c.qkNorm)
      specs.push(v(`${b}.attn1.norm_q.weight`, [D]), v(`${b}.attn1.norm_k.weight`, [D]), v(`${b}.attn2.norm_q.weight`, [Dx], cross), v(`${b}.attn2.norm_k.weight`, [Dx], cross));
    specs.push(
      m(`${b}.attn2.to_q.weight`, [Dx, D], cross), v(`${b}.attn2.to_q.bias`, [Dx], cross),
      m(`${b}.attn2.to_k.weight`, [Dx, c.crossAttentionDim], kv), v(`${b}.attn2.to_k.bias`, [Dx], cross),
      m(`${b}.attn2.to_v.weight`, [Dx, c.crossAttentionDim], kv), v(`${b}.attn2.to_v.bias`, [Dx], cross),
      m(`${b}.attn2.to_out.0.weight`, [D, Dx], cross), v(`${b}.attn2.to_out.0.bias`, [D]),
      // the fused Mix-FFN kernel reads these three together
      m(`${b}.ff.conv_inverted.weight`, [2 * F, D, 1, 1], ff, `${b}.ff`), v(`${b}.ff.conv_inverted.bias`, [2 * F], ff),
      m(`${b}.ff.conv_depth.weight`, [2 * F, 1, 3, 3], ff, `${b}.ff`), v(`${b}.ff.conv_depth.bias`, [2 * F], ff),
      m(`${b}.ff.conv_point.weight`, [D, F, 1, 1], ff, `${b}.ff`),
    );
  }
  return specs;
}
