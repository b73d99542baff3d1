/**
 * Sana-Sprint's sampling loop (diffusers' SanaSprintPipeline.__call__, fp32 in its order): latents scaled by
 * σ_d, per step the TrigFlow time t mapped to flow time s = sin t / (cos t + sin t), the transformer called
 * once on (x/σ_d)·√(s² + (1−s)²) with timestep s and the embedded guidance, its flow output converted back to
 * TrigFlow, then the SCM step with this step's fresh noise. Formulas: ../shared/golden/README.md, section Sprint.
 */
import { throwIfNonFinite } from '../backends/backend.js';
import type { SanaTransformer2DModel, TextConditioning } from '../models/sana-transformer.js';
import type { ScmScheduler } from '../schedulers/scm.js';
import type { Tensor } from '../tensor/tensor.js';
import { randn, type TorchGenerator } from './torch-random.js';

const f = Math.fround;

export interface SprintStep {
  index: number;
  /** TrigFlow time of this step and the flow time s the transformer sees */
  time: number;
  flowTime: number;
  /** the transformer's input, its raw output, the converted TrigFlow output fed to the scheduler */
  hiddenStates: Float32Array;
  transformerOutput: Float32Array;
  modelOutput: Float32Array;
  /** this step's standard-normal draw (before ·σ_d), x0, and the sample after the step */
  noise: Float32Array;
  denoised: Float32Array;
  latents: Float32Array;
}

/** The embedded guidance value: torch.full([1], g, float32) · guidance_embeds_scale, a float32 product. */
export function sprintGuidance(scale: number, embedsScale: number): number {
  return f(f(scale) * f(embedsScale));
}

/** One generation from the scheduler's sample at step `begin` (text-to-image: latents·σ_d at step 0), with
 * generators one per row or one for the batch. */
export class SprintRun {
  private x: Tensor;
  private x0: Tensor | null = null;
  private readonly timeFeatures: Tensor;
  private readonly guidanceFeatures: Tensor | undefined;
  private index: number;
  private readonly sd: number;

  constructor(
    private readonly transformer: SanaTransformer2DModel,
    private readonly scheduler: ScmScheduler,
    sample: Float32Array,
    private readonly shape: readonly [number, number, number, number],
    private readonly text: TextConditioning,
    private readonly generators: TorchGenerator[],
    guidance: number,
    private readonly begin = 0,
  ) {
    const be = transformer.backend;
    const B = shape[0];
    this.sd = f(scheduler.config.sigmaData);
    this.index = begin;
    scheduler.setBeginIndex(begin);
    const times = scheduler.timesteps;
    const flow = Array.from({ length: (scheduler.steps - begin) * B }, (_, k) => flowTime(times[begin + Math.floor(k / B)]));
    this.timeFeatures = transformer.timestepFeatures(flow);
    const tensors: Tensor[] = [this.timeFeatures];
    try {
      if (transformer.config.guidanceEmbeds) {
        this.guidanceFeatures = transformer.timestepFeatures(new Array(B).fill(sprintGuidance(guidance, transformer.config.guidanceEmbedsScale)));
        tensors.push(this.guidanceFeatures);
      }
      this.x = be.tensor([...shape], 'f32', sample);
    } catch (e) {
      tensors.forEach((t) => t.dispose());
      throw e;
    }
  }

  /** The scheduler's initial sample (latents · σ_d), read back. */
  initialSample(): Float32Array {
    return this.x.toFloat32();
  }

  step(onStep?: (s: SprintStep) => void): void {
    const be = this.transformer.backend;
    const B = this.shape[0];
    const i = this.index;
    const t = this.scheduler.timesteps[i];
    const s = flowTime(t);
    const norm = f(Math.sqrt(f(f(s * s) + f(f(1 - s) * f(1 - s)))));
    const temp: Tensor[] = [];
    const keep = <T extends Tensor>(x: T): T => (temp.push(x), x);
    try {
      const hidden = keep(be.axpby(f(norm / this.sd), this.x, 0, null));
      const F = keep(this.transformer.forwardTensor(hidden, {
        text: this.text, timestep: this.timeFeatures.slice((i - this.begin) * B * 256, [B, 256]), guidance: this.guidanceFeatures,
      }));
      throwIfNonFinite(be, F, 'SanaTransformer2DModel produced non-finite values (NaN or Infinity) in its output: the weights or inputs hold NaN/Inf');
      // ((1 − 2s)·hidden + (1 − 2s + 2s²)·F) / √(s² + (1−s)²), then ·σ_d
      const a = f(1 - f(2 * s));
      const b = f(a + f(2 * f(s * s)));
      const mixed = keep(be.axpby(a, hidden, b, F));
      const modelOutput = keep(be.axpby(f(this.sd / norm), mixed, 0, null));
      const noise = drawNormal(this.generators, this.shape);
      const { prev, x0 } = this.scheduler.step(be, modelOutput, this.x, noise);
      this.x.dispose();
      this.x0?.dispose();
      this.x = prev;
      this.x0 = x0;
      this.index++;
      onStep?.({
        index: i, time: t, flowTime: s, hiddenStates: hidden.toFloat32(), transformerOutput: F.toFloat32(), modelOutput: modelOutput.toFloat32(),
        noise, denoised: x0.toFloat32(), latents: prev.toFloat32(),
      });
    } finally {
      for (const x of temp) x.dispose();
    }
  }

  /** Final latents: the last step's x0 / σ_d (not its noised sample), read back. */
  latents(): Float32Array {
    if (!this.x0) throw new Error('SprintRun: no step has run');
    return this.x0.toFloat32().map((v) => v / this.sd);
  }

  dispose(): void {
    this.x.dispose();
    this.x0?.dispose();
    this.timeFeatures.dispose();
    this.guidanceFeatures?.dispose();
  }
}

/** One standard-normal draw of `shape` [B, …] (diffusers' randn_tensor): from one generator, or row b from
 * generators[b]. */
export function drawNormal(generators: TorchGenerator[], shape: readonly number[]): Float32Array {
  const count = shape.reduce((a, b) => a * b, 1);
  if (generators.length === 1) return randn(generators[0], count, 'float32') as Float32Array;
  if (generators.length !== shape[0]) throw new Error(`${generators.length} generators for a batch of ${shape[0]}`);
  const per = count / shape[0];
  const out = new Float32Array(count);
  generators.forEach((g, r) => out.set(randn(g, per, 'float32'), r * per));
  return out;
}

/** Text-to-image's first sample: latents·σ_d (the scheduler works on TrigFlow samples of std σ_d). */
export function sprintSample(latents: Float32Array, scheduler: ScmScheduler): Float32Array {
  const sd = f(scheduler.config.sigmaData);
  return latents.map((v) => v * sd);
}

/** Image-to-image's first sample at TrigFlow time t: cos t·(x0·σ_d) + sin t·(ε·σ_d), x0 the scaled image
 * latents (SanaSprintImg2ImgPipeline.prepare_latents). */
export function sprintImageSample(x0: Float32Array, noise: Float32Array, t: number, scheduler: ScmScheduler): Float32Array {
  const sd = f(scheduler.config.sigmaData);
  const c = f(Math.cos(t));
  const s = f(Math.sin(t));
  return x0.map((v, i) => f(c * f(v * sd)) + f(s * f(noise[i] * sd)));
}

/** s = sin t / (cos t + sin t) in fp32. */
export function flowTime(t: number): number {
  const sin = f(Math.sin(t));
  return f(sin / f(f(Math.cos(t)) + sin));
}
