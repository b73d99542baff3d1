/** The AutoencoderDC module tree of a config: every weight declared once under its diffusers key, with its
 * shape and the config values behind it, next to the forward that uses it. */
import type { Activation, Backend } from '../backends/backend.js';
import { SanaError } from '../errors.js';
import { view4, type Tensor } from '../tensor/tensor.js';
import type { AutoencoderDcConfig } from './dcae-config.js';
import { Scope, Weights } from './modules.js';
import type { Params } from './params.js';

/** LiteMLA's ε in out = num / (den + ε) (diffusers SanaMultiscaleAttnProcessor2_0). */
export const LINEAR_ATTENTION_EPS = 1e-15;

/** A conv2d weight and (optionally) its bias. */
class Conv {
  readonly weight: string;
  readonly bias: string | null;
  constructor(w: Weights, name: string, shape: number[], from: string, bias = true) {
    this.weight = w.matrix(`${name}.weight`, shape, from);
    this.bias = bias ? w.vector(`${name}.bias`, [shape[0]], from) : null;
  }
  forward(be: Backend, p: Params, x: Tensor, opts: { padding?: number; stride?: number; groups?: number; upsample?: 1 | 2; act?: Activation } = {}): Tensor {
    return be.conv2d(x, p.get(this.weight), { bias: this.bias === null ? undefined : p.get(this.bias), ...opts });
  }
}

/** RMSNorm2d over the channels of an NCHW map, with weight and bias. */
class ChannelNorm {
  readonly weight: string;
  readonly bias: string;
  constructor(w: Weights, name: string, C: number, from: string) {
    this.weight = w.vector(`${name}.weight`, [C], from);
    this.bias = w.vector(`${name}.bias`, [C], from);
  }
  forward(be: Backend, p: Params, x: Tensor): Tensor {
    return be.rmsNormChannels(x, { eps: 1e-5, weight: p.get(this.weight), bias: p.get(this.bias) });
  }
}

/** ResBlock: conv3×3 → act → conv3×3 (no bias) → RMSNorm2d, plus the input. */
export class ResBlock {
  private readonly conv1: Conv;
  private readonly conv2: Conv;
  private readonly norm: ChannelNorm;
  constructor(w: Weights, pre: string, C: number, from: string) {
    this.conv1 = new Conv(w, `${pre}.conv1`, [C, C, 3, 3], from);
    this.conv2 = new Conv(w, `${pre}.conv2`, [C, C, 3, 3], from, false);
    this.norm = new ChannelNorm(w, `${pre}.norm`, C, from);
  }
  // Intermediates are freed as soon as the next op has read them (still kept by the scope for errors;
  // dispose is idempotent): at 1024² a map of stage 0 is 512 MB.
  forward(be: Backend, p: Params, scope: Scope, x: Tensor, act: Activation): Tensor {
    const h1 = scope.keep(this.conv1.forward(be, p, x, { padding: 1, act }));
    const h2 = scope.keep(this.conv2.forward(be, p, h1, { padding: 1 }));
    h1.dispose();
    const n = scope.keep(this.norm.forward(be, p, h2));
    h2.dispose();
    return be.residual(n, x, { out: n }); // x + norm, in place (addition commutes exactly)
  }
}

/** EfficientViTBlock: LiteMLA (multi-scale ReLU linear attention, residual inside) then GLUMBConv (residual
 * inside). The sharded decoder runs its two halves apart (branches, finish). */
export class EfficientVitBlock {
  /** q, k and v fused at load into one [3C, C, 1, 1] projection: a head's q|k|v are consecutive channel blocks */
  private readonly qkv: string;
  private readonly multiscale: { projIn: string; projOut: string; kernel: number }[];
  private readonly toOut: string;
  private readonly normOut: ChannelNorm;
  private readonly inverted: Conv;
  private readonly depth: Conv;
  private readonly point: Conv;
  private readonly norm: ChannelNorm;

  constructor(w: Weights, readonly pre: string, readonly channels: number, readonly headDim: number, scales: number[], from: string) {
    const C = channels;
    const inner = (C / headDim) * headDim;
    const attn = `${from}, attention_head_dim = ${headDim}, qkv_multiscales = ${JSON.stringify(scales)}`;
    const group = `${pre}.attn.to_qkv`;
    const parts = ['to_q', 'to_k', 'to_v'].map((n) => w.matrix(`${pre}.attn.${n}.weight`, [inner, C], attn, { group }));
    this.qkv = w.fuse(`${pre}.attn.to_qkv`, parts, [3 * inner, C, 1, 1], false);
    this.multiscale = scales.map((k, s) => ({
      projIn: w.matrix(`${pre}.attn.to_qkv_multiscale.${s}.proj_in.weight`, [3 * inner, 1, k, k], attn),
      projOut: w.matrix(`${pre}.attn.to_qkv_multiscale.${s}.proj_out.weight`, [3 * inner, headDim, 1, 1], attn),
      kernel: k,
    }));
    this.toOut = w.matrix(`${pre}.attn.to_out.weight`, [C, inner * (1 + scales.length)], attn);
    this.normOut = new ChannelNorm(w, `${pre}.attn.norm_out`, C, from);
    this.inverted = new Conv(w, `${pre}.conv_out.conv_inverted`, [8 * C, C, 1, 1], attn);
    this.depth = new Conv(w, `${pre}.conv_out.conv_depth`, [8 * C, 1, 3, 3], attn);
    this.point = new Conv(w, `${pre}.conv_out.conv_point`, [C, 4 * C, 1, 1], attn, false);
    this.norm = new ChannelNorm(w, `${pre}.conv_out.norm`, C, from);
  }

  get heads(): number {
    return this.channels / this.headDim;
  }

  forward(be: Backend, p: Params, scope: Scope, x: Tensor): Tensor {
    const [B, C, H, W] = x.shape;
    const HW = H * W;
    const hd = this.headDim;
    const heads = this.heads;
    const branches = this.branches(be, p, scope, x);
    // heads of each branch: channel blocks [q hd | k hd | v hd]; output channel g·hd + j of the concatenation
    const G = branches.length * heads;
    const att = scope.keep(be.empty([B, G * hd, H, W]));
    branches.forEach((t, s) => {
      const strides = [3 * C * HW, 1, 3 * hd * HW, HW] as const; // [B, HW, heads, hd] over NCHW [B, 3C, HW]
      const view = (offset: number) => view4(t, [B, HW, heads, hd], strides, offset);
      be.linearAttention(view(0), view(hd * HW), view(2 * hd * HW), {
        eps: LINEAR_ATTENTION_EPS,
        out: view4(att, [B, HW, heads, hd], [G * hd * HW, 1, hd * HW, HW], s * heads * hd * HW),
      });
    });
    return this.finish(be, p, scope, x, att);
  }

  /** q|k|v as one [3C, C] 1×1 conv, then each multi-scale branch's aggregation of it (k×k depth-wise, grouped 1×1). */
  branches(be: Backend, p: Params, scope: Scope, x: Tensor): Tensor[] {
    const C = x.shape[1];
    const qkv = scope.keep(be.conv2d(x, p.get(this.qkv), {}));
    return [qkv, ...this.multiscale.map(({ projIn, projOut, kernel }) => {
      const agg = scope.keep(be.conv2d(qkv, p.get(projIn), { padding: Math.floor(kernel / 2), groups: 3 * C }));
      return scope.keep(be.conv2d(agg, p.get(projOut), { groups: 3 * this.heads }));
    })];
  }

  /** to_out, norm_out and the attention residual, then GLUMBConv: silu(1×1 expand) → 3×3 depth-wise →
   * value · silu(gate) → 1×1 project → RMSNorm → residual. */
  finish(be: Backend, p: Params, scope: Scope, x: Tensor, att: Tensor): Tensor {
    const [B, C, H, W] = x.shape;
    const HW = H * W;
    const o = scope.keep(be.conv2d(att, p.get(this.toOut).reshape([C, att.shape[1], 1, 1]), {}));
    const x1 = scope.keep(be.residual(x, scope.keep(this.normOut.forward(be, p, o))));
    const E = 8 * C;
    const t1 = scope.keep(this.inverted.forward(be, p, x1, { act: 'silu' }));
    const t2 = scope.keep(this.depth.forward(be, p, t1, { padding: 1, groups: E }));
    const u = scope.keep(be.empty([B, E / 2, H, W]));
    for (let b = 0; b < B; b++) {
      const value = t2.slice(b * E * HW, [E / 2, HW]);
      const gate = t2.slice(b * E * HW + (E / 2) * HW, [E / 2, HW]);
      be.activation(gate, 'silu', gate);
      be.mul(value, gate, u.slice(b * (E / 2) * HW, [E / 2, HW]));
    }
    const t3 = scope.keep(this.point.forward(be, p, u));
    return scope.keep(be.residual(x1, scope.keep(this.norm.forward(be, p, t3))));
  }
}

/** DCUpBlock2d with shortcut: conv3×3(nearest ×2) (or pixel-shuffled conv) + pixel_shuffle(repeat_interleave(x)). */
export class UpBlock {
  private readonly conv: Conv;
  constructor(w: Weights, pre: string, Cin: number, readonly Cout: number, private readonly interpolate: boolean, from: string) {
    this.conv = new Conv(w, `${pre}.conv`, [interpolate ? Cout : Cout * 4, Cin, 3, 3], from);
  }
  forward(be: Backend, p: Params, scope: Scope, x: Tensor): Tensor {
    let main: Tensor;
    if (this.interpolate) {
      // the conv reads the nearest ×2 upsampling from x: the 4× map is never made
      main = scope.keep(this.conv.forward(be, p, x, { padding: 1, upsample: 2 }));
    } else {
      const pre = scope.keep(this.conv.forward(be, p, x, { padding: 1 }));
      main = scope.keep(be.pixelShuffle(pre, 2));
      pre.dispose();
    }
    // the shortcut pixel_shuffle(repeat_interleave(x)) added to the main path in one pass
    return be.pixelShuffle(x, 2, { repeat: channelRepeat(x.shape[1], this.Cout * 4), accumulate: true, out: main });
  }
}

/** DCDownBlock2d with shortcut: stride-2 conv (or pixel-unshuffled conv) + mean of pixel_unshuffle(x) groups. */
export class DownBlock {
  private readonly conv: Conv;
  constructor(w: Weights, pre: string, Cin: number, readonly Cout: number, private readonly unshuffle: boolean, from: string) {
    this.conv = new Conv(w, `${pre}.conv`, [unshuffle ? Cout / 4 : Cout, Cin, 3, 3], from);
  }
  forward(be: Backend, p: Params, scope: Scope, x: Tensor): Tensor {
    const main = this.unshuffle
      ? scope.keep(be.pixelUnshuffle(scope.keep(this.conv.forward(be, p, x, { padding: 1 })), 2))
      : scope.keep(this.conv.forward(be, p, x, { padding: 1, stride: 2 }));
    return scope.keep(be.residual(main, scope.keep(groupMean(be, scope.keep(be.pixelUnshuffle(x, 2)), this.Cout))));
  }
}

export type Block = ResBlock | EfficientVitBlock | UpBlock | DownBlock;

/** Every module of the decoder (and of the encoder when the checkpoint has one), blocks by their key prefix. */
export class DcaeModules {
  readonly weights = new Weights();
  readonly blocks = new Map<string, Block>();
  readonly decoderConvIn: Conv;
  readonly decoderNormOut: ChannelNorm;
  readonly decoderConvOut: Conv;
  readonly encoderConvIn: Conv | null = null;
  readonly encoderConvOut: Conv | null = null;

  constructor(c: AutoencoderDcConfig, withEncoder: boolean) {
    const w = this.weights;
    const hd = c.attentionHeadDim;
    const add = (pre: string, b: Block) => this.blocks.set(pre, b);
    const layer = (pre: string, type: string, C: number, scales: number[], from: string) =>
      add(pre, type === 'ResBlock' ? new ResBlock(w, pre, C, from) : new EfficientVitBlock(w, pre, C, hd, scales, from));

    let ch = c.decoderBlockOutChannels;
    let n = ch.length;
    let stage = (i: number) => `decoder_block_out_channels[${i}] = ${ch[i]}`;
    this.decoderConvIn = new Conv(w, 'decoder.conv_in', [ch[n - 1], c.latentChannels, 3, 3], `${stage(n - 1)}, latent_channels = ${c.latentChannels}`);
    this.decoderNormOut = new ChannelNorm(w, 'decoder.norm_out', ch[0], stage(0));
    this.decoderConvOut = new Conv(w, 'decoder.conv_out', [c.inChannels, ch[0], 3, 3], `${stage(0)}, in_channels = ${c.inChannels}`);
    for (let i = 0; i < n; i++) {
      const pre = `decoder.up_blocks.${i}`;
      let k = 0;
      if (i < n - 1) add(`${pre}.${k++}`, new UpBlock(w, `${pre}.0`, ch[i + 1], ch[i], c.upsampleInterpolate, `${stage(i)}, ${stage(i + 1)}, upsample_block_type = ${c.upsampleInterpolate ? 'interpolate' : 'pixel_shuffle'}`));
      for (let l = 0; l < c.decoderLayersPerBlock[i]; l++, k++) layer(`${pre}.${k}`, c.decoderBlockTypes[i], ch[i], c.decoderQkvMultiscales[i], stage(i));
    }
    if (!withEncoder) return;
    ch = c.encoderBlockOutChannels;
    n = ch.length;
    stage = (i: number) => `encoder_block_out_channels[${i}] = ${ch[i]}`;
    this.encoderConvIn = new Conv(w, 'encoder.conv_in', [ch[0], c.inChannels, 3, 3], `${stage(0)}, in_channels = ${c.inChannels}`);
    this.encoderConvOut = new Conv(w, 'encoder.conv_out', [c.latentChannels, ch[n - 1], 3, 3], `${stage(n - 1)}, latent_channels = ${c.latentChannels}`);
    for (let i = 0; i < n; i++) {
      const pre = `encoder.down_blocks.${i}`;
      let k = 0;
      for (; k < c.encoderLayersPerBlock[i]; k++) layer(`${pre}.${k}`, c.encoderBlockTypes[i], ch[i], c.encoderQkvMultiscales[i], stage(i));
      if (i < n - 1) add(`${pre}.${k}`, new DownBlock(w, `${pre}.${k}`, ch[i], ch[i + 1], c.downsamplePixelUnshuffle, `${stage(i)}, ${stage(i + 1)}, downsample_block_type = ${c.downsamplePixelUnshuffle ? 'pixel_unshuffle' : 'conv'}`));
    }
  }

  block<T extends Block>(pre: string, kind: abstract new (...args: never[]) => T): T {
    const b = this.blocks.get(pre);
    if (!(b instanceof kind)) throw new SanaError('ERR_SANA_NATIVE', `internal: ${pre} is not a ${kind.name}`);
    return b;
  }
}

/** How many times each of `from` channels repeats to make `to` (a channel shortcut's repeat_interleave). */
export function channelRepeat(from: number, to: number): number {
  const rep = to / from;
  if (!Number.isInteger(rep) || rep < 1) throw new SanaError('ERR_SANA_MODEL_FORMAT', `AutoencoderDC: channel shortcut needs an integer repeat, got ${rep}`);
  return rep;
}

/** torch.repeat_interleave(x, rep, dim=1) on NCHW: output channel k copies input channel floor(k / rep) (one
 * strided copy whose source repeats with stride 0). */
export function repeatInterleave(be: Backend, x: Tensor, rep: number): Tensor {
  const [B, C, H, W] = x.shape;
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
export function groupMean(be: Backend, x: Tensor, Cout: number): Tensor {
  const C = x.shape[1];
  if (C % Cout !== 0) throw new SanaError('ERR_SANA_MODEL_FORMAT', `AutoencoderDC: ${C} channels do not split into ${Cout} groups`);
  return be.groupMean(x, Cout);
}
