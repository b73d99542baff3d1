// The golden-run/1 ops (schema in ../shared/golden/README.md): one runner per op, shared by the parity test
// and the reduced-precision test.
import { join } from 'node:path';

import type { Backend } from '../../ts/backends/backend.js';
import type { JsonValue } from '../../ts/io/json.js';
import { AutoencoderDC } from '../../ts/models/autoencoder-dc.js';
import { Gemma2Model } from '../../ts/models/gemma2.js';
import type { LoadOptions } from '../../ts/models/params.js';
import { SanaTransformer2DModel } from '../../ts/models/sana-transformer.js';
import { SanaPipelineCore } from '../../ts/pipeline/pipeline-core.js';
import { FlowDpmSolver } from '../../ts/schedulers/flow-dpm-solver.js';
import { FlowEuler } from '../../ts/schedulers/flow-euler.js';
import { ScmScheduler } from '../../ts/schedulers/scm.js';
import { sprintGuidance } from '../../ts/pipeline/sprint.js';
import { denormalizeToNhwc, resizeAndCrop, toUint8 } from '../../ts/pipeline/postprocess.js';
import { aspectRatioBins, classifyHeightWidthBin } from '../../ts/pipeline/resolution.js';
import { randn, TorchGenerator } from '../../ts/pipeline/torch-random.js';

import { SafetensorsFile } from '../../ts/io/safetensors.js';
export interface RunEntry {
  id: string;
  op: string;
  component?: string;
  config_overrides?: Record<string, JsonValue>;
  inputs: Record<string, string>;
  params: Record<string, JsonValue>;
  outputs: Record<string, string>;
  intermediates?: Record<string, string>;
  tolerance: { atol: number; rtol: number };
  tolerance_overrides?: Record<string, { atol: number; rtol: number }>;
}

export type Values = { data: ArrayLike<number | bigint>; shape: number[] };
export type OpResult = { outputs: Record<string, Values>; taps: Map<string, Values> };
export type OpRunner = (backend: Backend, caseDir: string, entry: RunEntry, read: (ref: string, section: string) => Values, load?: LoadOptions) => OpResult | Promise<OpResult>;

/** Scheduler trace: the schedule, then every step fed the stored model output (errors never chain); the
 * updates run on the backend under test, as in a generation. */
function trace(make: (dir: string) => FlowDpmSolver | FlowEuler): OpRunner {
  return (backend, caseDir, entry, read) => {
    const s = make(join(caseDir, entry.component ?? ''));
    const n = entry.params.num_inference_steps as number;
    s.setTimesteps(n);
    const x0 = Float32Array.from(read(entry.inputs.sample, 'inputs').data as ArrayLike<number>);
    const mo = read(entry.inputs.model_outputs, 'inputs');
    const per = x0.length;
    const samples = new Float32Array((n + 1) * per);
    samples.set(x0);
    let x = backend.tensor([per], 'f32', x0);
    try {
      for (let i = 0; i < n; i++) {
        const v = backend.tensor([per], 'f32', (mo.data as Float32Array).subarray(i * per, (i + 1) * per));
        const next = s.step(backend, v, x);
        v.dispose();
        x.dispose();
        x = next;
        samples.set(x.toFloat32(), (i + 1) * per);
      }
    } finally {
      x.dispose();
      s.release();
    }
    const shape = mo.shape.slice(1);
    return {
      outputs: {
        timesteps: { data: Float32Array.from(s.timesteps), shape: [n] },
        sigmas: { data: s.sigmas, shape: [n + 1] },
        samples: { data: samples, shape: [n + 1, ...shape] },
        final_sample: { data: samples.slice(n * per), shape },
      },
      taps: new Map(),
    };
  };
}

type Draw = { shape: number[]; dtype: 'float32' | 'float64' };
const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** SCMScheduler trace: schedule, generator (after its preceding draws), then each step on the stored model
 * output with this step's noise draw. Component folders hold scheduler_config.json, a scheduler case config.json. */
const scmTrace: OpRunner = (backend, caseDir, entry, read) => {
  const p = entry.params as { num_inference_steps: number; timesteps: number[] | null; max_timesteps: number | null; intermediate_timesteps: number | null; generator_seed: string; preceding_draws?: Draw[] };
  const s = ScmScheduler.fromFolder(join(caseDir, entry.component ?? ''), entry.component ? 'scheduler_config.json' : 'config.json', entry.config_overrides);
  const n = p.num_inference_steps;
  s.setTimesteps(n, { timesteps: p.timesteps ?? undefined, maxTimesteps: p.max_timesteps ?? undefined, intermediateTimesteps: p.intermediate_timesteps });
  const g = new TorchGenerator(BigInt(p.generator_seed));
  for (const d of p.preceding_draws ?? []) randn(g, numel(d.shape), d.dtype);
  const x0 = Float32Array.from(read(entry.inputs.sample, 'inputs').data as ArrayLike<number>);
  const mo = read(entry.inputs.model_outputs, 'inputs');
  const per = x0.length;
  const shape = mo.shape.slice(1);
  const samples = new Float32Array((n + 1) * per);
  const denoised = new Float32Array(n * per);
  const noises = new Float32Array(n * per);
  samples.set(x0);
  let x = backend.tensor(shape, 'f32', x0);
  try {
    for (let i = 0; i < n; i++) {
      const noise = randn(g, per, 'float32') as Float32Array;
      noises.set(noise, i * per);
      const v = backend.tensor(shape, 'f32', (mo.data as Float32Array).subarray(i * per, (i + 1) * per));
      const { prev, x0: d } = s.step(backend, v, x, noise);
      v.dispose();
      x.dispose();
      x = prev;
      denoised.set(d.toFloat32(), i * per);
      d.dispose();
      samples.set(x.toFloat32(), (i + 1) * per);
    }
  } finally {
    x.dispose();
  }
  return {
    outputs: {
      timesteps: { data: s.timesteps, shape: [n + 1] },
      samples: { data: samples, shape: [n + 1, ...shape] },
      denoised: { data: denoised, shape: [n, ...shape] },
      noises: { data: noises, shape: [n, ...shape] },
      final_sample: { data: samples.slice(n * per), shape },
      final_denoised: { data: denoised.slice((n - 1) * per), shape },
    },
    taps: new Map(),
  };
};

function vae(backend: Backend, caseDir: string, entry: RunEntry, load?: LoadOptions): AutoencoderDC {
  return AutoencoderDC.fromFolder(join(caseDir, entry.component ?? ''), backend, { ...load, configOverrides: entry.config_overrides });
}

/** A pipeline entry's outputs from its final latents: the latents, and when asked the decoded image and its
 * "pt" form clamp(x/2 + 0.5, 0, 1). */
async function pipelineOutputs(pipe: SanaPipelineCore, final: Float32Array, shape: readonly [number, number, number, number], types: Record<string, string>): Promise<Record<string, Values>> {
  const outputs: Record<string, Values> = { latents: { data: final, shape: [...shape] } };
  if (types.image_decoded || types.image_pt) {
    const f = pipe.components.vae.spatialCompression;
    const imgShape = [shape[0], pipe.components.vae.config.inChannels, shape[2] * f, shape[3] * f];
    const raw = await pipe.decodeLatents(final, shape);
    outputs.image_decoded = { data: raw, shape: imgShape };
    outputs.image_pt = { data: raw.map((v) => Math.min(1, Math.max(0, Math.fround(Math.fround(v * 0.5) + 0.5)))), shape: imgShape };
  }
  return outputs;
}

/** SanaPipeline.__call__ on the case's pre-tokenized prompts and stored initial latents. */
const pipelineCall: OpRunner = async (backend, caseDir, entry, read, load) => {
  const p = entry.params as {
    prompt_token_ids: number[][]; negative_prompt_token_ids: number[]; pad_token_id: number; text_encoder_max_length: number;
    max_sequence_length: number; select_index: number[]; guidance_scale: number; num_inference_steps: number; num_images_per_prompt: number;
    output_types: Record<string, string>;
  };
  const pipe = await SanaPipelineCore.fromPretrained(join(caseDir, entry.component ?? ''), { ...load, backend });
  {
    try {
      const lat = read(entry.inputs.latents, 'inputs');
      const shape = lat.shape as [number, number, number, number];
      const n = p.num_images_per_prompt;
      const cond = SanaPipelineCore.repeatRows(pipe.encodeTokenIds(p.prompt_token_ids, { maxLength: p.text_encoder_max_length, padTokenId: p.pad_token_id, selectIndex: p.select_index }), n);
      const negIds = p.prompt_token_ids.map(() => p.negative_prompt_token_ids);
      const uncond = p.guidance_scale > 1
        ? SanaPipelineCore.repeatRows(pipe.encodeTokenIds(negIds, { maxLength: p.max_sequence_length, padTokenId: p.pad_token_id }), n)
        : null;
      const taps = new Map<string, Values>();
      const D = pipe.components.textEncoder.config.hiddenSize;
      taps.set('prompt_embeds', { data: cond.embeds, shape: [cond.batch, cond.length, D] });
      taps.set('prompt_attention_mask', { data: cond.mask, shape: [cond.batch, cond.length] });
      if (uncond) {
        taps.set('negative_prompt_embeds', { data: uncond.embeds, shape: [uncond.batch, uncond.length, D] });
        taps.set('negative_prompt_attention_mask', { data: uncond.mask, shape: [uncond.batch, uncond.length] });
      }
      const steps = p.num_inference_steps;
      const per = shape[1] * shape[2] * shape[3];
      const mb = uncond ? 2 * shape[0] : shape[0];
      const preds = new Float32Array(steps * mb * per);
      const after = new Float32Array(steps * shape[0] * per);
      const ts = new Float32Array(steps);
      const final = pipe.denoise(Float32Array.from(lat.data as ArrayLike<number>), shape, cond, uncond, {
        steps, guidanceScale: p.guidance_scale,
        onStep: (s) => {
          preds.set(s.modelOutput, s.index * mb * per);
          after.set(s.latents, s.index * shape[0] * per);
          ts[s.index] = s.timestep;
        },
      });
      taps.set('step_noise_pred_cfg_batch', { data: preds, shape: [steps, mb, ...shape.slice(1)] });
      taps.set('step_latents_after', { data: after, shape: [steps, ...shape] });
      taps.set('timesteps', { data: ts, shape: [steps] });
      return { outputs: await pipelineOutputs(pipe, final, shape, p.output_types), taps };
    } finally {
      pipe.dispose();
    }
  }
};

/** SanaSprintPipeline.__call__ on pre-tokenized prompts, with the stored latents or latents drawn from the
 * generator; every step's tensors are taps. */
const sprintCall: OpRunner = async (backend, caseDir, entry, read, load) => {
  const p = entry.params as {
    prompt_token_ids: number[][]; pad_token_id: number; text_encoder_max_length: number; select_index: number[]; num_inference_steps: number;
    timesteps: number[] | null; max_timesteps: number | null; intermediate_timesteps: number | null; guidance_scale: number; height: number; width: number;
    generator_seed: string; output_types: Record<string, string>;
  };
  const pipe = await SanaPipelineCore.fromPretrained(join(caseDir, entry.component ?? ''), { ...load, backend });
  try {
    const cond = pipe.encodeTokenIds(p.prompt_token_ids, { maxLength: p.text_encoder_max_length, padTokenId: p.pad_token_id, selectIndex: p.select_index });
    const taps = new Map<string, Values>();
    const D = pipe.components.textEncoder.config.hiddenSize;
    taps.set('prompt_embeds', { data: cond.embeds, shape: [cond.batch, cond.length, D] });
    taps.set('prompt_attention_mask', { data: cond.mask, shape: [cond.batch, cond.length] });
    const f = pipe.components.vae.spatialCompression;
    const shape: [number, number, number, number] = [cond.batch, pipe.components.transformer.config.inChannels, p.height / f, p.width / f];
    const g = new TorchGenerator(BigInt(p.generator_seed));
    let latents: Float32Array;
    if (entry.inputs.latents) latents = Float32Array.from(read(entry.inputs.latents, 'inputs').data as ArrayLike<number>);
    else {
      latents = randn(g, numel(shape), 'float32') as Float32Array;
      taps.set('drawn_initial_latents', { data: latents, shape });
    }
    const n = p.num_inference_steps;
    const per = numel(shape);
    const stacked = (k: number) => new Float32Array(k * per);
    const [samples, denoised, noises, outputs] = [stacked(n + 1), stacked(n), stacked(n), stacked(n)];
    const steps: Map<string, Values>[] = [];
    const final = pipe.sprintDenoise(latents, shape, cond, {
      steps: n, guidanceScale: p.guidance_scale, generators: [g],
      schedule: { timesteps: p.timesteps ?? undefined, maxTimesteps: p.max_timesteps ?? undefined, intermediateTimesteps: p.intermediate_timesteps },
      onStart: (x) => samples.set(x),
      onStep: (st) => {
        steps.push(new Map<string, Values>([
          [`step${st.index}.transformer.hidden_states`, { data: st.hiddenStates, shape }],
          [`step${st.index}.transformer.timestep`, { data: new Float32Array(shape[0]).fill(st.flowTime), shape: [shape[0]] }],
          [`step${st.index}.transformer.output`, { data: st.transformerOutput, shape }],
        ]));
        outputs.set(st.modelOutput, st.index * per);
        noises.set(st.noise, st.index * per);
        denoised.set(st.denoised, st.index * per);
        samples.set(st.latents, (st.index + 1) * per);
      },
    });
    const scm = pipe.components.scheduler as ScmScheduler;
    taps.set('timesteps', { data: scm.timesteps, shape: [n + 1] });
    const gv = sprintGuidance(p.guidance_scale, pipe.components.transformer.config.guidanceEmbedsScale);
    taps.set('guidance', { data: new Float32Array(shape[0]).fill(gv), shape: [shape[0]] });
    for (const m of steps) for (const [k, v] of m) taps.set(k, v);
    taps.set('scheduler.initial_sample', { data: samples.slice(0, per), shape });
    taps.set('scheduler.model_outputs', { data: outputs, shape: [n, ...shape] });
    taps.set('scheduler.noises', { data: noises, shape: [n, ...shape] });
    taps.set('scheduler.denoised', { data: denoised, shape: [n, ...shape] });
    taps.set('scheduler.samples', { data: samples, shape: [n + 1, ...shape] });
    return { outputs: await pipelineOutputs(pipe, final, shape, p.output_types), taps };
  } finally {
    pipe.dispose();
  }
};

export const OPS: Record<string, OpRunner> = {
  'SanaSprintPipeline.__call__': sprintCall,
  'SanaPipeline.__call__': pipelineCall,
  'SanaPipeline.resolution_binning': (_backend, _caseDir, entry, read) => {
    const hw = read(entry.inputs.height_width, 'inputs');
    const { name, bins } = aspectRatioBins(entry.params.transformer_sample_size as number);
    if (name !== entry.params.aspect_ratio_bin) throw new Error(`sample_size selects ${name}, the case expects ${entry.params.aspect_ratio_bin}`);
    const n = hw.shape[0];
    const binned = new Float64Array(2 * n);
    const output = new Float64Array(2 * n);
    for (let i = 0; i < n; i++) {
      const [h, w] = [Number(hw.data[2 * i]), Number(hw.data[2 * i + 1])];
      const b = classifyHeightWidthBin(h, w, bins);
      binned.set([b.height, b.width], 2 * i);
      output.set([h, w], 2 * i);
    }
    return { outputs: { binned_hw: { data: binned, shape: [n, 2] }, output_hw: { data: output, shape: [n, 2] } }, taps: new Map() };
  },
  'PixArtImageProcessor.resize_and_crop_tensor': (_backend, _caseDir, entry, read) => {
    const x = read(entry.inputs.samples, 'inputs');
    const [h, w] = [entry.params.new_height as number, entry.params.new_width as number];
    const out = resizeAndCrop(Float32Array.from(x.data as ArrayLike<number>), x.shape, h, w);
    return { outputs: { samples: { data: out, shape: [x.shape[0], x.shape[1], h, w] } }, taps: new Map() };
  },
  'PixArtImageProcessor.postprocess': (_backend, _caseDir, entry, read) => {
    if (entry.params.output_type !== 'np') throw new Error(`postprocess output_type ${entry.params.output_type} is not covered`);
    const x = read(entry.inputs.image, 'inputs');
    const [B, C, H, W] = x.shape;
    return { outputs: { image: { data: denormalizeToNhwc(Float32Array.from(x.data as ArrayLike<number>), x.shape), shape: [B, H, W, C] } }, taps: new Map() };
  },
  'VaeImageProcessor.numpy_to_pil': (_backend, _caseDir, entry, read) => {
    const x = read(entry.inputs.images, 'inputs');
    return { outputs: { uint8: { data: toUint8(Float32Array.from(x.data as ArrayLike<number>)), shape: x.shape } }, taps: new Map() };
  },
  'torch.randn': (_backend, _caseDir, entry) => {
    const p = entry.params as { generators: string; seed?: string; seeds?: string[]; shape: number[]; dtype: 'float32' | 'float64'; preceding_draws?: Draw[] };
    let data: Float32Array | Float64Array;
    if (p.generators === 'single') {
      const g = new TorchGenerator(BigInt(p.seed!));
      for (const d of p.preceding_draws ?? []) randn(g, numel(d.shape), d.dtype);
      data = randn(g, numel(p.shape), p.dtype);
    } else {
      // diffusers' randn_tensor with a list: one generator per batch row, each drawing shape[1:]
      const per = numel(p.shape.slice(1));
      data = p.dtype === 'float32' ? new Float32Array(numel(p.shape)) : new Float64Array(numel(p.shape));
      p.seeds!.forEach((s, i) => data.set(randn(new TorchGenerator(BigInt(s)), per, p.dtype), i * per));
    }
    return { outputs: { sample: { data, shape: p.shape } }, taps: new Map() };
  },
  'AutoencoderDC.decode': (backend, caseDir, entry, read, load) => {
    const model = vae(backend, caseDir, entry, load);
    try {
      const z = read(entry.inputs.z, 'inputs');
      const zs = Float32Array.from(z.data as ArrayLike<number>);
      if (entry.params.divide_by_scaling_factor) for (let i = 0; i < zs.length; i++) zs[i] = zs[i] / model.config.scalingFactor;
      const t = entry.params.tiling as Record<string, number> | null;
      const tiling = t ? {
        tileSampleMinHeight: t.tile_sample_min_height, tileSampleMinWidth: t.tile_sample_min_width,
        tileSampleStrideHeight: t.tile_sample_stride_height, tileSampleStrideWidth: t.tile_sample_stride_width,
      } : undefined;
      const taps = new Map<string, Values>();
      const shape = z.shape as [number, number, number, number];
      const out = model.decode(zs, shape, { tiling, taps: entry.intermediates ? (name, data, s) => taps.set(name, { data, shape: s }) : undefined });
      const f = model.spatialCompression;
      return { outputs: { sample: { data: out, shape: [shape[0], model.config.inChannels, shape[2] * f, shape[3] * f] } }, taps };
    } finally {
      model.dispose();
    }
  },
  'AutoencoderDC.encode': (backend, caseDir, entry, read, load) => {
    const model = vae(backend, caseDir, entry, load);
    try {
      const x = read(entry.inputs.x, 'inputs');
      const shape = x.shape as [number, number, number, number];
      const out = model.encode(Float32Array.from(x.data as ArrayLike<number>), shape);
      const f = model.spatialCompression;
      return { outputs: { latent: { data: out, shape: [shape[0], model.config.latentChannels, shape[2] / f, shape[3] / f] } }, taps: new Map() };
    } finally {
      model.dispose();
    }
  },
  'Gemma2Model.forward': (backend, caseDir, entry, read, load) => {
    const model = Gemma2Model.fromFolder(join(caseDir, entry.component ?? ''), backend, { ...load, configOverrides: entry.config_overrides });
    try {
      const ids = read(entry.inputs.input_ids, 'inputs');
      const mask = read(entry.inputs.attention_mask, 'inputs');
      const [B, L] = ids.shape;
      const taps = new Map<string, Values>();
      const out = model.forward(Array.from(ids.data, Number), Array.from(mask.data, Number), B, L, entry.intermediates ? (name, data, shape) => taps.set(name, { data, shape }) : undefined);
      return { outputs: { last_hidden_state: { data: out, shape: [B, L, model.config.hiddenSize] } }, taps };
    } finally {
      model.dispose();
    }
  },
  'DPMSolverMultistepScheduler.trace': trace((dir) => FlowDpmSolver.fromFolder(dir, 'config.json')),
  'FlowMatchEulerDiscreteScheduler.trace': trace((dir) => FlowEuler.fromFolder(dir, 'config.json')),
  'SCMScheduler.trace': scmTrace,
  'SanaTransformer2DModel.forward': (backend, caseDir, entry, read, load) => {
    const model = SanaTransformer2DModel.fromFolder(join(caseDir, entry.component ?? ''), backend, { ...load, configOverrides: entry.config_overrides });
    try {
      const hs = read(entry.inputs.hidden_states, 'inputs');
      const ehs = read(entry.inputs.encoder_hidden_states, 'inputs');
      const mask = read(entry.inputs.encoder_attention_mask, 'inputs');
      const t = read(entry.inputs.timestep, 'inputs');
      const g = entry.inputs.guidance ? read(entry.inputs.guidance, 'inputs') : undefined;
      const taps = new Map<string, Values>();
      const sample = model.forward(
        {
          hiddenStates: Float32Array.from(hs.data as ArrayLike<number>),
          shape: hs.shape as [number, number, number, number],
          encoderHiddenStates: Float32Array.from(ehs.data as ArrayLike<number>),
          textLength: ehs.shape[1],
          encoderAttentionMask: Array.from(mask.data, Number),
          timestep: Float32Array.from(t.data as ArrayLike<number>),
          guidance: g ? Float32Array.from(g.data as ArrayLike<number>) : undefined,
        },
        entry.intermediates ? (name, data, shape) => taps.set(name, { data, shape }) : undefined,
      );
      return { outputs: { sample: { data: sample, shape: hs.shape.map((d, i) => (i === 1 ? model.config.outChannels : d)) } }, taps };
    } finally {
      model.dispose();
    }
  },
};

/** numpy allclose: |a − e| ≤ atol + rtol·|e|, in float64. Returns the worst violation or null. */
export function compare(actual: Values, expected: Values, tol: { atol: number; rtol: number }): string | null {
  if (actual.shape.join() !== expected.shape.join()) return `shape ${JSON.stringify(actual.shape)} != expected ${JSON.stringify(expected.shape)}`;
  let worst = -1;
  let at = -1;
  let maxDiff = 0;
  for (let i = 0; i < expected.data.length; i++) {
    const a = Number(actual.data[i]);
    const e = Number(expected.data[i]);
    const diff = Math.abs(a - e);
    if (!(diff <= maxDiff)) maxDiff = Number.isNaN(diff) ? Infinity : Math.max(maxDiff, diff);
    const excess = Number.isNaN(diff) ? Infinity : diff - (tol.atol + tol.rtol * Math.abs(e));
    if (excess > 0 && excess > worst) {
      worst = excess;
      at = i;
    }
  }
  if (at < 0) return null;
  return `element ${at}: actual ${Number(actual.data[at])} vs expected ${Number(expected.data[at])} (max |diff| ${maxDiff.toExponential(3)}, atol ${tol.atol}, rtol ${tol.rtol})`;
}

/** A reader of the tensor refs of one case ("KEY" in the section's file, or "file:KEY"). */
export function caseReader(caseDir: string): { read: (ref: string, section: string) => Values; close: () => void } {
  const files = new Map<string, SafetensorsFile>();
  return {
    read: (ref, section) => {
      const [file, key] = ref.includes(':') ? ref.split(':') : [section, ref];
      let f = files.get(file);
      if (!f) files.set(file, (f = SafetensorsFile.open(join(caseDir, `${file}.safetensors`))));
      const { info, data } = f.read(key);
      return { data: data as ArrayLike<number | bigint>, shape: info.shape };
    },
    close: () => files.forEach((f) => f.close()),
  };
}
