/**
 * SanaPipeline's computation on pre-tokenized prompts: prompt encoding (right padding, the "first + last
 * N−1" token selection), the classifier-free-guided denoising loop, and decoding — diffusers' order and fp32
 * arithmetic (../shared/design/sana-spec.md §5). Tokenisation, options and image output build on this.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import type { Tokenizer } from '@huggingface/tokenizers';

import type { Backend } from '../backends/backend.js';
import { createBackend } from '../backends/registry.js';
import { SanaError } from '../errors.js';
import type { LoadOptions } from '../models/params.js';
import { loadSanaComponents, type SanaComponents } from './components.js';
import { loadTokenizer, tokenizeNegative, tokenizePrompts } from './prompt.js';

/** Text conditioning for a batch: embeddings [batch, length, hidden] and the 0/1 mask [batch, length]. */
export interface PromptEncoding {
  embeds: Float32Array;
  mask: number[];
  batch: number;
  length: number;
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

export class SanaPipeline {
  private constructor(
    readonly components: SanaComponents,
    private readonly owned: Backend[],
    /** tokenizer/tokenizer.json, when the folder ships one */
    readonly tokenizer: Tokenizer | null,
  ) {}

  get warnings(): string[] {
    return this.components.warnings;
  }

  /** Loads a diffusers-layout Sana folder (model_index.json + component folders) on a backend given by
   * name (created and owned by the pipeline) or as an instance (shared, not disposed with the pipeline). */
  static async fromPretrained(dir: string, opts: LoadOptions & { backend?: 'auto' | 'cpu' | 'wasm' | Backend; threads?: number } = {}): Promise<SanaPipeline> {
    const given = typeof opts.backend === 'object' ? opts.backend : undefined;
    const backend = given ?? (await createBackend((opts.backend as 'auto' | 'cpu' | 'wasm' | undefined) ?? 'auto', { threads: opts.threads }));
    try {
      const tokenizerDir = join(dir, 'tokenizer');
      const tokenizer = existsSync(join(tokenizerDir, 'tokenizer.json')) ? loadTokenizer(tokenizerDir) : null;
      return new SanaPipeline(loadSanaComponents(dir, { textEncoder: backend, transformer: backend, vae: backend }, opts), given ? [] : [backend], tokenizer);
    } catch (e) {
      if (!given) backend.dispose();
      throw e;
    }
  }

  dispose(): void {
    this.components.dispose();
    for (const b of this.owned) b.dispose();
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
    const { transformer, scheduler } = this.components;
    const [B, C, h, w] = shape;
    const cfg = opts.guidanceScale > 1;
    if (cond.batch !== B) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected ${B} prompt rows for the latents' batch but received ${cond.batch}`);
    if (cfg && (!uncond || uncond.batch !== B || uncond.length !== cond.length))
      throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected ${B} negative prompt rows of length ${cond.length} with guidance but received ${uncond ? `${uncond.batch} of ${uncond.length}` : 'none'}`);
    const text = cfg ? concat(uncond!.embeds, cond.embeds) : cond.embeds;
    const mask = cfg ? [...uncond!.mask, ...cond.mask] : cond.mask;
    const MB = cfg ? 2 * B : B;
    const per = C * h * w;
    scheduler.setTimesteps(opts.steps);
    let x = latents;
    for (let i = 0; i < opts.steps; i++) {
      const t = scheduler.timesteps[i];
      const input = cfg ? concat(x, x) : x;
      const v = transformer.forward({
        hiddenStates: input, shape: [MB, C, h, w], encoderHiddenStates: text, textLength: cond.length, encoderAttentionMask: mask,
        timestep: new Float32Array(MB).fill(t * transformer.config.timestepScale),
      });
      let guided = v;
      if (cfg) {
        guided = new Float32Array(B * per);
        const g = f(opts.guidanceScale);
        for (let k = 0; k < B * per; k++) guided[k] = v[k] + f(g * f(v[B * per + k] - v[k]));
      }
      x = scheduler.step(guided, x);
      opts.onStep?.({ index: i, timestep: t, modelOutput: v, latents: x });
    }
    return x;
  }

  /** Raw decoder output [B, 3, h·f, w·f] of final latents: vae.decode(latents / scaling_factor). */
  decodeLatents(latents: Float32Array, shape: readonly [number, number, number, number]): Float32Array {
    const vae = this.components.vae;
    const sf = vae.config.scalingFactor;
    return vae.decode(latents.map((v) => v / sf), shape);
  }
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
