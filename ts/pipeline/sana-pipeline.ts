/**
 * SanaPipeline: text → images with the Sana models of a diffusers-layout folder. The models load and run in a
 * piscina worker (one per pipeline), so the caller's event loop stays free during minutes-long generations;
 * progress events arrive through `onProgress`, `signal` aborts between steps and leaves the pipeline usable.
 */
import { join } from 'node:path';
import { MessageChannel, type MessagePort } from 'node:worker_threads';

import { Piscina } from 'piscina';

import type { BackendInfo } from '../backends/backend.js';
import { describeValue, SanaError, type SanaErrorCode } from '../errors.js';
import type { PrecisionDecision } from '../models/precision.js';
import { demoModelDir, packageRoot } from '../paths.js';
import { GeneratedImage } from './image.js';
import type { LoadedLora } from '../models/lora.js';
import type { BackendChoice, ComponentBackends, CoreLoadOptions, GenerateOptions as CoreGenerateOptions, GenerateResult, LoraAction, PipelineMemory, ProgressEvent } from './pipeline-core.js';
import type { END, WorkerTask } from './worker.js';

export type { GenerateResult, PipelineMemory, ProgressEvent, Timings } from './pipeline-core.js';
export type GenerateOptions = Omit<CoreGenerateOptions, 'signal'> & { signal?: AbortSignal };

export interface PipelineOptions extends Omit<CoreLoadOptions, 'backend' | 'onProgress'> {
  backend?: BackendChoice | ComponentBackends;
  /** weights in memory: as stored ('auto', default), or fp32 checkpoints held as 'bf16' / 'f16' (half the
   * memory; activations stay fp32). Same as weightDtype. */
  dtype?: 'auto' | 'bf16' | 'f16';
  onProgress?: (e: ProgressEvent) => void;
}

type Reply<T> = T | { error: { code: SanaErrorCode; message: string } };

/** Runs a worker task with a progress port; resolves once the task has returned and every progress
 * message up to the worker's end marker has been delivered. */
async function runWithProgress<T>(pool: Piscina, make: (port: MessagePort) => WorkerTask, onProgress?: (e: ProgressEvent) => void): Promise<T> {
  const { port1, port2 } = new MessageChannel();
  let ended!: () => void;
  const end = new Promise<void>((r) => (ended = r));
  port1.on('message', (e: ProgressEvent | typeof END) => (e.status === 'end' ? ended() : onProgress?.(e)));
  try {
    const reply = await pool.run(make(port2), { transferList: [port2] });
    await end;
    return unwrap(reply) as T;
  } finally {
    port1.close();
  }
}

function unwrap<T>(reply: Reply<T>): T {
  if (reply && typeof reply === 'object' && 'error' in reply) throw new SanaError(reply.error.code, reply.error.message);
  return reply as T;
}

export class SanaPipeline {
  private pool: Piscina | null;
  private busy = Promise.resolve();

  private constructor(
    pool: Piscina,
    /** unused tensors, unknown config keys, precision decisions, made while loading */
    readonly warnings: string[],
    /** which backend and kernel variant runs each component, and why */
    readonly backendInfo: Record<'textEncoder' | 'transformer' | 'vae', BackendInfo>,
    /** the precision each component runs in, and why (`precision` option: auto, fp32, bf16) */
    readonly precision: Record<'textEncoder' | 'transformer' | 'vae', PrecisionDecision>,
  ) {
    this.pool = pool;
  }

  /** Loads a diffusers-layout folder; without one, the built-in demo model (see training/README.md). */
  static async fromPretrained(dir: string = demoModelDir(), opts: PipelineOptions = {}): Promise<SanaPipeline> {
    const { onProgress, dtype, ...rest } = opts;
    if (dtype !== undefined && !['auto', 'bf16', 'f16'].includes(dtype))
      throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected one of auto, bf16, f16 for dtype but received ${describeValue(dtype)}`);
    const options = { ...rest, weightDtype: rest.weightDtype ?? (dtype === 'auto' ? undefined : dtype) };
    const pool = new Piscina({ filename: join(packageRoot(), 'dist', 'ts', 'pipeline', 'worker.js'), minThreads: 1, maxThreads: 1, idleTimeout: Infinity });
    try {
      const info = await runWithProgress<{ warnings: string[]; backendInfo: SanaPipeline['backendInfo']; precision: SanaPipeline['precision'] }>(pool, (port) => ({ type: 'load', dir, options, port }), onProgress);
      return new SanaPipeline(pool, info.warnings, info.backendInfo, info.precision);
    } catch (e) {
      await pool.destroy();
      throw e;
    }
  }

  /** Generates images; one generation at a time per pipeline (calls queue). */
  async generate(prompt: string | string[], opts: GenerateOptions = {}): Promise<GenerateResult> {
    return this.exclusive(async () => {
      const pool = this.pool;
      if (!pool) throw new SanaError('ERR_SANA_DISPOSED', 'the pipeline was disposed');
      const { signal, onProgress, ...options } = opts;
      if (signal?.aborted) throw new SanaError('ERR_SANA_ABORTED', 'generation was aborted');
      const abort = new SharedArrayBuffer(4);
      const onAbort = () => Atomics.store(new Int32Array(abort), 0, 1);
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        const { result } = await runWithProgress<{ result: GenerateResult }>(pool, (port) => ({ type: 'generate', prompt, options, abort, port }), onProgress);
        result.images = result.images.map((i) => new GeneratedImage(i.width, i.height, i.data));
        return result;
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    });
  }

  /** Runs `fn` after every earlier generate / LoRA change has finished (the worker holds one pipeline). */
  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const previous = this.busy;
    let release!: () => void;
    this.busy = new Promise((r) => (release = r));
    await previous;
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** LoRA adapters on the transformer (docs/lora.md): `fileOrDir` is a .safetensors file or a folder holding
   * one; several may be loaded at once and their changes add. Returns the adapter's name. */
  async loadLora(fileOrDir: string, opts: { name?: string; scale?: number } = {}): Promise<string> {
    return (await this.loraTask({ action: 'load', path: fileOrDir, ...opts })).name;
  }

  async setLoraScale(name: string, scale: number): Promise<void> {
    await this.loraTask({ action: 'scale', name, scale });
  }

  async unloadLora(name: string): Promise<void> {
    await this.loraTask({ action: 'unload', name });
  }

  /** The loaded adapters: name, file, scale, adapted modules. */
  async loras(): Promise<LoadedLora[]> {
    const pool = this.pool;
    if (!pool) throw new SanaError('ERR_SANA_DISPOSED', 'the pipeline was disposed');
    await this.busy;
    return unwrap(await pool.run({ type: 'loras' } satisfies WorkerTask) as Reply<{ loras: LoadedLora[] }>).loras;
  }

  private async loraTask(action: LoraAction): Promise<{ name: string; loras: LoadedLora[] }> {
    const pool = this.pool;
    if (!pool) throw new SanaError('ERR_SANA_DISPOSED', 'the pipeline was disposed');
    return this.exclusive(async () => unwrap(await pool.run({ type: 'lora', action } satisfies WorkerTask) as Reply<{ name: string; loras: LoadedLora[] }>));
  }

  /** Tensor memory held by each backend in the worker (weights plus live activations; after a generate only
   * the weights), with the components it runs: for services that watch for leaks. */
  async memory(): Promise<PipelineMemory> {
    const pool = this.pool;
    if (!pool) throw new SanaError('ERR_SANA_DISPOSED', 'the pipeline was disposed');
    await this.busy;
    return unwrap(await pool.run({ type: 'memory' } satisfies WorkerTask) as Reply<{ memory: PipelineMemory }>).memory;
  }

  /** Frees the models and ends the worker. */
  async dispose(): Promise<void> {
    const pool = this.pool;
    this.pool = null;
    if (!pool) return;
    await this.busy;
    try {
      await pool.run({ type: 'dispose' } satisfies WorkerTask);
    } finally {
      await pool.destroy();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
