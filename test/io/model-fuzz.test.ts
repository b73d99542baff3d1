// The model- and pipeline-level cases of ../shared/fuzz/cases.json: malformed component folders fail with a
// SanaError naming the file, key or tensor; odd-but-valid ones load and run; NaN/Inf weights load but
// their forward pass is reported as non-finite, never returned.
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { createBackend } from '../../ts/backends/registry.js';
import { SanaError } from '../../ts/errors.js';
import { AutoencoderDC } from '../../ts/models/autoencoder-dc.js';
import { Gemma2Model } from '../../ts/models/gemma2.js';
import { SanaTransformer2DModel } from '../../ts/models/sana-transformer.js';
import { loadSanaComponents } from '../../ts/pipeline/components.js';
import { fuzz, reportSkipped } from '../fixtures/shared.js';

const fuzzDir = fuzz.dir;

interface FuzzCase {
  id: string;
  level: string;
  path: string;
  base?: string;
  remove?: string[];
  component?: string;
  defect: string;
  expected: 'error' | 'ok' | 'ok-but-nan';
  mentions?: string[];
  mentions_any?: string[];
}

const cases: FuzzCase[] = fuzz.present ? JSON.parse(readFileSync(join(fuzzDir, 'cases.json'), 'utf8')).cases.filter((c: FuzzCase) => c.level !== 'file') : [];
const work = mkdtempSync(join(tmpdir(), 'sana-fuzz-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const backend = await createBackend('auto');
afterAll(() => backend.dispose());

/** The folder to load: the case folder itself, or `base` with the case's files laid over it. */
function materialise(c: FuzzCase): string {
  if (!c.base) return join(fuzzDir, c.path);
  const dir = join(work, c.id);
  cpSync(join(fuzzDir, c.base), dir, { recursive: true });
  cpSync(join(fuzzDir, c.path), dir, { recursive: true });
  for (const r of c.remove ?? []) rmSync(join(dir, r), { recursive: true, force: true });
  return dir;
}

function runTransformer(dir: string): Float32Array {
  const model = SanaTransformer2DModel.fromFolder(dir, backend);
  try {
    const c = model.config;
    const [B, H, W, T] = [1, 4, 4, 5];
    const hs = Float32Array.from({ length: B * c.inChannels * H * W }, (_, i) => Math.sin(i));
    const ehs = Float32Array.from({ length: B * T * c.captionChannels }, (_, i) => Math.cos(i));
    return model.forward({
      hiddenStates: hs, shape: [B, c.inChannels, H, W], encoderHiddenStates: ehs, textLength: T,
      encoderAttentionMask: [1, 1, 1, 0, 0], timestep: Float32Array.of(500), guidance: c.guidanceEmbeds ? Float32Array.of(0.45) : undefined,
    });
  } finally {
    model.dispose();
  }
}

function runGemma(dir: string): Float32Array {
  const model = Gemma2Model.fromFolder(dir, backend);
  try {
    const V = model.config.vocabSize;
    return model.forward([2, 5 % V, 7 % V, 0, 0, 2, 3 % V, 4 % V, 9 % V, 1], [1, 1, 1, 0, 0, 1, 1, 1, 1, 1], 2, 5);
  } finally {
    model.dispose();
  }
}

function runVae(dir: string): Float32Array {
  const model = AutoencoderDC.fromFolder(dir, backend);
  try {
    const C = model.config.latentChannels;
    return model.decode(Float32Array.from({ length: C * 4 }, (_, i) => Math.sin(i)), [1, C, 2, 2]);
  } finally {
    model.dispose();
  }
}

/** Loads a pipeline folder and runs two denoising steps from fixed token ids, then decodes. */
function runPipeline(dir: string): Float32Array {
  const c = loadSanaComponents(dir, { textEncoder: backend, transformer: backend, vae: backend });
  try {
    const T = 4;
    const text = c.textEncoder.forward([2, 3, 4, 0], [1, 1, 1, 0], 1, T);
    const C = c.transformer.config.inChannels;
    let latents: Float32Array = Float32Array.from({ length: C * 4 }, (_, i) => Math.sin(i));
    c.scheduler.setTimesteps(2);
    for (let i = 0; i < 2; i++) {
      const v = c.transformer.forward({
        hiddenStates: latents, shape: [1, C, 2, 2], encoderHiddenStates: text, textLength: T,
        encoderAttentionMask: [1, 1, 1, 0], timestep: Float32Array.of(c.scheduler.timesteps[i]),
      });
      const [vt, xt] = [backend.tensor([v.length], 'f32', v), backend.tensor([latents.length], 'f32', latents)];
      const next = c.scheduler.step(backend, vt, xt);
      latents = next.toFloat32();
      for (const t of [vt, xt, next]) t.dispose();
    }
    const sf = c.vae.config.scalingFactor;
    return c.vae.decode(latents.map((x) => x / sf), [1, C, 2, 2]);
  } finally {
    c.scheduler.release();
    c.dispose();
  }
}

const RUNNERS: Record<string, (dir: string) => Float32Array> = {
  SanaTransformer2DModel: runTransformer, Gemma2Model: runGemma, AutoencoderDC: runVae, SanaPipeline: runPipeline,
};

function caught(fn: () => unknown): SanaError {
  try {
    fn();
  } catch (e) {
    return e as SanaError;
  }
  throw new Error('expected an error, the call succeeded');
}

describe('loader on the fuzz corpus (models and pipelines)', () => {
  reportSkipped(fuzz, 'the model and pipeline cases of the fuzz corpus');
  for (const c of cases) {
    it(`${c.id} [${c.expected}]: ${c.defect.slice(0, 90)}`, () => {
      const run = RUNNERS[c.component ?? ''];
      expect(run, `a loader for ${c.component}`).toBeDefined();
      const dir = materialise(c);
      if (c.expected === 'ok') {
        expect(run(dir).every(Number.isFinite)).toBe(true);
        return;
      }
      const err = caught(() => run(dir));
      expect(err).toBeInstanceOf(SanaError);
      if (c.expected === 'error') {
        expect(err.code).toBe('ERR_SANA_MODEL_FORMAT');
        for (const m of c.mentions ?? []) expect(err.message).toContain(m);
        if (c.mentions_any) expect(c.mentions_any.some((m) => err.message.includes(m)), err.message).toBe(true);
      } else {
        expect(err.code).toBe('ERR_SANA_NON_FINITE');
        expect(err.message).toMatch(/NaN|non-finite/);
      }
    });
  }
});
