/**
 * FlowMatchEulerDiscreteScheduler(shift = flow_shift) as diffusers runs it (the schedule in TypeScript, the
 * update as a tensor op), with its fp32 arithmetic. Spec: ../shared/design/sana-spec.md §4.3 (note the shift applied twice).
 */
import type { Backend } from '../backends/backend.js';
import { ConfigReader } from '../io/config.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Scheduler } from './schedulers.js';
import { linspace } from './flow-dpm-solver.js';

const f = Math.fround;

export interface FlowEulerConfig {
  numTrainTimesteps: number;
  shift: number;
}

export function readFlowEulerConfig(cfg: ConfigReader): FlowEulerConfig {
  const cls = cfg.raw._class_name;
  if (cls !== undefined && cls !== 'FlowMatchEulerDiscreteScheduler') throw cfg.error('_class_name', '"FlowMatchEulerDiscreteScheduler"', cls);
  for (const k of ['use_dynamic_shifting', 'use_karras_sigmas', 'use_exponential_sigmas', 'use_beta_sigmas', 'invert_sigmas', 'stochastic_sampling'])
    if (cfg.bool(k, false)) throw cfg.error(k, 'false (unsupported)', true);
  if (cfg.raw.shift_terminal !== undefined && cfg.raw.shift_terminal !== null) throw cfg.error('shift_terminal', 'null (unsupported)', cfg.raw.shift_terminal);
  cfg.ignore('base_shift', 'max_shift', 'base_image_seq_len', 'max_image_seq_len', 'time_shift_type');
  return {
    numTrainTimesteps: cfg.int('num_train_timesteps', 1000, 1),
    shift: cfg.number('shift', 1.0, (v) => Number.isFinite(v) && v > 0, 'a positive number'),
  };
}

export class FlowEuler implements Scheduler {
  timesteps = new Float32Array(0);
  sigmas = new Float32Array(0);
  private stepIndex = 0;
  private readonly sigmaMax: number;
  private readonly sigmaMin: number;

  constructor(readonly config: FlowEulerConfig) {
    const { numTrainTimesteps: T, shift: S } = config;
    const shiftF32 = (s: number) => f(f(S * s) / f(1 + f((S - 1) * s)));
    // train sigmas: linspace(1, T, T) reversed / T in fp32, then shifted in fp32
    this.sigmaMax = shiftF32(f(f(T) / T));
    this.sigmaMin = shiftF32(f(1 / T));
  }

  static fromFolder(dir: string, file = 'scheduler_config.json'): FlowEuler {
    return new FlowEuler(readFlowEulerConfig(ConfigReader.load(dir, file)));
  }

  setTimesteps(n: number): void {
    const { numTrainTimesteps: T, shift: S } = this.config;
    const s = linspace(this.sigmaMax * T, this.sigmaMin * T, n).map((t) => {
      const x = t / T;
      return (S * x) / (1 + (S - 1) * x);
    });
    this.sigmas = Float32Array.from([...s, 0]);
    this.timesteps = Float32Array.from(this.sigmas.subarray(0, n), (v) => v * T);
    this.stepIndex = 0;
  }

  setBeginIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.timesteps.length) throw new Error(`begin index ${index} outside the ${this.timesteps.length} scheduled steps`);
    this.stepIndex = index;
  }

  /** x + (σ_{i+1} − σ_i)·v, in fp32. */
  step(be: Backend, modelOutput: Tensor, sample: Tensor): Tensor {
    const i = this.stepIndex;
    if (i >= this.timesteps.length) throw new Error(`FlowEuler: step ${i} past the ${this.timesteps.length} scheduled steps`);
    const dt = f(this.sigmas[i + 1] - this.sigmas[i]);
    this.stepIndex++;
    return be.axpby(1, sample, dt, modelOutput);
  }

  release(): void {}
}
