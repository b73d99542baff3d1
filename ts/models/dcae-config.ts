/** AutoencoderDC's config.json as diffusers reads it (defaults from its __init__), and the decoder as a list of
 * steps (what the full, tiled and sharded decodes walk). Spec: ../shared/design/sana-spec.md §3.1. */
import type { ConfigReader } from '../io/config.js';
import type { JsonValue } from '../io/json.js';

export type BlockType = 'ResBlock' | 'EfficientViTBlock';
export type Act = 'silu' | 'relu';

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
