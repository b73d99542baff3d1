/** The schedulers this engine runs, by the `_class_name` of their scheduler_config.json: a new scheduler
 * (e.g. Sana-Sprint's SCM) is one entry here. */
import type { ConfigReader } from '../io/config.js';
import { FlowDpmSolver, readFlowDpmSolverConfig } from './flow-dpm-solver.js';
import { FlowEuler, readFlowEulerConfig } from './flow-euler.js';

/** A sampler's contract with the denoising loop (fp32 host arrays, as diffusers' `step` on one tensor). */
export interface Scheduler {
  readonly timesteps: ArrayLike<number>;
  setTimesteps(n: number): void;
  /** the next sample from the model output at the current step */
  step(modelOutput: Float32Array, sample: Float32Array): Float32Array;
}

export const SCHEDULER_CLASSES: Record<string, { fromFolder(dir: string): Scheduler; readConfig(cfg: ConfigReader): object }> = {
  DPMSolverMultistepScheduler: { fromFolder: (dir) => FlowDpmSolver.fromFolder(dir), readConfig: readFlowDpmSolverConfig },
  FlowMatchEulerDiscreteScheduler: { fromFolder: (dir) => FlowEuler.fromFolder(dir), readConfig: readFlowEulerConfig },
};
