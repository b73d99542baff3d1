/**
 * Loading a Sana pipeline folder in the diffusers layout: model_index.json names a class per component
 * folder (text_encoder/, transformer/, vae/, scheduler/, tokenizer/). Every entry is validated before
 * any weights are read; each component validates its own config and weights.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

import type { Backend } from '../backends/backend.js';
import { describeValue, SanaError } from '../errors.js';
import { entryKind, readTextFile } from '../io/files.js';
import { isObject, JsonSyntaxError, parseJson, type JsonValue } from '../io/json.js';
import { AutoencoderDC } from '../models/autoencoder-dc.js';
import { Gemma2Model } from '../models/gemma2.js';
import type { LoadOptions } from '../models/params.js';
import { SanaTransformer2DModel } from '../models/sana-transformer.js';
import { SCHEDULER_CLASSES, type Scheduler } from '../schedulers/schedulers.js';
import { ScmScheduler } from '../schedulers/scm.js';

/** The model classes this engine loads, by the `_class_name` model_index.json gives them. */
const MODEL_CLASSES = {
  Gemma2Model: (dir: string, be: Backend, opts: LoadOptions) => Gemma2Model.fromFolder(dir, be, opts),
  SanaTransformer2DModel: (dir: string, be: Backend, opts: LoadOptions) => SanaTransformer2DModel.fromFolder(dir, be, opts),
  AutoencoderDC: (dir: string, be: Backend, opts: LoadOptions) => AutoencoderDC.fromFolder(dir, be, opts),
};

/** The pipelines this engine runs, by model_index.json's `_class_name`: for each component folder the
 * classes it may hold (null: the component may be absent). A new pipeline is one entry here. */
const SANA_MODELS = { text_encoder: ['Gemma2Model'], transformer: ['SanaTransformer2DModel'], vae: ['AutoencoderDC'] };
const TOKENIZERS = ['GemmaTokenizer', 'GemmaTokenizerFast', null];
const PIPELINE_CLASSES: Record<PipelineClass, Record<string, (string | null)[]>> = {
  SanaPipeline: { ...SANA_MODELS, scheduler: ['DPMSolverMultistepScheduler', 'FlowMatchEulerDiscreteScheduler'], tokenizer: TOKENIZERS },
  SanaSprintPipeline: { ...SANA_MODELS, scheduler: ['SCMScheduler'], tokenizer: TOKENIZERS },
};
export type PipelineClass = 'SanaPipeline' | 'SanaSprintPipeline';

export interface SanaComponents {
  /** model_index.json's _class_name: SanaPipeline (flow matching with CFG) or SanaSprintPipeline (SCM, 1–4 steps) */
  pipelineClass: PipelineClass;
  textEncoder: Gemma2Model;
  transformer: SanaTransformer2DModel;
  vae: AutoencoderDC;
  /** SanaPipeline: a flow sampler; SanaSprintPipeline: the SCM sampler */
  scheduler: Scheduler | ScmScheduler;
  /** class of tokenizer/ (null when the folder ships none) */
  tokenizerClass: string | null;
  warnings: string[];
  dispose(): void;
}

function fail(message: string): never {
  throw new SanaError('ERR_SANA_MODEL_FORMAT', `model_index.json: ${message}`);
}

/** Reads and validates model_index.json: the class of every component, and that its folder exists. */
export function readModelIndex(dir: string): { pipeline: PipelineClass; classes: Record<string, string | null>; warnings: string[] } {
  const folder = entryKind(dir, 'model folder');
  if (folder === 'missing') fail(`not found in ${dir} (the folder does not exist)`);
  if (folder === 'file') fail(`${dir} is a file; a pipeline folder holds model_index.json`);
  const path = join(dir, 'model_index.json');
  if (entryKind(path, 'model_index.json') === 'missing') fail(`not found in ${dir} (a diffusers pipeline folder has one at its top)`);
  let raw: JsonValue;
  try {
    raw = parseJson(readTextFile(path, 'model_index.json'), { rejectDuplicates: false });
  } catch (e) {
    if (e instanceof JsonSyntaxError) fail(`not valid JSON: ${e.message}`);
    throw e;
  }
  if (!isObject(raw)) fail('not a JSON object');
  const pipeline = raw._class_name as PipelineClass;
  const COMPONENTS = typeof pipeline === 'string' && Object.hasOwn(PIPELINE_CLASSES, pipeline) ? PIPELINE_CLASSES[pipeline] : undefined;
  if (!COMPONENTS) fail(`Expected one of ${Object.keys(PIPELINE_CLASSES).join(', ')} for _class_name but received ${describeValue(raw._class_name)}`);
  const classes: Record<string, string | null> = {};
  const warnings: string[] = [];
  for (const [name, allowed] of Object.entries(COMPONENTS)) {
    const entry = raw[name];
    if (entry === undefined) fail(`missing the ${name} entry (${pipeline} needs ${Object.keys(COMPONENTS).join(', ')})`);
    if (!Array.isArray(entry) || entry.length !== 2) fail(`Expected [library, class] for ${name} but received ${describeValue(entry)}`);
    const cls = entry[1];
    if (!allowed.includes(cls as string | null))
      fail(`Expected ${allowed.map((a) => describeValue(a)).join(' or ')} for the class of ${name} but received ${describeValue(cls)}`);
    classes[name] = cls as string | null;
    const where = cls === null ? undefined : entryKind(join(dir, name), `model_index.json: ${name}`);
    if (where === 'missing') fail(`lists ${name} (${cls}) but the folder ${join(dir, name)} is missing`);
    if (where === 'file') fail(`lists ${name} (${cls}) but ${join(dir, name)} is a file, not a folder`);
  }
  for (const [name, entry] of Object.entries(raw)) {
    if (name.startsWith('_') || name in COMPONENTS) continue;
    if (Array.isArray(entry) && entry[0] === null && entry[1] === null) continue; // e.g. safety_checker: [null, null]
    warnings.push(`model_index.json: component ${name} (${describeValue(entry)}) is not used by ${pipeline}`);
  }
  return { pipeline, classes, warnings };
}

/** Bytes of the safetensors files in a component folder: the total that load progress counts toward. */
function weightBytes(dir: string): number {
  if (entryKind(dir, dir) !== 'dir') return 0; // the component's loader reports what is wrong
  const size = (f: string) => {
    try {
      return statSync(join(dir, f)).size;
    } catch {
      return 0; // e.g. a dangling link: the weight store names it
    }
  };
  return readdirSync(dir).filter((f) => f.endsWith('.safetensors')).reduce((sum, f) => sum + size(f), 0);
}

/** Loads every component of a pipeline folder; on any error nothing stays allocated. `onProgress` reports
 * the tensor bytes read so far against the folder's weight-file total (at most every 1 %, and at the end
 * of each component, where the component's whole files — headers included — are counted). */
export function loadSanaComponents(dir: string, backends: { textEncoder: Backend; transformer: Backend; vae: Backend }, opts: LoadOptions & {
  onProgress?: (e: { status: 'load'; component: string; loaded: number; total: number }) => void;
} = {}): SanaComponents {
  const { pipeline, classes, warnings } = readModelIndex(dir);
  const loaded: { dispose(): void }[] = [];
  const names = ['text_encoder', 'transformer', 'vae'];
  const total = names.reduce((s, n) => s + weightBytes(join(dir, n)), 0);
  let done = 0;
  let reported = 0;
  const reading = (name: string) => ({
    ...opts,
    onBytesRead: (bytes: number) => {
      const now = Math.min(done + bytes, total);
      done = now;
      if (now - reported >= total / 100) {
        reported = now;
        opts.onProgress?.({ status: 'load', component: name, loaded: now, total });
      }
    },
  });
  let before = 0;
  const keep = <T extends { dispose(): void }>(name: string, m: T): T => {
    loaded.push(m);
    before += weightBytes(join(dir, name));
    done = reported = before;
    opts.onProgress?.({ status: 'load', component: name, loaded: done, total });
    return m;
  };
  try {
    const model = <K extends keyof typeof MODEL_CLASSES>(name: string, backend: Backend): ReturnType<(typeof MODEL_CLASSES)[K]> =>
      keep(name, MODEL_CLASSES[classes[name] as K](join(dir, name), backend, reading(name)) as ReturnType<(typeof MODEL_CLASSES)[K]>);
    const textEncoder = model<'Gemma2Model'>('text_encoder', backends.textEncoder);
    const transformer = model<'SanaTransformer2DModel'>('transformer', backends.transformer);
    const vae = model<'AutoencoderDC'>('vae', backends.vae);
    const scheduler = SCHEDULER_CLASSES[classes.scheduler!].fromFolder(join(dir, 'scheduler'));
    const all = [
      ...warnings,
      ...(scheduler instanceof ScmScheduler ? scheduler.warnings : []),
      ...textEncoder.warnings.map((w) => `text_encoder: ${w}`),
      ...transformer.warnings.map((w) => `transformer: ${w}`),
      ...vae.warnings.map((w) => `vae: ${w}`),
    ];
    return { pipelineClass: pipeline, textEncoder, transformer, vae, scheduler, tokenizerClass: classes.tokenizer, warnings: all, dispose: () => loaded.forEach((m) => m.dispose()) };
  } catch (e) {
    loaded.forEach((m) => m.dispose());
    throw e;
  }
}
