/**
 * Flow-DPM-Solver: diffusers' DPMSolverMultistepScheduler as Sana configures it (use_flow_sigmas,
 * flow_prediction, dpmsolver++, order 2, midpoint, final sigma 0): the schedule and coefficients in TypeScript,
 * the latent updates as tensor ops, all with diffusers' fp32 arithmetic. Spec: ../shared/design/sana-spec.md §4.2.
 *
 * Divergence on purpose: diffusers starts at the second occurrence of a repeated integer timestep (only
 * possible for ≥ 351 steps at flow_shift 3); this port simply counts steps from 0.
 */
import type { Backend } from '../backends/backend.js';
import { ConfigReader } from '../io/config.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Scheduler } from './schedulers.js';

const f = Math.fround;

export interface FlowDpmSolverConfig {
  numTrainTimesteps: number;
  flowShift: number;
  solverOrder: 1 | 2;
  solverType: 'midpoint' | 'heun';
  lowerOrderFinal: boolean;
  eulerAtFinal: boolean;
}

export function readFlowDpmSolverConfig(cfg: ConfigReader): FlowDpmSolverConfig {
  const cls = cfg.raw._class_name;
  if (cls !== undefined && cls !== 'DPMSolverMultistepScheduler') throw cfg.error('_class_name', '"DPMSolverMultistepScheduler"', cls);
  if (!cfg.bool('use_flow_sigmas', false)) throw cfg.error('use_flow_sigmas', 'true (Sana samples with flow sigmas)', cfg.raw.use_flow_sigmas);
  cfg.choice('prediction_type', ['flow_prediction'] as const);
  cfg.choice('algorithm_type', ['dpmsolver++'] as const, 'dpmsolver++');
  cfg.choice('final_sigmas_type', ['zero'] as const, 'zero');
  for (const k of ['thresholding', 'use_karras_sigmas', 'use_exponential_sigmas', 'use_beta_sigmas', 'use_lu_lambdas', 'use_dynamic_shifting'])
    if (cfg.bool(k, false)) throw cfg.error(k, 'false (not used by Sana; unsupported)', true);
  const order = cfg.int('solver_order', 2, 1);
  if (order > 2) throw cfg.error('solver_order', '1 or 2', order);
  // fields that exist in released files but do not act on the flow path
  cfg.ignore('beta_start', 'beta_end', 'beta_schedule', 'trained_betas', 'rescale_betas_zero_snr', 'lambda_min_clipped', 'variance_type',
    'timestep_spacing', 'steps_offset', 'dynamic_thresholding_ratio', 'sample_max_value', 'time_shift_type');
  return {
    numTrainTimesteps: cfg.int('num_train_timesteps', 1000, 1),
    flowShift: cfg.number('flow_shift', 1.0, (v) => Number.isFinite(v) && v > 0, 'a positive number'),
    solverOrder: order as 1 | 2,
    solverType: cfg.choice('solver_type', ['midpoint', 'heun'] as const, 'midpoint'),
    lowerOrderFinal: cfg.bool('lower_order_final', true),
    eulerAtFinal: cfg.bool('euler_at_final', false),
  };
}

/** numpy.linspace(start, stop, num) in float64. */
export function linspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  const out = Array.from({ length: num }, (_, i) => start + i * step);
  out[num - 1] = stop;
  return out;
}

export class FlowDpmSolver implements Scheduler {
  timesteps: number[] = [];
  sigmas = new Float32Array(0);
  private stepIndex = 0;
  private lowerOrderNums = 0;
  private history: Tensor[] = [];

  constructor(readonly config: FlowDpmSolverConfig) {}

  static fromFolder(dir: string, file = 'scheduler_config.json'): FlowDpmSolver {
    return new FlowDpmSolver(readFlowDpmSolverConfig(ConfigReader.load(dir, file)));
  }

  setTimesteps(n: number): void {
    const S = this.config.flowShift;
    const T = this.config.numTrainTimesteps;
    const s = linspace(1, 1 / T, n + 1).map((a) => {
      const x = 1 - a;
      return (S * x) / (1 + (S - 1) * x);
    });
    s.reverse();
    s.pop();
    this.timesteps = s.map((v) => Math.trunc(v * T)); // int64 cast truncates: what the model sees
    this.sigmas = Float32Array.from([...s, 0]);
    this.stepIndex = 0;
    this.lowerOrderNums = 0;
    this.release();
  }

  setBeginIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.timesteps.length) throw new Error(`begin index ${index} outside the ${this.timesteps.length} scheduled steps`);
    this.stepIndex = index;
  }

  release(): void {
    for (const t of this.history) t.dispose();
    this.history = [];
  }

  /** One update x_i → x_{i+1} from the (guided) velocity v_i; every operation rounded to fp32 as diffusers'
   * (each axpby term is a product rounded before the sum). */
  step(be: Backend, modelOutput: Tensor, sample: Tensor): Tensor {
    const i = this.stepIndex;
    const n = this.timesteps.length;
    if (i >= n) throw new Error(`FlowDpmSolver: step ${i} past the ${n} scheduled steps`);
    const sig = this.sigmas;
    const x0 = be.axpby(1, sample, -sig[i], modelOutput); // x0 = x − σ·v
    this.history.push(x0);
    if (this.history.length > 2) this.history.shift()!.dispose();

    const lowerFinal = i === n - 1; // final_sigmas_type "zero" makes the last step first order whatever the flags
    const lambda = (s: number) => f(f(Math.log(f(1 - s))) - f(Math.log(s)));
    const sigmaT = sig[i + 1];
    const alphaT = f(1 - sigmaT);
    const ratio = f(sigmaT / sig[i]);
    const h = f(lambda(sigmaT) - lambda(sig[i]));
    const coef = f(alphaT * f(f(Math.exp(-h)) - 1));
    let out: Tensor;
    if (this.config.solverOrder === 1 || this.lowerOrderNums < 1 || lowerFinal) {
      out = be.axpby(ratio, sample, -coef, x0); // (σ_t/σ_s)·x − α_t(e^{−h} − 1)·x0
    } else {
      const h0 = f(lambda(sig[i]) - lambda(sig[i - 1]));
      const r0 = f(h0 / h);
      const d1 = be.axpby(1, x0, -1, this.history[0]); // D1 = (x0 − x0_prev) / r0
      be.axpby(f(1 / r0), d1, 0, null, d1);
      out = be.axpby(ratio, sample, -coef, x0);
      const d1Coef = this.config.solverType === 'midpoint' ? -f(0.5 * coef) : f(alphaT * f(f(f(f(Math.exp(-h)) - 1) / h) + 1));
      be.axpby(1, out, d1Coef, d1, out);
      d1.dispose();
    }
    if (this.lowerOrderNums < this.config.solverOrder) this.lowerOrderNums++;
    this.stepIndex++;
    return out;
  }
}
