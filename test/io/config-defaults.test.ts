// Every config default of the four component classes and the two schedulers equals upstream's: a config
// with the key absent must read exactly like one that spells out upstream's default. The defaults below are
// copied from the upstream signatures (diffusers SanaTransformer2DModel / AutoencoderDC /
// DPMSolverMultistepScheduler / FlowMatchEulerDiscreteScheduler __init__, transformers Gemma2Config), not
// from this package. Base configs use non-default values where a default could hide behind them (e.g.
// in_channels 16, so an absent out_channels must give 32, not in_channels).
import { describe, expect, it } from 'vitest';

import { ConfigReader } from '../../ts/io/config.js';
import type { JsonValue } from '../../ts/io/json.js';
import { readAutoencoderDcConfig } from '../../ts/models/dcae-config.js';
import { readGemma2Config } from '../../ts/models/gemma2.js';
import { readSanaTransformerConfig } from '../../ts/models/sana-transformer.js';
import { readFlowDpmSolverConfig } from '../../ts/schedulers/flow-dpm-solver.js';
import { readFlowEulerConfig } from '../../ts/schedulers/flow-euler.js';

type Json = Record<string, JsonValue>;

interface ClassDefaults {
  name: string;
  read: (cfg: ConfigReader) => unknown;
  base: Json;
  upstream: Json;
}

const CLASSES: ClassDefaults[] = [
  {
    name: 'SanaTransformer2DModel',
    read: readSanaTransformerConfig,
    base: {
      in_channels: 16, out_channels: 16, num_attention_heads: 70, attention_head_dim: 32, num_layers: 2, num_cross_attention_heads: 10,
      cross_attention_head_dim: 64, cross_attention_dim: 2240, caption_channels: 128, mlp_ratio: 3.0, dropout: 0.0, attention_bias: true,
      sample_size: 16, patch_size: 2, norm_elementwise_affine: false, norm_eps: 1e-5, interpolation_scale: 1.0, guidance_embeds: true,
      guidance_embeds_scale: 0.5, qk_norm: 'rms_norm_across_heads', timestep_scale: 2.0,
    },
    upstream: {
      in_channels: 32, out_channels: 32, num_attention_heads: 70, attention_head_dim: 32, num_layers: 20, num_cross_attention_heads: 20,
      cross_attention_head_dim: 112, cross_attention_dim: 2240, caption_channels: 2304, mlp_ratio: 2.5, dropout: 0.0, attention_bias: false,
      sample_size: 32, patch_size: 1, norm_elementwise_affine: false, norm_eps: 1e-6, interpolation_scale: null, guidance_embeds: false,
      guidance_embeds_scale: 0.1, qk_norm: null, timestep_scale: 1.0,
    },
  },
  {
    name: 'AutoencoderDC',
    read: readAutoencoderDcConfig,
    // the released dc-ae-f32c32-sana-1.0 config (sana-spec.md §3.1)
    base: {
      in_channels: 3, latent_channels: 32, attention_head_dim: 32,
      encoder_block_types: ['ResBlock', 'ResBlock', 'ResBlock', 'EfficientViTBlock', 'EfficientViTBlock', 'EfficientViTBlock'],
      decoder_block_types: ['ResBlock', 'ResBlock', 'ResBlock', 'EfficientViTBlock', 'EfficientViTBlock', 'EfficientViTBlock'],
      encoder_block_out_channels: [128, 256, 512, 512, 1024, 1024], decoder_block_out_channels: [128, 256, 512, 512, 1024, 1024],
      encoder_layers_per_block: [2, 2, 2, 3, 3, 3], decoder_layers_per_block: [3, 3, 3, 3, 3, 3],
      encoder_qkv_multiscales: [[], [], [], [5], [5], [5]], decoder_qkv_multiscales: [[], [], [], [5], [5], [5]],
      upsample_block_type: 'interpolate', downsample_block_type: 'Conv', decoder_norm_types: 'rms_norm', decoder_act_fns: 'silu',
      encoder_out_shortcut: false, decoder_in_shortcut: false, decoder_conv_act_fn: 'silu', scaling_factor: 0.41407,
    },
    upstream: {
      in_channels: 3, latent_channels: 32, attention_head_dim: 32, encoder_block_types: 'ResBlock', decoder_block_types: 'ResBlock',
      encoder_block_out_channels: [128, 256, 512, 512, 1024, 1024], decoder_block_out_channels: [128, 256, 512, 512, 1024, 1024],
      encoder_layers_per_block: [2, 2, 2, 3, 3, 3], decoder_layers_per_block: [3, 3, 3, 3, 3, 3],
      encoder_qkv_multiscales: [[], [], [], [5], [5], [5]], decoder_qkv_multiscales: [[], [], [], [5], [5], [5]],
      upsample_block_type: 'pixel_shuffle', downsample_block_type: 'pixel_unshuffle', decoder_norm_types: 'rms_norm', decoder_act_fns: 'silu',
      encoder_out_shortcut: true, decoder_in_shortcut: true, decoder_conv_act_fn: 'relu', scaling_factor: 1.0,
    },
  },
  {
    name: 'Gemma2Model',
    read: readGemma2Config,
    base: {
      vocab_size: 512, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2,
      head_dim: 32, hidden_activation: 'gelu_pytorch_tanh', rms_norm_eps: 1e-5, rope_theta: 5000.0, attention_bias: false,
      query_pre_attn_scalar: 32, sliding_window: 4, attn_logit_softcapping: 2.0,
    },
    upstream: {
      vocab_size: 256000, hidden_size: 2304, intermediate_size: 9216, num_hidden_layers: 26, num_attention_heads: 8, num_key_value_heads: 4,
      head_dim: 256, hidden_activation: 'gelu_pytorch_tanh', rms_norm_eps: 1e-6, rope_theta: 10000.0, attention_bias: false,
      query_pre_attn_scalar: 256, sliding_window: 4096, attn_logit_softcapping: 50.0,
    },
  },
  {
    name: 'DPMSolverMultistepScheduler',
    read: readFlowDpmSolverConfig,
    base: {
      num_train_timesteps: 500, solver_order: 1, prediction_type: 'flow_prediction', thresholding: false, algorithm_type: 'dpmsolver++',
      solver_type: 'heun', lower_order_final: false, euler_at_final: true, use_karras_sigmas: false, use_exponential_sigmas: false,
      use_beta_sigmas: false, use_lu_lambdas: false, use_flow_sigmas: true, flow_shift: 3.0, final_sigmas_type: 'zero', use_dynamic_shifting: false,
    },
    // prediction_type 'epsilon' and use_flow_sigmas false are upstream's defaults but not Sana's: an absent key is
    // then rejected exactly like the spelled-out default
    upstream: {
      num_train_timesteps: 1000, solver_order: 2, prediction_type: 'epsilon', thresholding: false, algorithm_type: 'dpmsolver++',
      solver_type: 'midpoint', lower_order_final: true, euler_at_final: false, use_karras_sigmas: false, use_exponential_sigmas: false,
      use_beta_sigmas: false, use_lu_lambdas: false, use_flow_sigmas: false, flow_shift: 1.0, final_sigmas_type: 'zero', use_dynamic_shifting: false,
    },
  },
  {
    name: 'FlowMatchEulerDiscreteScheduler',
    read: readFlowEulerConfig,
    base: {
      num_train_timesteps: 500, shift: 3.0, use_dynamic_shifting: false, shift_terminal: null, use_karras_sigmas: false,
      use_exponential_sigmas: false, use_beta_sigmas: false, invert_sigmas: false, stochastic_sampling: false,
    },
    upstream: {
      num_train_timesteps: 1000, shift: 1.0, use_dynamic_shifting: false, shift_terminal: null, use_karras_sigmas: false,
      use_exponential_sigmas: false, use_beta_sigmas: false, invert_sigmas: false, stochastic_sampling: false,
    },
  },
];

/** What reading a config gives: the parsed config, or the error's code and the key it names. */
function outcome(c: ClassDefaults, raw: Json, key: string): unknown {
  try {
    return c.read(new ConfigReader(`${c.name}/config.json`, raw));
  } catch (e) {
    const err = e as { code?: string; message: string };
    return { code: err.code, namesKey: err.message.includes(` for ${key} `) };
  }
}

describe('config defaults equal upstream', () => {
  for (const c of CLASSES) {
    it(`${c.name}: the base config reads`, () => {
      expect(() => c.read(new ConfigReader(`${c.name}/config.json`, c.base))).not.toThrow();
    });
    for (const [key, value] of Object.entries(c.upstream)) {
      it(`${c.name}.${key}: absent reads as ${JSON.stringify(value)}`, () => {
        const { [key]: _, ...absent } = c.base;
        expect(outcome(c, absent, key)).toEqual(outcome(c, { ...c.base, [key]: value }, key));
      });
    }
  }

  it('SanaTransformer2DModel.out_channels: null or 0 mean in_channels (diffusers: `out_channels or in_channels`)', () => {
    const base = CLASSES[0].base;
    for (const v of [null, 0]) expect(readSanaTransformerConfig(new ConfigReader('t', { ...base, out_channels: v })).outChannels).toBe(16);
  });
});
