/**
 * A SanaPool worker: one per device. Tasks carry everything they need (the model folder and options), so a
 * worker that replaces a crashed one loads the model on its first task and a task can run on any worker.
 * Errors travel as { error: { code, message } } (a structured-cloned Error loses its code).
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { type MessagePort, threadId, workerData } from 'node:worker_threads';

import type { Backend, BackendName } from '../backends/backend.js';
import { createBackend } from '../backends/registry.js';
import { errorReply, SanaError } from '../errors.js';
import { AutoencoderDC } from '../models/autoencoder-dc.js';
import { runShardTask, type ShardTask } from '../models/dcae-sharded.js';
import type { LoadOptions } from '../models/params.js';
import { SanaPipelineCore, type GenerateOptions } from '../pipeline/pipeline-core.js';

export interface DeviceConfig {
  backend: BackendName;
  /** device index of a device backend (cuda:N) */
  device: number;
  threads: number;
}

/** What a worker loads: a whole pipeline folder, or only a DC-AE folder (for decoding). */
export interface ModelRef {
  kind: 'pipeline' | 'vae';
  dir: string;
  weightDtype?: LoadOptions['weightDtype'];
  precision?: LoadOptions['precision'];
}

export type PoolTask =
  /** force: load again even if this model is loaded (its files may have changed) */
  | { type: 'load'; model: ModelRef; force?: boolean }
  | { type: 'shard'; model: ModelRef; task: ShardTask }
  /** one tile of a tiled decode: latents [B, C, th, tw] (already divided by the scaling factor), decoded whole */
  | { type: 'tile'; model: ModelRef; z: Float32Array; shape: [number, number, number, number] }
  | { type: 'render'; model: ModelRef; prompt: string; options: Omit<GenerateOptions, 'signal' | 'onProgress'>; lora: { path: string; scale: number }[]; file: string; port: MessagePort };

const device = workerData as DeviceConfig;
let backend: Backend | null = null;
let loaded: { key: string; pipeline?: SanaPipelineCore; vae: AutoencoderDC } | null = null;

async function model(ref: ModelRef, force = false): Promise<NonNullable<typeof loaded>> {
  const key = JSON.stringify(ref);
  if (loaded?.key === key && !force) return loaded;
  loaded?.pipeline?.dispose();
  if (loaded && !loaded.pipeline) loaded.vae.dispose();
  loaded = null;
  backend ??= await createBackend(device.backend, { threads: device.threads, device: device.device });
  if (ref.kind === 'vae') {
    loaded = { key, vae: AutoencoderDC.fromFolder(ref.dir, backend, { weightDtype: ref.weightDtype }) };
  } else {
    const pipeline = await SanaPipelineCore.fromPretrained(ref.dir, { backend, weightDtype: ref.weightDtype, precision: ref.precision });
    loaded = { key, pipeline, vae: pipeline.components.vae };
  }
  return loaded;
}

/** Brings the pipeline's adapters to this job's set (named by path): unloads the others, loads the missing,
 * rescales the rest; a render line without "lora" runs on the plain model. */
function useLoras(pipe: SanaPipelineCore, wanted: { path: string; scale: number }[]): void {
  const want = new Map(wanted.map((l) => [l.path, l.scale]));
  for (const l of pipe.loras) if (!want.has(l.name)) pipe.lora({ action: 'unload', name: l.name });
  for (const [path, scale] of want) {
    const have = pipe.loras.find((l) => l.name === path);
    if (!have) pipe.lora({ action: 'load', path, name: path, scale });
    else if (have.scale !== scale) pipe.lora({ action: 'scale', name: path, scale });
  }
}

export default async function run(task: PoolTask): Promise<unknown> {
  try {
    switch (task.type) {
      case 'load': {
        const m = await model(task.model, task.force);
        return { result: { backendInfo: m.vae.backend.info } };
      }
      case 'shard':
        return { result: runShardTask((await model(task.model)).vae, task.task) };
      case 'tile':
        return { result: (await model(task.model)).vae.decode(task.z, task.shape) };
      case 'render': {
        const m = await model(task.model);
        if (!m.pipeline) throw new SanaError('ERR_SANA_INVALID_ARGUMENT', 'render needs a pipeline folder, not a DC-AE folder');
        useLoras(m.pipeline, task.lora);
        // aborting a render terminates this worker (piscina), so there is no abort flag to poll
        const result = await m.pipeline.generate(task.prompt, { ...task.options, onProgress: (e) => task.port.postMessage(e) });
        // a finished file appears under its name at once or not at all, so an interrupted render resumes cleanly
        mkdirSync(dirname(task.file), { recursive: true });
        const partial = `${task.file}.partial-${process.pid}-${threadId}`;
        writeFileSync(partial, await result.images[0].toPNG());
        renameSync(partial, task.file);
        return { result: { timings: result.timings, generatedSize: result.generatedSize } };
      }
    }
  } catch (e) {
    return errorReply(e);
  } finally {
    if (task.type === 'render') {
      task.port.postMessage({ status: 'end' });
      task.port.close();
    }
  }
}
