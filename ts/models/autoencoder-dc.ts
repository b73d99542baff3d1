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
import type { Tensor } from '../tensor/tensor.js';
import { decoderSteps, readAutoencoderDcConfig, type AutoencoderDcConfig, type DecoderStep } from './dcae-config.js';
import { channelRepeat, DcaeModules, DownBlock, EfficientVitBlock, groupMean, LINEAR_ATTENTION_EPS, repeatInterleave, ResBlock, UpBlock } from './dcae-modules.js';
import { blendTiles, cropTensor, latentTiles, type Rect, type TilingOptions } from './dcae-tiling.js';
import { Scope } from './modules.js';
import type { LoadOptions, Params } from './params.js';
import type { PrecisionDecision } from './precision.js';
import type { Taps } from './sana-transformer.js';

export class AutoencoderDC {
  private constructor(
    readonly backend: Backend,
    readonly config: AutoencoderDcConfig,
    private readonly m: DcaeModules,
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
      const modules = new DcaeModules(config, hasEncoder);
      // bf16's 8-bit mantissa costs 1–3 % relative L2 error through the DC-AE's ~40 weight layers on the
      // golden cases, f16's 11 bits < 0.2 %: the same memory, so reduced-precision mode holds DC-AE weights as f16
      const weightDtype = opts.weightDtype === 'bf16' ? 'f16' : opts.weightDtype;
      const params = modules.weights.load(backend, store, 'AutoencoderDC', { ...opts, weightDtype }, false);
      const warnings = [
        ...(opts.weightDtype === 'bf16' ? ['reduced-precision mode: AutoencoderDC weights are held as f16 (same memory as bf16, 8× finer mantissa)'] : []),
        ...params.warnings(cfg),
      ];
      return new AutoencoderDC(backend, config, modules, params, hasEncoder, warnings);
    } finally {
      store.close();
    }
  }

  get spatialCompression(): number {
    return 2 ** (this.config.decoderBlockOutChannels.length - 1);
  }

  /** the precision this model runs in, and why (fp32: no bf16 convolution kernels yet) */
  get precision(): PrecisionDecision {
    return this.p.precision;
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
    const [, Cin, H, W] = shape;
    const f = this.spatialCompression;
    if (Cin !== c.inChannels || H % f || W % f)
      throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `AutoencoderDC.encode: Expected [B, ${c.inChannels}, H, W] with H, W multiples of ${f} for x but received ${JSON.stringify(shape)}`);
    const { m, p } = this;
    const scope = new Scope();
    try {
      let hs = scope.keep(m.encoderConvIn!.forward(be, p, scope.keep(be.tensor([...shape], 'f32', x)), { padding: 1 }));
      const n = c.encoderBlockOutChannels.length;
      for (let i = 0; i < n; i++) {
        const pre = `encoder.down_blocks.${i}`;
        let k = 0;
        for (; k < c.encoderLayersPerBlock[i]; k++) {
          const blk = m.blocks.get(`${pre}.${k}`);
          hs = blk instanceof ResBlock ? blk.forward(be, p, scope, hs, 'silu') : m.block(`${pre}.${k}`, EfficientVitBlock).forward(be, p, scope, hs);
        }
        if (i < n - 1) hs = m.block(`${pre}.${k}`, DownBlock).forward(be, p, scope, hs);
      }
      let out = scope.keep(m.encoderConvOut!.forward(be, p, hs, { padding: 1 }));
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
    const { m, p } = this;
    const scope = new Scope();
    try {
      switch (step.kind) {
        case 'conv_in': {
          const hs = scope.keep(m.decoderConvIn.forward(be, p, x, { padding: 1 }));
          return c.decoderInShortcut ? be.residual(hs, scope.keep(repeatInterleave(be, x, channelRepeat(c.latentChannels, step.channels)))) : scope.release(hs);
        }
        case 'up':
          return scope.release(m.block(step.pre, UpBlock).forward(be, p, scope, x));
        case 'res':
          return scope.release(m.block(step.pre, ResBlock).forward(be, p, scope, x, step.act));
        case 'evit':
          return scope.release(m.block(step.pre, EfficientVitBlock).forward(be, p, scope, x));
        case 'head': {
          const n = scope.keep(m.decoderNormOut.forward(be, p, x));
          if (taps) taps('decoder.norm_out.out_channels_last', toChannelsLast(n), [n.shape[0], n.shape[2], n.shape[3], n.shape[1]]);
          be.activation(n, c.decoderConvActFn, n);
          return m.decoderConvOut.forward(be, p, n, { padding: 1 });
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
      const blk = this.m.block(step.pre, EfficientVitBlock);
      const branches = blk.branches(be, this.p, scope, x);
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
          state.set(kv.toFloat32(), base);
          state.set(ksum.toFloat32(), base + hd * hd);
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
      const blk = this.m.block(step.pre, EfficientVitBlock);
      const branches = blk.branches(be, this.p, scope, x);
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
      return scope.release(blk.finish(be, this.p, scope, x, att));
    } finally {
      scope.dispose();
    }
  }
}

function toChannelsLast(t: Tensor): Float32Array {
  const [B, C, H, W] = t.shape;
  const src = t.toFloat32();
  const out = new Float32Array(src.length);
  for (let b = 0; b < B; b++) for (let c = 0; c < C; c++) for (let p = 0; p < H * W; p++) out[(b * H * W + p) * C + c] = src[(b * C + c) * H * W + p];
  return out;
}
