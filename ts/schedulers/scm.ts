/**
 * SCMScheduler (Sana-Sprint's TrigFlow consistency sampler) as diffusers runs it, fp32 in diffusers' order:
 * t ∈ [0, π/2], x_t = cos t·x0 + sin t·z with z ~ N(0, σ_d²); a step predicts x0 = cos s·x − sin s·F and
 * moves to the next time with fresh noise: x' = cos t·x0 + sin t·σ_d·ε. Formulas: ../shared/golden/README.md
 * (section Sprint).
 */
import type { Backend } from '../backends/backend.js';
import { SanaError } from '../errors.js';
import { ConfigReader } from '../io/config.js';
import type { Tensor } from '../tensor/tensor.js';

const f = Math.fround;

export interface ScmConfig {
  numTrainTimesteps: number;
  sigmaData: number;
}

/** Sana-Sprint's schedule defaults (SanaSprintPipeline.__call__). */
export const SPRINT_MAX_TIMESTEPS = 1.5708;
export const SPRINT_INTERMEDIATE_TIMESTEPS = 1.3;

export function readScmConfig(cfg: ConfigReader): ScmConfig {
  const cls = cfg.raw._class_name;
  if (cls !== undefined && cls !== 'SCMScheduler') throw cfg.error('_class_name', '"SCMScheduler"', cls);
  cfg.choice('prediction_type', ['trigflow'], 'trigflow');
  return {
    numTrainTimesteps: cfg.int('num_train_timesteps', 1000, 1),
    sigmaData: cfg.number('sigma_data', 0.5, (v) => Number.isFinite(v) && v > 0, 'a positive number'),
  };
}

export interface ScmScheduleOptions {
  /** an explicit schedule of steps + 1 times (the last is only the final step's target) */
  timesteps?: readonly number[];
  /** first time (default 1.5708, just above π/2 as upstream) */
  maxTimesteps?: number;
  /** the middle time of a 2-step schedule (default 1.3); only used for 2 steps (upstream fails otherwise) */
  intermediateTimesteps?: number | null;
}

/** torch.linspace in float32: the step and each value rounded to fp32, the second half counted back from the end. */
function linspaceF32(start: number, end: number, n: number): number[] {
  if (n === 1) return [f(start)];
  const step = f(f(f(end) - f(start)) / (n - 1));
  const half = Math.floor(n / 2);
  return Array.from({ length: n }, (_, i) => (i < half ? f(f(start) + f(step * i)) : f(f(end) - f(step * (n - 1 - i)))));
}

export class ScmScheduler {
  timesteps = new Float32Array(0);
  private stepIndex = 0;

  constructor(
    readonly config: ScmConfig,
    /** config keys this scheduler does not read (older Sprint configs carry DDIM-style ones) */
    readonly warnings: string[] = [],
  ) {}

  static fromFolder(dir: string, file = 'scheduler_config.json', overrides?: ConfigReader['raw']): ScmScheduler {
    const cfg = ConfigReader.load(dir, file, overrides);
    const config = readScmConfig(cfg);
    return new ScmScheduler(config, cfg.unusedKeys().map((k) => `scheduler: unknown config key ${k} ignored`));
  }

  /** The steps + 1 times: an explicit list, else [max, intermediate, 0] for 2 steps (intermediate not null),
   * else linspace(max, 0, steps + 1), in fp32 (SCMScheduler.set_timesteps). */
  setTimesteps(steps: number, opts: ScmScheduleOptions = {}): void {
    const bad = (what: string, option: string, v: unknown) => new SanaError('ERR_SANA_INVALID_OPTION', `Expected ${what} for ${option} but received ${JSON.stringify(v)}`);
    if (!Number.isInteger(steps) || steps < 1) throw bad('a positive integer', 'steps', steps);
    if (opts.timesteps !== undefined) {
      const t = opts.timesteps;
      if (t.length !== steps + 1 || !t.every((v) => Number.isFinite(v) && v >= 0 && v <= Math.PI / 2 + 1e-3))
        throw bad(`${steps + 1} times in [0, π/2] (steps + 1)`, 'timesteps', t);
      this.timesteps = Float32Array.from(t);
    } else {
      const max = opts.maxTimesteps ?? SPRINT_MAX_TIMESTEPS;
      if (!(Number.isFinite(max) && max > 0 && max <= Math.PI / 2 + 1e-3)) throw bad('a number in (0, π/2]', 'maxTimesteps', max);
      const mid = opts.intermediateTimesteps === undefined ? SPRINT_INTERMEDIATE_TIMESTEPS : opts.intermediateTimesteps;
      if (steps === 2 && mid !== null) {
        if (!(Number.isFinite(mid) && mid > 0 && mid < max)) throw bad(`a number in (0, ${max})`, 'intermediateTimesteps', mid);
        this.timesteps = Float32Array.from([max, mid, 0]);
      } else {
        this.timesteps = Float32Array.from(linspaceF32(max, 0, steps + 1));
      }
    }
    this.stepIndex = 0;
  }

  /** starts the schedule at step `index` (image-to-image), after setTimesteps */
  setBeginIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.steps) throw new Error(`begin index ${index} outside the ${this.steps} scheduled steps`);
    this.stepIndex = index;
  }

  /** Steps of the current schedule (one fewer than its times). */
  get steps(): number {
    return this.timesteps.length - 1;
  }

  /** One step from `sample` at times[i] with the model's TrigFlow output and this step's draw ε (standard
   * normal, host fp32): returns x0 and the next sample cos t·x0 + sin t·(ε·σ_d), new tensors. */
  step(be: Backend, modelOutput: Tensor, sample: Tensor, noise: Float32Array): { prev: Tensor; x0: Tensor } {
    const i = this.stepIndex;
    if (i >= this.steps) throw new Error(`ScmScheduler: step ${i} past the ${this.steps} scheduled steps`);
    const s = this.timesteps[i];
    const t = this.timesteps[i + 1];
    const sd = f(this.config.sigmaData);
    const x0 = be.axpby(f(Math.cos(s)), sample, -f(Math.sin(s)), modelOutput);
    const scaled = noise.map((v) => v * sd);
    let z: Tensor | null = null;
    try {
      z = be.tensor([...sample.shape], 'f32', scaled);
      const prev = be.axpby(f(Math.cos(t)), x0, f(Math.sin(t)), z);
      this.stepIndex++;
      return { prev, x0 };
    } catch (e) {
      x0.dispose();
      throw e;
    } finally {
      z?.dispose();
    }
  }
}
