/**
 * The SanaPipeline computation in the current thread (the public SanaPipeline runs it in a worker): prompt
 * encoding (tokenizer, CHI, right padding, the "first + last N−1" token selection), the classifier-free-guided
 * denoising loop, decoding and image output — diffusers' order and fp32 arithmetic (sana-spec.md §5).
 * Its lower steps (encodeTokenIds, denoise, decodeLatents) are public for tests and advanced use.
 */
import { totalmem } from 'node:os';
import { join } from 'node:path';

import type { Tokenizer } from '@huggingface/tokenizers';

import { throwIfNonFinite, type Backend, type BackendInfo, type BackendMemory, type BackendName } from '../backends/backend.js';
import { createBackend } from '../backends/registry.js';
import { describeValue, SanaError } from '../errors.js';
import { entryKind } from '../io/files.js';
import { checkTiling, type TilingOptions } from '../models/dcae-tiling.js';
import { estimateDecodeBytes, runShardTask, shardedDecode } from '../models/dcae-sharded.js';
import type { LoadedLora } from '../models/lora.js';
import type { SanaTransformer2DModel, TextConditioning } from '../models/sana-transformer.js';
import type { LoadOptions } from '../models/params.js';
import { checkPrecision, type PrecisionChoice, type PrecisionDecision } from '../models/precision.js';
import { FlowDpmSolver } from '../schedulers/flow-dpm-solver.js';
import { FlowEuler } from '../schedulers/flow-euler.js';
import type { Scheduler } from '../schedulers/schedulers.js';
import { ScmScheduler, type ScmScheduleOptions } from '../schedulers/scm.js';
import type { Tensor } from '../tensor/tensor.js';
import { loadSanaComponents, type SanaComponents } from './components.js';
import { GeneratedImage } from './image.js';
import { denormalizeToNhwc, resizeAndCrop, toUint8 } from './postprocess.js';
import { aspectRatioBins, classifyHeightWidthBin, hasAspectRatioBins } from './resolution.js';
import { drawNormal, sprintImageSample, sprintSample, SprintRun, type SprintStep } from './sprint.js';
import { imageToVaeInput, type ImageInput } from './image-input.js';
import { TorchGenerator } from './torch-random.js';
import { loadTokenizer, tokenizeNegative, tokenizePrompts } from './prompt.js';

/** Text conditioning for a batch: embeddings [batch, length, hidden] and the 0/1 mask [batch, length]. */
export interface PromptEncoding {
  embeds: Float32Array;
  mask: number[];
  batch: number;
  length: number;
}

export type BackendChoice = 'auto' | BackendName;
export type ComponentBackends = { textEncoder?: BackendChoice; transformer?: BackendChoice; vae?: BackendChoice };

export interface CoreLoadOptions extends LoadOptions {
  backend?: BackendChoice | ComponentBackends | Backend;
  threads?: number;
  onProgress?: (e: ProgressEvent) => void;
}

export type ProgressEvent =
  | { status: 'load'; component: string; loaded: number; total: number }
  | { status: 'encode' }
  | { status: 'step'; step: number; totalSteps: number; stepMs: number }
  /** the decode mode in use and why (auto says what it chose) */
  | { status: 'decode'; mode: DecodeMode; reason: string }
  /** sharded decoding: pass `index` (0-based) of `count` starts */
  | { status: 'decode-pass'; index: number; count: number; label: string }
  | { status: 'done'; timings: Timings }
  | { status: 'warning'; message: string };

export interface Timings {
  encodeMs: number;
  stepMs: number[];
  decodeMs: number;
  totalMs: number;
}

export type DecodeMode = 'full' | 'tiled' | 'sharded';

export interface GenerateOptions {
  /** how the DC-AE decodes: 'full' (one piece), 'tiled' (diffusers' tiling: bounded memory, blended seams),
   * 'sharded' (exact, bounded memory: docs/sharded-decode.md) or 'auto' (default: full when its estimated
   * memory fits decodeMemoryBudget, else sharded; the 'decode' progress event says which and why) */
  decode?: 'auto' | DecodeMode;
  /** tiled mode: tile and stride in pixels (default diffusers' 512/448; 1024/896, the Sana model zoo's choice, from 4096 px) */
  tiling?: Partial<TilingOptions>;
  /** bytes the decode may use in 'auto' mode and per shard task in 'sharded' mode (default: a quarter of the machine's memory) */
  decodeMemoryBudget?: number;
  negativePrompt?: string;
  /** requested output size in pixels (default: the transformer's sample_size × 32) */
  width?: number;
  height?: number;
  /** denoising steps (default 20; Sana-Sprint 2) */
  steps?: number;
  /** classifier-free guidance is on iff > 1 (default 4.5); Sana-Sprint: the embedded guidance (default 4.5) */
  guidanceScale?: number;
  /** Sana-Sprint's schedule: first TrigFlow time (default 1.5708), the middle time of a 2-step schedule
   * (default 1.3; null: evenly spaced; other step counts never use it), or an explicit list of steps + 1 times */
  maxTimesteps?: number;
  intermediateTimesteps?: number | null;
  timesteps?: number[];
  /** 'fp32' runs this generation in fp32 arithmetic on whatever weights are loaded; 'bf16' needs a pipeline
   * loaded in bf16; 'auto' (default): the precision chosen at load (SanaPipeline.precision) */
  precision?: PrecisionChoice;
  /** torch.Generator('cpu').manual_seed(seed) latents (a list: one generator per image); default: a random
   * seed (reported in the result). Sana-Sprint draws each step's noise from the same generator(s). */
  seed?: number | bigint | (number | bigint)[];
  /** initial latents [B·numImagesPerPrompt, C, h, w] instead of a seed */
  latents?: Float32Array;
  /** image-to-image: the start image (a PNG/JPEG path or bytes, or RGB(A) pixels), resized and centre-cropped
   * to the generated size, encoded by the VAE and noised to the first kept step (docs/img2img.md) */
  image?: ImageInput;
  /** image-to-image: how much of the schedule runs, in (0, 1] (default 0.6): 1 starts from pure noise */
  strength?: number;
  numImagesPerPrompt?: number;
  /** the sampler (default: the folder's scheduler); the other one runs on the folder's shift (SanaPipeline only) */
  scheduler?: 'flow-dpm-solver' | 'flow-euler';
  maxSequenceLength?: number;
  /** the complex human instruction lines; null disables it (default: diffusers' 8 lines) */
  complexHumanInstruction?: readonly string[] | null;
  useResolutionBinning?: boolean;
  outputType?: 'image' | 'latent' | 'float';
  /** checked between steps (an AbortSignal, or anything with an `aborted` flag) */
  signal?: { readonly aborted: boolean };
  onProgress?: (e: ProgressEvent) => void;
}

export interface GenerateResult {
  images: GeneratedImage[];
  /** final latents [B, C, h, w] (outputType 'latent'), or the decoded float image NCHW in [0, 1] ('float') */
  tensor?: { data: Float32Array; shape: number[] };
  seed: bigint | bigint[] | null;
  /** the size generated at (after resolution binning) and the output size */
  generatedSize: { width: number; height: number };
  timings: Timings;
}

/** A change to the transformer's LoRA adapters (SanaPipelineCore.lora). */
export type LoraAction =
  | { action: 'load'; path: string; name?: string; scale?: number }
  | { action: 'scale'; name: string; scale: number }
  | { action: 'unload'; name: string };

export type PipelineMemory = (BackendMemory & { backend: BackendName; components: ('textEncoder' | 'transformer' | 'vae')[] })[];

export interface DecodePlan {
  mode: DecodeMode;
  reason: string;
  tiling?: TilingOptions;
  shardBytes?: number;
}

export interface DenoiseStep {
  index: number;
  timestep: number;
  /** raw transformer output for the model batch ([uncond; cond] with guidance) */
  modelOutput: Float32Array;
  /** latents after the scheduler step */
  latents: Float32Array;
}

const f = Math.fround;

export class SanaPipelineCore {
  private constructor(
    readonly components: SanaComponents,
    private readonly owned: Backend[],
    /** tokenizer/tokenizer.json, when the folder ships one */
    readonly tokenizer: Tokenizer | null,
  ) {}

  get warnings(): string[] {
    return this.components.warnings;
  }

  /**
   * Loads a diffusers-layout Sana folder (model_index.json + component folders). `backend`: a name (the
   * pipeline creates and owns it), one name per component, or a Backend instance (shared, not disposed).
   */
  static async fromPretrained(dir: string, opts: CoreLoadOptions = {}): Promise<SanaPipelineCore> {
    if (opts.precision !== undefined) checkPrecision(opts.precision);
    const owned = new Map<string, Backend>();
    const pick = async (component: 'textEncoder' | 'transformer' | 'vae'): Promise<Backend> => {
      const b = opts.backend;
      if (b !== undefined && typeof b === 'object' && 'linear' in b) return b as Backend;
      const name = (typeof b === 'object' ? (b as ComponentBackends)[component] : b) ?? 'auto';
      if (!owned.has(name)) owned.set(name, await createBackend(name, { threads: opts.threads }));
      return owned.get(name)!;
    };
    try {
      const backends = { textEncoder: await pick('textEncoder'), transformer: await pick('transformer'), vae: await pick('vae') };
      const tokenizerDir = join(dir, 'tokenizer');
      const tokenizer = entryKind(join(tokenizerDir, 'tokenizer.json'), 'tokenizer/tokenizer.json') === 'missing' ? null : loadTokenizer(tokenizerDir);
      return new SanaPipelineCore(loadSanaComponents(dir, backends, opts), [...owned.values()], tokenizer);
    } catch (e) {
      for (const b of owned.values()) b.dispose();
      throw e;
    }
  }

  /** Which backend (and kernel variant) runs each component, and why (the registry's selection). */
  get backendInfo(): Record<'textEncoder' | 'transformer' | 'vae', BackendInfo> {
    const c = this.components;
    return { textEncoder: c.textEncoder.backend.info, transformer: c.transformer.backend.info, vae: c.vae.backend.info };
  }

  /** The precision each component runs in, and why (ts/models/precision.ts). */
  get precision(): Record<'textEncoder' | 'transformer' | 'vae', PrecisionDecision> {
    const c = this.components;
    return { textEncoder: c.textEncoder.precision, transformer: c.transformer.precision, vae: c.vae.precision };
  }

  /** Tensor memory of each backend in use (weights and live activations), with the components it runs. */
  memory(): PipelineMemory {
    const c = this.components;
    const byBackend = new Map<Backend, PipelineMemory[number]>();
    for (const [component, model] of [['textEncoder', c.textEncoder], ['transformer', c.transformer], ['vae', c.vae]] as const) {
      const entry = byBackend.get(model.backend) ?? { backend: model.backend.name, components: [], ...model.backend.memory() };
      entry.components.push(component);
      byBackend.set(model.backend, entry);
    }
    return [...byBackend.values()];
  }

  dispose(): void {
    this.components.dispose();
    for (const b of this.owned) b.dispose();
  }

  /** The transformer's LoRA adapters, in load order (docs/lora.md). */
  get loras(): LoadedLora[] {
    return this.components.transformer.lora.loaded;
  }

  /** Loads an adapter (returns its name), changes its scale, or unloads it; the weights are re-merged at once. */
  lora(a: LoraAction): string {
    const set = this.components.transformer.lora;
    if (a.action === 'load') return set.load(a.path, { name: a.name, scale: a.scale });
    if (a.action === 'scale') set.setScale(a.name, a.scale);
    else set.unload(a.name);
    return a.name;
  }

  /**
   * Encodes token ids (BOS included, unpadded) like `_get_gemma_prompt_embeds`: right-pad with `padTokenId`
   * or truncate to `maxLength`, run the text encoder, then keep the positions of `selectIndex` (negative
   * values count from the end; the positive prompt keeps [0, −(N−1) … −1], the negative prompt all).
   */
  encodeTokenIds(ids: number[][], opts: { maxLength: number; padTokenId: number; selectIndex?: number[] }): PromptEncoding {
    const B = ids.length;
    const L = opts.maxLength;
    if (!Number.isInteger(L) || L < 1) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a positive integer for maxLength but received ${L}`);
    const flat: number[] = [];
    const mask: number[] = [];
    for (const seq of ids) {
      for (let i = 0; i < L; i++) {
        flat.push(i < seq.length ? seq[i] : opts.padTokenId);
        mask.push(i < seq.length ? 1 : 0);
      }
    }
    const hidden = this.components.textEncoder.forward(flat, mask, B, L);
    const D = this.components.textEncoder.config.hiddenSize;
    const select = (opts.selectIndex ?? Array.from({ length: L }, (_, i) => i)).map((i) => (i < 0 ? L + i : i));
    if (select.some((i) => i < 0 || i >= L)) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected indices within ${L} tokens for selectIndex but received ${JSON.stringify(opts.selectIndex)}`);
    const N = select.length;
    const embeds = new Float32Array(B * N * D);
    const outMask: number[] = [];
    for (let b = 0; b < B; b++)
      select.forEach((src, j) => {
        embeds.set(hidden.subarray((b * L + src) * D, (b * L + src + 1) * D), (b * N + j) * D);
        outMask.push(mask[b * L + src]);
      });
    return { embeds, mask: outMask, batch: B, length: N };
  }

  /** Text conditioning for prompts (and the negative prompt when guidance is on), as SanaPipeline.encode_prompt. */
  encodePrompt(prompts: string[], opts: { negativePrompt?: string; guidance: boolean; maxSequenceLength?: number; complexHumanInstruction?: readonly string[] | null }): { cond: PromptEncoding; uncond: PromptEncoding | null } {
    if (!this.tokenizer) throw new SanaError('ERR_SANA_MODEL_FORMAT', 'this pipeline folder has no tokenizer/tokenizer.json: pass token ids to encodeTokenIds instead');
    const t = tokenizePrompts(this.tokenizer, prompts, opts);
    const cond = this.encodeTokenIds(t.ids, { maxLength: t.maxLength, padTokenId: t.padTokenId, selectIndex: t.selectIndex });
    if (!opts.guidance) return { cond, uncond: null };
    const n = tokenizeNegative(this.tokenizer, prompts.map(() => opts.negativePrompt ?? ''), opts.maxSequenceLength ?? 300);
    return { cond, uncond: this.encodeTokenIds(n.ids, { maxLength: n.maxLength, padTokenId: n.padTokenId }) };
  }

  /** Repeats every row `n` times in place of one (num_images_per_prompt). */
  static repeatRows(p: PromptEncoding, n: number): PromptEncoding {
    if (n === 1) return p;
    const row = p.embeds.length / p.batch;
    const embeds = new Float32Array(p.embeds.length * n);
    const mask: number[] = [];
    for (let b = 0; b < p.batch; b++)
      for (let k = 0; k < n; k++) {
        embeds.set(p.embeds.subarray(b * row, (b + 1) * row), (b * n + k) * row);
        mask.push(...p.mask.slice(b * p.length, (b + 1) * p.length));
      }
    return { embeds, mask, batch: p.batch * n, length: p.length };
  }

  /**
   * The denoising loop from initial latents [B, C, h, w]. Guidance is active iff guidanceScale > 1: the model
   * batch is [uncond; cond] and v = v_uncond + g·(v_cond − v_uncond), all fp32.
   */
  denoise(latents: Float32Array, shape: readonly [number, number, number, number], cond: PromptEncoding, uncond: PromptEncoding | null,
    opts: { steps: number; guidanceScale: number; onStep?: (s: DenoiseStep) => void }): Float32Array {
    const scheduler = this.components.scheduler;
    if (scheduler instanceof ScmScheduler) throw new SanaError('ERR_SANA_UNSUPPORTED', 'denoise: this is a SanaSprintPipeline folder; use sprintDenoise');
    const text = this.prepareText(shape[0], cond, uncond, opts.guidanceScale > 1);
    let run: DenoiseRun | null = null;
    try {
      run = new DenoiseRun(this.components.transformer, latents, shape, text, { ...opts, scheduler });
      for (let i = 0; i < opts.steps; i++) run.step(opts.onStep);
      return run.latents();
    } finally {
      run?.dispose();
      text.dispose();
    }
  }

  /**
   * Sana-Sprint's loop from initial latents [B, C, h, w] (unscaled): the SCM schedule of `schedule`, guidance
   * embedded (no CFG batch), each step's noise drawn from `generators` (one, or one per row). Returns the last
   * step's x0 / σ_d.
   */
  sprintDenoise(latents: Float32Array, shape: readonly [number, number, number, number], cond: PromptEncoding,
    opts: { steps: number; guidanceScale: number; schedule?: ScmScheduleOptions; generators: TorchGenerator[]; onStart?: (initialSample: Float32Array) => void; onStep?: (s: SprintStep) => void }): Float32Array {
    const scheduler = this.components.scheduler;
    if (!(scheduler instanceof ScmScheduler)) throw new SanaError('ERR_SANA_UNSUPPORTED', 'sprintDenoise: this is a SanaPipeline folder; use denoise');
    scheduler.setTimesteps(opts.steps, opts.schedule);
    const text = this.prepareText(shape[0], cond, null, false);
    let run: SprintRun | null = null;
    try {
      run = new SprintRun(this.components.transformer, scheduler, sprintSample(latents, scheduler), shape, text, opts.generators, opts.guidanceScale);
      opts.onStart?.(run.initialSample());
      for (let i = 0; i < opts.steps; i++) run.step(opts.onStep);
      return run.latents();
    } finally {
      run?.dispose();
      text.dispose();
    }
  }

  /** The transformer's text conditioning of the model batch: [uncond; cond] with classifier-free guidance,
   * else cond. Made once per generation; the caller disposes it. */
  private prepareText(B: number, cond: PromptEncoding, uncond: PromptEncoding | null, cfg: boolean): TextConditioning {
    if (cond.batch !== B) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected ${B} prompt rows for the latents' batch but received ${cond.batch}`);
    if (cfg && (!uncond || uncond.batch !== B || uncond.length !== cond.length))
      throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected ${B} negative prompt rows of length ${cond.length} with guidance but received ${uncond ? `${uncond.batch} of ${uncond.length}` : 'none'}`);
    const text = cfg ? concat(uncond!.embeds, cond.embeds) : cond.embeds;
    const mask = cfg ? [...uncond!.mask, ...cond.mask] : cond.mask;
    return this.components.transformer.prepareText(text, cond.length, mask, cfg ? 2 * B : B);
  }

  /** Text → images, as SanaPipeline.__call__ (spec §5): binning, latents, CFG loop, decode, resize, uint8. */
  async generate(prompt: string | string[], opts: GenerateOptions = {}): Promise<GenerateResult> {
    const choice = opts.precision === undefined ? 'auto' : checkPrecision(opts.precision);
    const restore: (() => void)[] = [];
    try {
      if (choice !== 'auto') for (const m of [this.components.textEncoder, this.components.transformer]) restore.push(m.overridePrecision(choice));
      return await this.generateIn(prompt, opts);
    } finally {
      for (const r of restore) r();
    }
  }

  private async generateIn(prompt: string | string[], opts: GenerateOptions): Promise<GenerateResult> {
    const t0 = performance.now();
    const o = this.validate(prompt, opts);
    const progress = opts.onProgress ?? (() => {});
    const abortIfAsked = () => {
      if (opts.signal?.aborted) throw new SanaError('ERR_SANA_ABORTED', 'generation was aborted');
    };
    abortIfAsked();
    progress({ status: 'encode' });
    const cfg = o.scheduler instanceof ScmScheduler ? false : o.guidance > 1;
    const { cond, uncond } = this.encodePrompt(o.prompts, {
      negativePrompt: opts.negativePrompt ?? '', guidance: cfg, maxSequenceLength: o.maxSequenceLength,
      complexHumanInstruction: opts.complexHumanInstruction,
    });
    const n = o.numImages;
    const condN = SanaPipelineCore.repeatRows(cond, n);
    const uncondN = uncond ? SanaPipelineCore.repeatRows(uncond, n) : null;
    const promptMs = performance.now() - t0;
    if (o.genWidth !== o.width || o.genHeight !== o.height)
      progress({ status: 'warning', message: `resolution binning: generating at ${o.genWidth}x${o.genHeight} (the nearest aspect-ratio bin) for the requested ${o.width}x${o.height}, then resizing and cropping` });
    const C = this.components.transformer.config.inChannels;
    const B = o.prompts.length * n;
    const f = this.components.vae.spatialCompression;
    const shape = [B, C, o.genHeight / f, o.genWidth / f] as const;
    const count = B * C * shape[2] * shape[3];
    const plan = o.outputType === 'latent' ? null : this.planDecode(shape[2], shape[3], opts); // bad decode options fail before the steps
    const generators = o.seed === null ? [] : (Array.isArray(o.seed) ? o.seed : [o.seed]).map((s) => new TorchGenerator(s));
    let latents: Float32Array;
    if (opts.latents) {
      if (opts.latents.length !== count) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected ${count} values ([${shape.join(', ')}]) for latents but received ${opts.latents.length}`);
      latents = Float32Array.from(opts.latents);
    } else {
      latents = drawNormal(generators, shape); // a list: each image from its own generator (randn_tensor)
    }
    const tImage = performance.now();
    const start = o.image ? this.imageStart(o.image, latents, shape, o.steps, o.scheduler, progress) : null;
    const encodeMs = promptMs + (performance.now() - tImage);
    const begin = start?.begin ?? 0;
    const stepMs: number[] = [];
    let last = performance.now();
    const text = this.prepareText(shape[0], condN, uncondN, cfg);
    let run: DenoiseRun | SprintRun | null = null;
    try {
      if (o.scheduler instanceof ScmScheduler)
        run = new SprintRun(this.components.transformer, o.scheduler, start?.sample ?? sprintSample(latents, o.scheduler), shape, text, generators, o.guidance, begin);
      else run = new DenoiseRun(this.components.transformer, start?.sample ?? latents, shape, text, { steps: o.steps, guidanceScale: o.guidance, scheduler: o.scheduler, begin });
      const todo = o.steps - begin;
      for (let i = 0; i < todo; i++) {
        // steps run one per macrotask so an AbortSignal (or anything else) can be handled in between
        await new Promise((r) => setImmediate(r));
        abortIfAsked();
        run.step();
        const now = performance.now();
        stepMs.push(now - last);
        last = now;
        progress({ status: 'step', step: i + 1, totalSteps: todo, stepMs: stepMs[i] });
      }
      latents = run.latents();
    } finally {
      run?.dispose();
      text.dispose();
    }
    abortIfAsked();
    if (plan) progress({ status: 'decode', mode: plan.mode, reason: plan.reason });
    const tDecode = performance.now();
    const result: GenerateResult = { images: [], seed: o.seed, generatedSize: { width: o.genWidth, height: o.genHeight }, timings: { encodeMs, stepMs, decodeMs: 0, totalMs: 0 } };
    if (o.outputType === 'latent') {
      result.tensor = { data: latents, shape: [...shape] };
    } else {
      const decoded = await this.decodeLatents(latents, shape, plan!, progress);
      let img = decoded;
      let imgShape = [B, 3, shape[2] * f, shape[3] * f];
      if (o.height !== imgShape[2] || o.width !== imgShape[3]) {
        img = resizeAndCrop(decoded, imgShape, o.height, o.width);
        imgShape = [B, 3, o.height, o.width];
      }
      const nhwc = denormalizeToNhwc(img, imgShape);
      if (o.outputType === 'float') result.tensor = { data: img.map((v) => Math.min(1, Math.max(0, v * 0.5 + 0.5))), shape: imgShape };
      else {
        const u8 = toUint8(nhwc);
        const per = o.width * o.height * 3;
        for (let b = 0; b < B; b++) result.images.push(new GeneratedImage(o.width, o.height, new Uint8ClampedArray(u8.buffer, b * per, per)));
      }
    }
    result.timings.decodeMs = performance.now() - tDecode;
    result.timings.totalMs = performance.now() - t0;
    progress({ status: 'done', timings: result.timings });
    return result;
  }

  private validate(prompt: string | string[], opts: GenerateOptions) {
    const bad = (what: string, option: string, value: unknown) =>
      new SanaError('ERR_SANA_INVALID_OPTION', `Expected ${what} for ${option} but received ${describeValue(value)}`);
    const prompts = typeof prompt === 'string' ? [prompt] : prompt;
    if (!Array.isArray(prompts) || prompts.length === 0 || !prompts.every((p) => typeof p === 'string'))
      throw bad('a string or a non-empty array of strings', 'prompt', prompt);
    const tc = this.components.transformer.config;
    // diffusers: default_sample_size · vae_scale_factor (1024 for the released models)
    const dflt = tc.sampleSize * this.components.vae.spatialCompression;
    const int = (v: unknown, option: string, min: number, max: number) => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw bad(`an integer from ${min} to ${max}`, option, v);
      return v;
    };
    const width = int(opts.width ?? dflt, 'width', 32, 8192);
    const height = int(opts.height ?? dflt, 'height', 32, 8192);
    const sprint = this.components.pipelineClass === 'SanaSprintPipeline';
    const steps = int(opts.steps ?? (sprint ? 2 : 20), 'steps', 1, 1000);
    const numImages = int(opts.numImagesPerPrompt ?? 1, 'numImagesPerPrompt', 1, 64);
    const maxSequenceLength = int(opts.maxSequenceLength ?? 300, 'maxSequenceLength', 2, 4096);
    const guidance = opts.guidanceScale ?? 4.5;
    if (typeof guidance !== 'number' || !Number.isFinite(guidance) || guidance < 0) throw bad('a finite number >= 0', 'guidanceScale', guidance);
    const outputType = opts.outputType ?? 'image';
    if (!['image', 'latent', 'float'].includes(outputType)) throw bad('one of image, latent, float', 'outputType', outputType);
    const schedulerName = opts.scheduler;
    if (schedulerName !== undefined && schedulerName !== 'flow-dpm-solver' && schedulerName !== 'flow-euler') throw bad('flow-dpm-solver or flow-euler', 'scheduler', schedulerName);
    const oneSeed = (s: unknown): bigint => {
      if ((typeof s !== 'number' && typeof s !== 'bigint') || (typeof s === 'number' && !Number.isSafeInteger(s)) || BigInt(s) < 0n || BigInt(s) >= 1n << 64n)
        throw bad('an integer from 0 to 2^64 − 1', 'seed', s);
      return BigInt(s);
    };
    let seed: bigint | bigint[] | null = null;
    if (opts.latents === undefined || sprint) {  // Sprint's steps draw noise: a generator even for given latents
      const s = opts.seed ?? BigInt(Math.floor(Math.random() * 2 ** 32));
      if (Array.isArray(s)) {
        if (s.length !== prompts.length * numImages) throw bad(`${prompts.length * numImages} seeds (one per image)`, 'seed', s);
        seed = s.map(oneSeed);
      } else seed = oneSeed(s);
    }
    if (opts.latents !== undefined && !(opts.latents instanceof Float32Array)) throw bad('a Float32Array', 'latents', opts.latents);
    // diffusers always bins by default and raises for a sample_size without a table; here such models (the demo
    // model) default to their exact size, while an explicit useResolutionBinning: true still raises
    const binning = opts.useResolutionBinning ?? hasAspectRatioBins(tc.sampleSize);
    let genWidth = width;
    let genHeight = height;
    if (binning) {
      const bin = classifyHeightWidthBin(height, width, aspectRatioBins(tc.sampleSize).bins);
      genWidth = bin.width;
      genHeight = bin.height;
    } else {
      const f = this.components.vae.spatialCompression;
      if (width % f || height % f)
        throw bad(`multiples of ${f} (the VAE's compression) with useResolutionBinning false`, 'width, height', `${width}x${height}`);
    }
    if (opts.strength !== undefined && opts.image === undefined) throw bad('an image with strength (image-to-image)', 'image', undefined);
    const strength = opts.strength ?? 0.6;
    if (opts.image !== undefined) {
      if (typeof strength !== 'number' || !(strength > 0 && strength <= 1)) throw bad('a number in (0, 1]', 'strength', strength);
      if (opts.latents !== undefined) throw bad('no latents with an image (image-to-image makes its own start)', 'latents', '(given)');
    }
    const schedule: ScmScheduleOptions = { maxTimesteps: opts.maxTimesteps, intermediateTimesteps: opts.intermediateTimesteps, timesteps: opts.timesteps };
    if (sprint) {
      if (schedulerName !== undefined) throw bad(`no scheduler (a SanaSprintPipeline samples with its SCMScheduler)`, 'scheduler', schedulerName);
      if (opts.negativePrompt) throw bad('no negative prompt (Sana-Sprint has no classifier-free guidance)', 'negativePrompt', opts.negativePrompt);
      (this.components.scheduler as ScmScheduler).setTimesteps(steps, schedule); // bad schedules fail before any work
    } else {
      for (const [k, v] of Object.entries(schedule))
        if (v !== undefined) throw bad(`no ${k} (a Sana-Sprint schedule option; this folder is a SanaPipeline)`, k, v);
    }
    const scheduler = sprint ? this.components.scheduler : this.scheduler(schedulerName);
    const image = opts.image === undefined ? undefined : { input: opts.image, strength };
    return { prompts, width, height, steps, numImages, maxSequenceLength, guidance, outputType, seed, genWidth, genHeight, scheduler, image };
  }

  /** The named sampler on the folder's schedule: the folder's own, or the other one with its shift and
   * Sana's settings (DPM-Solver++ order 2, midpoint, lower-order final step). */
  private scheduler(name: 'flow-dpm-solver' | 'flow-euler' | undefined): Scheduler {
    const s = this.components.scheduler as Scheduler;
    if (name === undefined || (name === 'flow-euler') === (s instanceof FlowEuler)) return s;
    if (name === 'flow-euler' && s instanceof FlowDpmSolver) return new FlowEuler({ numTrainTimesteps: s.config.numTrainTimesteps, shift: s.config.flowShift });
    if (name === 'flow-dpm-solver' && s instanceof FlowEuler)
      return new FlowDpmSolver({ numTrainTimesteps: s.config.numTrainTimesteps, flowShift: s.config.shift, solverOrder: 2, solverType: 'midpoint', lowerOrderFinal: true, eulerAtFinal: false });
    throw new SanaError('ERR_SANA_UNSUPPORTED', `scheduler '${name}' cannot replace the folder's ${s.constructor.name}`);
  }

  /** Raw decoder output [B, 3, h·f, w·f] of final latents: vae.decode(latents / scaling_factor), whole,
   * tiled or sharded (in this thread; SanaPool spreads the shards over workers). */
  async decodeLatents(
    latents: Float32Array, shape: readonly [number, number, number, number], plan: DecodePlan = { mode: 'full', reason: 'requested' }, onProgress?: (e: ProgressEvent) => void,
  ): Promise<Float32Array> {
    const vae = this.components.vae;
    const sf = vae.config.scalingFactor;
    const z = latents.map((v) => v / sf);
    if (plan.mode === 'full') return vae.decode(z, shape);
    if (plan.mode === 'tiled') return vae.decode(z, shape, { tiling: plan.tiling });
    return shardedDecode(vae.config, z, shape, async (tasks, pass) => {
      onProgress?.({ status: 'decode-pass', index: pass.index, count: pass.count, label: pass.label });
      return tasks.map((t) => runShardTask(vae, t));
    }, { shardBytes: plan.shardBytes });
  }

  /**
   * Image-to-image's start: the image encoded by the VAE (· scaling_factor), the schedule cut by strength as
   * diffusers' img2img pipelines do (t_start = int(n − min(n·strength, n))), and the noise ε mixed in at the
   * first kept step: flow matching (1 − σ)·x0 + σ·ε; Sprint cos t·x0·σ_d + sin t·ε·σ_d.
   */
  private imageStart(image: { input: ImageInput; strength: number }, noise: Float32Array, shape: readonly [number, number, number, number], steps: number,
    scheduler: Scheduler | ScmScheduler, progress: (e: ProgressEvent) => void): { sample: Float32Array; begin: number } {
    const [B, , h, w] = shape;
    const vae = this.components.vae;
    const f = vae.spatialCompression;
    const begin = Math.trunc(Math.max(steps - Math.min(steps * image.strength, steps), 0)); // < steps for strength > 0
    const encoded = vae.encode(imageToVaeInput(image.input, h * f, w * f), [1, vae.config.inChannels, h * f, w * f]);
    const sf = Math.fround(vae.config.scalingFactor);
    const per = encoded.length;
    const x0 = new Float32Array(B * per);
    for (let b = 0; b < B; b++) x0.set(encoded.map((v) => v * sf), b * per);
    if (scheduler instanceof ScmScheduler) {
      const t = scheduler.timesteps[begin];
      if (t >= Math.PI / 2 - 1e-3)
        progress({ status: 'warning', message: `image-to-image: strength ${image.strength} keeps all ${steps} steps, so sampling starts at t = ${t.toFixed(4)} (π/2), where cos t ≈ 0 weighs the image out: the result ignores the image, as upstream's. Use a strength of at most ${((steps - 1) / steps).toFixed(2)} to start at the next step` });
      return { sample: sprintImageSample(x0, noise, t, scheduler), begin };
    }
    // strength 1 is text-to-image from the same noise (diffusers would keep (1 − σ₀)·x0 of the image, 0.03 % for
    // Flow-DPM-Solver's σ₀ = 0.9997)
    if (image.strength === 1) return { sample: noise, begin: 0 };
    scheduler.setTimesteps(steps);
    const sigma = Math.fround(scheduler.sigmas[begin]);
    const keep = Math.fround(1 - sigma);
    return { sample: x0.map((v, i) => Math.fround(sigma * noise[i]) + Math.fround(keep * v)), begin };
  }

  /** The decode mode for latents of h × w, with the reason (see GenerateOptions.decode). */
  planDecode(h: number, w: number, opts: Pick<GenerateOptions, 'decode' | 'tiling' | 'decodeMemoryBudget'> = {}): DecodePlan {
    const vae = this.components.vae;
    const mode = opts.decode ?? 'auto';
    if (!['auto', 'full', 'tiled', 'sharded'].includes(mode))
      throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected one of auto, full, tiled, sharded for decode but received ${describeValue(mode)}`);
    if (opts.tiling !== undefined && mode !== 'tiled')
      throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected decode 'tiled' with tiling but received ${describeValue(mode)}`);
    const budget = opts.decodeMemoryBudget ?? Math.floor(totalmem() / 4);
    if (!(Number.isFinite(budget) && budget > 0)) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a positive number of bytes for decodeMemoryBudget but received ${describeValue(opts.decodeMemoryBudget)}`);
    const f = vae.spatialCompression;
    const gib = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${Math.max(1, Math.round(b / 2 ** 20))} MiB`);
    const full = estimateDecodeBytes(vae.config, h, w, 'full');
    const shardBytes = Math.min(budget, 2 ** 30);
    if (mode === 'tiled') {
      const big = Math.max(h, w) * f >= 4096;
      const t = opts.tiling ?? {};
      const tiling: TilingOptions = {
        tileSampleMinHeight: t.tileSampleMinHeight ?? (big ? 1024 : 512), tileSampleMinWidth: t.tileSampleMinWidth ?? (big ? 1024 : 512),
        tileSampleStrideHeight: t.tileSampleStrideHeight ?? (big ? 896 : 448), tileSampleStrideWidth: t.tileSampleStrideWidth ?? (big ? 896 : 448),
      };
      checkTiling(tiling, f);
      return { mode, reason: `requested: tiles ${tiling.tileSampleMinWidth}/${tiling.tileSampleMinHeight} px, stride ${tiling.tileSampleStrideWidth}/${tiling.tileSampleStrideHeight} px (seams are blended, not exact)`, tiling };
    }
    if (mode === 'full') return { mode, reason: `requested (about ${gib(full)})` };
    if (mode === 'sharded') return { mode, reason: `requested (shards of at most about ${gib(shardBytes)} each)`, shardBytes };
    return full <= budget
      ? { mode: 'full', reason: `auto: a full decode needs about ${gib(full)}, within the ${gib(budget)} budget` }
      : { mode: 'sharded', reason: `auto: a full decode needs about ${gib(full)}, over the ${gib(budget)} budget; sharded (exact) needs about ${gib(estimateDecodeBytes(vae.config, h, w, 'sharded', { shardBytes }))}`, shardBytes };
  }
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * One generation's denoising loop (diffusers' order): latents x on the transformer's backend. Per step the
 * model batch ([x; x] with guidance), the velocity, the guided velocity (uncond + g·(cond − uncond)) and the
 * scheduler update are tensor ops, and one value is read back (the non-finite flag of the model output).
 * The timestep features of every step are made once, up front.
 */
class DenoiseRun {
  private x: Tensor;
  private readonly features: Tensor;
  private index: number;
  private readonly begin: number;

  constructor(
    private readonly transformer: SanaTransformer2DModel,
    latents: Float32Array,
    private readonly shape: readonly [number, number, number, number],
    private readonly text: TextConditioning,
    private readonly opts: { steps: number; guidanceScale: number; scheduler: Scheduler; begin?: number },
  ) {
    const be = transformer.backend;
    const scheduler = opts.scheduler;
    scheduler.setTimesteps(opts.steps);
    const begin = (this.index = this.begin = opts.begin ?? 0);
    if (begin) scheduler.setBeginIndex(begin);
    const MB = this.cfg ? 2 * shape[0] : shape[0];
    const values = Array.from({ length: (opts.steps - begin) * MB }, (_, k) => scheduler.timesteps[begin + Math.floor(k / MB)] * transformer.config.timestepScale);
    this.features = transformer.timestepFeatures(values);
    try {
      this.x = be.tensor([...shape], 'f32', latents);
    } catch (e) {
      this.features.dispose();
      throw e;
    }
  }

  private get cfg(): boolean {
    return this.opts.guidanceScale > 1;
  }

  step(onStep?: (s: DenoiseStep) => void): void {
    const be = this.transformer.backend;
    const { scheduler } = this.opts;
    const [B, C, h, w] = this.shape;
    const i = this.index;
    const MB = this.cfg ? 2 * B : B;
    const temp: Tensor[] = [];
    const t = <T extends Tensor>(x: T): T => (temp.push(x), x);
    try {
      let input = this.x;
      if (this.cfg) {
        input = t(be.empty([MB, C, h, w]));
        for (const half of [0, 1]) be.copy(this.x, input.slice(half * this.x.size, [...this.shape]));
      }
      const v = t(this.transformer.forwardTensor(input, { text: this.text, timestep: this.features.slice((i - this.begin) * MB * 256, [MB, 256]) }));
      throwIfNonFinite(be, v, 'SanaTransformer2DModel produced non-finite values (NaN or Infinity) in its output: the weights or inputs hold NaN/Inf');
      const guided = this.cfg ? t(be.cfgCombine(v.slice(0, [...this.shape]), v.slice(this.x.size, [...this.shape]), f(this.opts.guidanceScale))) : v;
      const next = scheduler.step(be, guided, this.x);
      this.x.dispose();
      this.x = next;
      this.index++;
      onStep?.({ index: i, timestep: scheduler.timesteps[i], modelOutput: v.toFloat32(), latents: next.toFloat32() });
    } finally {
      for (const x of temp) x.dispose();
    }
  }

  /** The latents now, read back to the host (the loop's one read of them). */
  latents(): Float32Array {
    return this.x.toFloat32();
  }

  dispose(): void {
    this.x.dispose();
    this.features.dispose();
    this.opts.scheduler.release();
  }
}
