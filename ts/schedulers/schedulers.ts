/** The schedulers this engine runs, by the `_class_name` of their scheduler_config.json: a new scheduler is
 * one entry here (and a pipeline's list in components.ts). */
import type { Backend } from '../backends/backend.js';
import type { ConfigReader } from '../io/config.js';
import type { Tensor } from '../tensor/tensor.js';
import { FlowDpmSolver, readFlowDpmSolverConfig } from './flow-dpm-solver.js';
import { FlowEuler, readFlowEulerConfig } from './flow-euler.js';
import { readScmConfig, ScmScheduler } from './scm.js';

/** A sampler's contract with the denoising loop, as diffusers' `step`: its scalar coefficients are computed
 * here in fp32, the latent updates run as tensor ops (Backend.axpby) on the latents' backend. */
export interface Scheduler {
  readonly timesteps: ArrayLike<number>;
  /** σ of every step and the final 0 (flow matching: x_σ = (1 − σ)·x0 + σ·ε) */
  readonly sigmas: ArrayLike<number>;
  setTimesteps(n: number): void;
  /** starts the schedule at step `index` (image-to-image), after setTimesteps (diffusers' set_begin_index) */
  setBeginIndex(index: number): void;
  /** the next sample (a new tensor) from the model output at the current step; the inputs are left alone */
  step(be: Backend, modelOutput: Tensor, sample: Tensor): Tensor;
  /** frees the tensors the scheduler keeps between steps (multistep history); setTimesteps also does */
  release(): void;
}

export const SCHEDULER_CLASSES: Record<string, { fromFolder(dir: string): Scheduler | ScmScheduler; readConfig(cfg: ConfigReader): object }> = {
  DPMSolverMultistepScheduler: { fromFolder: (dir) => FlowDpmSolver.fromFolder(dir), readConfig: readFlowDpmSolverConfig },
  FlowMatchEulerDiscreteScheduler: { fromFolder: (dir) => FlowEuler.fromFolder(dir), readConfig: readFlowEulerConfig },
  /** Sana-Sprint's sampler: its own loop (SanaSprintPipeline), not the flow samplers' Scheduler contract */
  SCMScheduler: { fromFolder: (dir) => ScmScheduler.fromFolder(dir), readConfig: readScmConfig },
};
