/** Every AutoencoderDC weight of a config under its diffusers key, with its shape and the config values
 * behind it. */
import type { AutoencoderDcConfig } from './dcae-config.js';
import type { ParamSpec } from './params.js';

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

export function encoderSpecs(c: AutoencoderDcConfig): ParamSpec[] {
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
