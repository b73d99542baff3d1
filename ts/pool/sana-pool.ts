/**
 * SanaPool: one piscina worker per device (CPU workers with a share of the cores, wasm, or CUDA devices where a
 * CUDA backend exists), each holding its own loaded model. Work is split into tasks — decode shards or tiles, or whole
 * images of a batch render — handed to whichever device is free; a task whose worker crashed or failed is
 * retried on another device up to a limit, then the run fails with an error naming the task. An AbortSignal
 * stops a run at once (running tasks' workers are terminated and replaced).
 */
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { MessageChannel, type TransferListItem } from 'node:worker_threads';

import { Piscina } from 'piscina';

import type { BackendInfo } from '../backends/backend.js';
import { deviceCount, parseDevice, probeBackends } from '../backends/registry.js';
import { describeValue, SanaError, type SanaErrorCode } from '../errors.js';
import { ConfigReader } from '../io/config.js';
import { readAutoencoderDcConfig, type AutoencoderDcConfig } from '../models/dcae-config.js';
import { parseLoraSpec } from '../models/lora.js';
import { checkPrecision, type PrecisionChoice } from '../models/precision.js';
import { blendTiles, checkTiling, latentTiles, type TilingOptions } from '../models/dcae-tiling.js';
import { shardedDecode, type ShardOptions } from '../models/dcae-sharded.js';
import { demoModelDir, packageRoot } from '../paths.js';
import type { GenerateOptions, ProgressEvent, Timings } from '../pipeline/pipeline-core.js';
import type { DeviceConfig, ModelRef, PoolTask } from './pool-worker.js';

export interface SanaPoolOptions {
  /** a pipeline folder (diffusers layout; default: the built-in demo model), or with kind 'vae' a DC-AE folder */
  model?: string;
  kind?: 'pipeline' | 'vae';
  /** a device per worker: 'cpu', 'wasm' or 'cuda:N' (parsed by the backend registry), e.g. ['cpu', 'cpu'] or 'cuda:0,cuda:1'; default: one worker per GPU where CUDA runs, else one CPU worker per two cores */
  devices?: string | string[];
  /** kernel threads of each CPU worker (default: the cores divided among the CPU workers) */
  threadsPerWorker?: number;
  /** tries per task before the run fails (default 3) */
  maxAttempts?: number;
  /** weights held as stored ('auto') or as bf16 / f16 */
  dtype?: 'auto' | 'bf16' | 'f16';
  /** compute precision of each worker's pipeline: auto (default), fp32 or bf16 (ts/models/precision.ts) */
  precision?: PrecisionChoice;
  /** load events of each device (load-start, load-retry, load-done) */
  onProgress?: (e: PoolEvent) => void;
}

export interface Device {
  /** e.g. "cpu#0" */
  label: string;
  config: DeviceConfig;
  /** filled once the worker has loaded the model */
  backendInfo?: BackendInfo;
}

export type PoolEvent =
  | { status: 'task-start'; task: number; label: string; device: string; attempt: number }
  | { status: 'task-done'; task: number; label: string; device: string; ms: number }
  | { status: 'task-retry'; task: number; label: string; device: string; error: string }
  | { status: 'pass'; index: number; count: number; label: string; tasks: number }
  | { status: 'load-start'; device: string; attempt: number }
  | { status: 'load-retry'; device: string; attempt: number; error: string }
  | { status: 'load-done'; device: string; ms: number }
  | { status: 'image-skipped'; index: number; file: string }
  | { status: 'worker'; task: number; device: string; event: ProgressEvent };

export interface RenderJob {
  prompt: string;
  seed?: number;
  negativePrompt?: string;
  width?: number;
  height?: number;
  steps?: number;
  guidanceScale?: number;
  /** LoRA adapters for this image (paths resolved against the working directory), none by default */
  lora?: { path: string; scale: number }[];
}

export interface RenderOptions extends Pick<GenerateOptions, 'steps' | 'guidanceScale' | 'width' | 'height' | 'decode' | 'scheduler'> {
  outDir: string;
  /** seed of job i when it names none: seed + i (default 0) */
  seed?: number;
  signal?: AbortSignal;
  onProgress?: (e: PoolEvent) => void;
}

export interface RenderSummary {
  rendered: string[];
  skipped: string[];
  wallMs: number;
  perDevice: { device: string; images: number; busyMs: number; imagesPerMinute: number }[];
}

type Reply<T> = { result: T } | { error: { code: SanaErrorCode; message: string } };

/** Worker errors that another device may not repeat (a crash, memory, native failure); the rest are the input's fault. */
const RETRYABLE: SanaErrorCode[] = ['ERR_SANA_NATIVE', 'ERR_SANA_OUT_OF_MEMORY'];

interface TaskSpec {
  label: string;
  make: () => { task: PoolTask; transferList?: TransferListItem[]; settled?: Promise<void>; close?: () => void };
}

export function parseDevices(spec: string | string[] | undefined, threadsPerWorker?: number): Device[] {
  const cores = availableParallelism();
  const gpus = deviceCount('cuda');
  const byDefault = gpus > 0 ? Array.from({ length: gpus }, (_, i) => `cuda:${i}`) : Array<string>(Math.max(1, Math.floor(cores / 2))).fill('cpu');
  const names = spec === undefined ? byDefault : (typeof spec === 'string' ? spec.split(',') : spec).map((s) => s.trim());
  if (names.length === 0 || names.some((n) => n === '')) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a list of devices (e.g. cpu,cpu) for devices but received ${describeValue(spec)}`);
  const parsed = names.map(parseDevice);
  const cpus = parsed.filter((d) => d.name === 'cpu').length;
  if (threadsPerWorker !== undefined && !(Number.isInteger(threadsPerWorker) && threadsPerWorker >= 1))
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a positive integer for threadsPerWorker but received ${describeValue(threadsPerWorker)}`);
  const share = threadsPerWorker ?? Math.max(1, Math.floor(cores / Math.max(cpus, 1)));
  const counts = new Map<string, number>();
  const probes = probeBackends();
  return parsed.map((d) => {
    const probe = probes.find((p) => p.name === d.name)!;
    if (!probe.available) throw new SanaError('ERR_SANA_BACKEND_UNAVAILABLE', `device ${d.label} is unavailable: ${probe.reason}`);
    const count = deviceCount(d.name);
    if (d.device >= count) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a device ${d.name}:0..${d.name}:${count - 1} (this machine has ${count}) but received ${d.label}`);
    const k = counts.get(d.label) ?? 0;
    counts.set(d.label, k + 1);
    return { label: `${d.label}#${k}`, config: { backend: d.name, device: d.device, threads: d.name === 'cpu' ? share : 1 } };
  });
}

/** The file name of image `index` of a batch of `count`: `<index>-seed<seed>-<prompt slug>.png` (the index
 * 1-based, zero-padded to at least 4 digits), the same wherever the batch is rendered. */
export function renderFileName(index: number, count: number, seed: number, prompt: string): string {
  return `${String(index + 1).padStart(Math.max(4, String(count).length), '0')}-seed${seed}-${slug(prompt)}.png`;
}

export async function createSanaPool(opts: SanaPoolOptions = {}): Promise<SanaPool> {
  const devices = parseDevices(opts.devices, opts.threadsPerWorker);
  const maxAttempts = opts.maxAttempts ?? 3;
  if (!(Number.isInteger(maxAttempts) && maxAttempts >= 1)) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a positive integer for maxAttempts but received ${describeValue(opts.maxAttempts)}`);
  if (opts.dtype !== undefined && !['auto', 'bf16', 'f16'].includes(opts.dtype))
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected one of auto, bf16, f16 for dtype but received ${describeValue(opts.dtype)}`);
  const kind = opts.kind ?? 'pipeline';
  const dir = opts.model ?? demoModelDir();
  const vaeDir = kind === 'vae' ? dir : join(dir, 'vae');
  const vaeConfig = readAutoencoderDcConfig(ConfigReader.load(vaeDir));
  const precision = opts.precision === undefined ? undefined : checkPrecision(opts.precision);
  const model: ModelRef = { kind, dir, weightDtype: opts.dtype === 'auto' ? undefined : opts.dtype, precision };
  const pool = new SanaPool(devices, model, vaeConfig, maxAttempts);
  try {
    await pool.load({ onProgress: opts.onProgress });
    return pool;
  } catch (e) {
    await pool.dispose();
    throw e;
  }
}

export class SanaPool {
  private readonly workers: Piscina[];
  private disposed = false;

  constructor(
    readonly devices: Device[],
    readonly model: ModelRef,
    /** the decoder's config (read on the main thread to plan shards) */
    readonly vaeConfig: AutoencoderDcConfig,
    readonly maxAttempts: number,
  ) {
    this.workers = devices.map((_, d) => this.startWorker(d));
  }

  private startWorker(d: number): Piscina {
    const filename = join(packageRoot(), 'dist', 'ts', 'pool', 'pool-worker.js');
    const w = new Piscina({ filename, workerData: this.devices[d].config, minThreads: 1, maxThreads: 1, idleTimeout: Infinity });
    // piscina does not replace a worker that dies before it is ready (e.g. killed while starting, right after an
    // abort replaced it), and the tasks queued for it then wait forever: give the device a fresh piscina, and
    // destroying the old one rejects those tasks, so that they are retried
    w.on('workerDestroy', () => setImmediate(() => {
      if (this.disposed || this.workers[d] !== w || w.threads.length > 0) return;
      this.workers[d] = this.startWorker(d);
      void w.destroy();
    }));
    return w;
  }

  /** Live worker threads (0 after dispose). */
  get threadCount(): number {
    return this.workers.reduce((n, w) => n + w.threads.length, 0);
  }

  /**
   * Loads the model on every device (again with `force`, e.g. after its files changed on disk). A worker that
   * dies while loading is replaced and the load tried again, up to maxAttempts, then the call fails with
   * ERR_SANA_WORKER_FAILED naming the device; a broken model folder fails at once (every try would).
   */
  async load(opts: { force?: boolean; onProgress?: (e: PoolEvent) => void } = {}): Promise<void> {
    await Promise.all(this.devices.map(async (dev, d) => {
      for (let attempt = 1; ; attempt++) {
        const t0 = performance.now();
        const loading = this.runOn<{ backendInfo: BackendInfo }>(d, { type: 'load', model: this.model, force: opts.force });
        opts.onProgress?.({ status: 'load-start', device: dev.label, attempt });
        try {
          dev.backendInfo = (await loading).backendInfo;
          opts.onProgress?.({ status: 'load-done', device: dev.label, ms: performance.now() - t0 });
          return;
        } catch (e) {
          if (e instanceof SanaError && !RETRYABLE.includes(e.code)) throw e;
          const message = (e as Error).message;
          if (attempt >= this.maxAttempts)
            throw new SanaError('ERR_SANA_WORKER_FAILED', `${dev.label}: loading ${this.model.dir} failed ${attempt} time(s): ${message}`, { cause: e });
          opts.onProgress?.({ status: 'load-retry', device: dev.label, attempt, error: message });
        }
      }
    }));
  }

  /** Terminates a device's worker as a crash would (fault drills and tests); its task is retried elsewhere. */
  async terminateWorker(device: number): Promise<void> {
    await this.workers[device]?.threads[0]?.terminate();
  }

  /**
   * Decodes latents z [B, C, h, w] (already divided by the scaling factor, as AutoencoderDC.decode takes them)
   * with the work spread over the devices: 'sharded' (default; exact, each pass's shards are tasks) or 'tiled'
   * (diffusers' tiled decode: each tile is a task, the blend runs here). Returns [B, 3, h·f, w·f].
   */
  async decode(
    z: Float32Array, shape: readonly [number, number, number, number],
    opts: ShardOptions & { mode?: 'sharded' | 'tiled'; tiling?: TilingOptions; signal?: AbortSignal; onProgress?: (e: PoolEvent) => void } = {},
  ): Promise<Float32Array> {
    const { signal, onProgress, mode = 'sharded', tiling, ...shard } = opts;
    if (mode === 'tiled') {
      if (!tiling) throw new SanaError('ERR_SANA_INVALID_OPTION', "Expected tile sizes for tiling with mode 'tiled' but received undefined");
      const f = 2 ** (this.vaeConfig.decoderBlockOutChannels.length - 1);
      checkTiling(tiling, f);
      const rows = latentTiles(z, shape, f, tiling);
      const flat = rows.flat();
      onProgress?.({ status: 'pass', index: 0, count: 1, label: 'tiles', tasks: flat.length });
      const specs = flat.map((t, i): TaskSpec => ({ label: `tile ${i + 1}/${flat.length}`, make: () => ({ task: { type: 'tile', model: this.model, z: t.z, shape: t.shape } }) }));
      const decoded = await this.schedule<Float32Array>(specs, { signal, onEvent: onProgress });
      let k = 0;
      return blendTiles(rows.map((row) => row.map(() => decoded[k++])), shape, f, this.vaeConfig.inChannels, tiling);
    }
    if (mode !== 'sharded') throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected sharded or tiled for mode but received ${describeValue(mode)}`);
    return shardedDecode(this.vaeConfig, z, shape, async (tasks, pass) => {
      onProgress?.({ status: 'pass', index: pass.index, count: pass.count, label: pass.label, tasks: tasks.length });
      const specs = tasks.map((task, i): TaskSpec => ({ label: `${pass.label} shard ${i + 1}/${tasks.length}`, make: () => ({ task: { type: 'shard', model: this.model, task } }) }));
      return this.schedule<Float32Array | null>(specs, { signal, onEvent: onProgress });
    }, { minShards: this.devices.length, ...shard });
  }

  /** Renders jobs into outDir as `<index>-seed<seed>-<slug>.png`; files already there are skipped (resume). */
  async render(jobs: RenderJob[], opts: RenderOptions): Promise<RenderSummary> {
    if (this.model.kind !== 'pipeline') throw new SanaError('ERR_SANA_INVALID_OPTION', 'render needs a pool created with a pipeline folder');
    if (typeof opts.outDir !== 'string' || opts.outDir === '') throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a folder for outDir but received ${describeValue(opts.outDir)}`);
    const t0 = performance.now();
    const { outDir, seed = 0, signal, onProgress, ...common } = opts;
    const summary: RenderSummary = { rendered: [], skipped: [], wallMs: 0, perDevice: this.devices.map((d) => ({ device: d.label, images: 0, busyMs: 0, imagesPerMinute: 0 })) };
    const todo: { index: number; file: string; job: RenderJob; seed: number }[] = [];
    jobs.forEach((job, index) => {
      const s = job.seed ?? seed + index;
      const file = join(outDir, renderFileName(index, jobs.length, s, job.prompt));
      if (existsSync(file)) {
        summary.skipped.push(file);
        onProgress?.({ status: 'image-skipped', index, file });
      } else todo.push({ index, file, job, seed: s });
    });
    const devices = new Array<string>(todo.length);
    const specs = todo.map(({ index, file, job, seed: s }, t): TaskSpec => ({
      label: `image ${index + 1} (${JSON.stringify(job.prompt)})`,
      make: () => {
        const { port1, port2 } = new MessageChannel();
        let closed!: () => void;
        const settled = new Promise<void>((r) => (closed = r));
        // progress and the reply travel on different channels: the worker's end marker says all progress is in
        port1.on('message', (event: ProgressEvent | { status: 'end' }) => (event.status === 'end' ? closed() : onProgress?.({ status: 'worker', task: t, device: devices[t], event })));
        const { prompt, seed: _, lora = [], ...overrides } = job;
        const options = { ...common, ...overrides, seed: s };
        return { task: { type: 'render', model: this.model, prompt, options, lora, file, port: port2 }, transferList: [port2], settled: settled.finally(() => port1.close()), close: () => port1.close() };
      },
    }));
    await this.schedule<{ timings: Timings }>(specs, {
      signal,
      onEvent: (e) => {
        if (e.status === 'task-start') devices[e.task] = e.device;
        if (e.status === 'task-done') {
          const d = summary.perDevice.find((p) => p.device === e.device)!;
          d.images++;
          d.busyMs += e.ms;
          summary.rendered.push(todo[e.task].file);
        }
        onProgress?.(e);
      },
    });
    summary.wallMs = performance.now() - t0;
    for (const d of summary.perDevice) d.imagesPerMinute = d.busyMs > 0 ? (d.images * 60000) / d.busyMs : 0;
    return summary;
  }

  /** Runs one task on one device (no retry): loading, and the building block of schedule(). */
  async runOn<T>(device: number, task: PoolTask, extra: { transferList?: TransferListItem[]; signal?: AbortSignal } = {}): Promise<T> {
    if (this.disposed) throw new SanaError('ERR_SANA_DISPOSED', 'the pool was disposed');
    const reply = (await this.workers[device].run(task, { transferList: extra.transferList, signal: extra.signal })) as Reply<T>;
    if ('error' in reply) throw new SanaError(reply.error.code, `${this.devices[device].label}: ${reply.error.message}`);
    return reply.result;
  }

  /**
   * Runs tasks on the devices, each free device taking the next task. A failure that a retry may cure (a crashed
   * worker, a native or memory error) sends the task to another device (the same one only in a one-device pool),
   * up to maxAttempts tries; any other failure, or the last try, rejects the run with an error naming the task.
   */
  private async schedule<T>(specs: TaskSpec[], opts: { signal?: AbortSignal; onEvent?: (e: PoolEvent) => void }): Promise<T[]> {
    if (this.disposed) throw new SanaError('ERR_SANA_DISPOSED', 'the pool was disposed');
    if (opts.signal?.aborted) throw new SanaError('ERR_SANA_ABORTED', 'the run was aborted');
    const results = new Array<T>(specs.length);
    const queue = specs.map((_, i) => ({ i, attempt: 0, avoid: -1 }));
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let failure: Error | null = null;
    let running = 0;
    let wake!: () => void;
    let changed = new Promise<void>((r) => (wake = r));
    const notify = () => {
      wake();
      changed = new Promise<void>((r) => (wake = r));
    };
    const n = this.devices.length;
    const loop = async (d: number) => {
      const device = this.devices[d].label;
      for (;;) {
        if (failure || stop.signal.aborted) return;
        const k = queue.findIndex((q) => q.avoid !== d || n === 1);
        if (k < 0) {
          if (queue.length === 0 && running === 0) return;
          await Promise.race([changed, new Promise((r) => stop.signal.addEventListener('abort', r, { once: true }))]);
          continue;
        }
        const item = queue.splice(k, 1)[0];
        const spec = specs[item.i];
        running++;
        const t0 = performance.now();
        const made = spec.make();
        opts.onEvent?.({ status: 'task-start', task: item.i, label: spec.label, device, attempt: item.attempt + 1 });
        try {
          results[item.i] = await this.runOn<T>(d, made.task, { transferList: made.transferList, signal: stop.signal });
          await made.settled;
          opts.onEvent?.({ status: 'task-done', task: item.i, label: spec.label, device, ms: performance.now() - t0 });
        } catch (e) {
          made.close?.();
          if (stop.signal.aborted) return;
          const err = e as Error & { code?: string };
          const retryable = !(e instanceof SanaError) || RETRYABLE.includes(e.code);
          if (retryable && item.attempt + 1 < this.maxAttempts) {
            opts.onEvent?.({ status: 'task-retry', task: item.i, label: spec.label, device, error: err.message });
            queue.unshift({ i: item.i, attempt: item.attempt + 1, avoid: d });
          } else {
            failure = retryable
              ? new SanaError('ERR_SANA_WORKER_FAILED', `task ${spec.label} failed ${item.attempt + 1} time(s), last on ${device}: ${err.message}`, { cause: e })
              : new SanaError(e instanceof SanaError ? e.code : 'ERR_SANA_NATIVE', `task ${spec.label}: ${err.message}`, { cause: e });
            stop.abort();
          }
        } finally {
          running--;
          notify();
        }
      }
    };
    try {
      await Promise.all(this.devices.map((_, d) => loop(d)));
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
    if (failure) throw failure;
    if (opts.signal?.aborted) throw new SanaError('ERR_SANA_ABORTED', 'the run was aborted');
    return results;
  }

  /** Ends every worker (and with them the loaded models). */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await Promise.all(this.workers.map((w) => w.destroy()));
    // piscina may start the replacement of a worker terminated by an abort while destroy() runs: end it too
    for (let i = 0; i < 50 && this.threadCount > 0; i++) {
      await Promise.all(this.workers.flatMap((w) => w.threads.map((t) => t.terminate())));
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** Render jobs from a text file (one prompt per line; blank lines and # comments skipped) or JSON Lines
 * ({"prompt": ..., "seed"?, "negativePrompt"?, "width"?, "height"?, "steps"?, "guidanceScale"?} per line). */
export function readRenderJobs(file: string): RenderJob[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new SanaError('ERR_SANA_INVALID_OPTION', `cannot read the prompts file ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const jsonl = file.endsWith('.jsonl');
  const jobs: RenderJob[] = [];
  const keys: Record<string, 'string' | 'number' | 'lora'> = { prompt: 'string', seed: 'number', negativePrompt: 'string', width: 'number', height: 'number', steps: 'number', guidanceScale: 'number', lora: 'lora' };
  text.split(/\r?\n/).forEach((line, i) => {
    const where = `${file}:${i + 1}`;
    if (line.trim() === '' || (!jsonl && line.trimStart().startsWith('#'))) return;
    if (!jsonl) return void jobs.push({ prompt: line.trim() });
    let job: unknown;
    try {
      job = JSON.parse(line);
    } catch (e) {
      throw new SanaError('ERR_SANA_INVALID_OPTION', `${where}: not valid JSON (${(e as Error).message})`);
    }
    if (typeof job !== 'object' || job === null || Array.isArray(job)) throw new SanaError('ERR_SANA_INVALID_OPTION', `${where}: Expected a JSON object but received ${describeValue(job)}`);
    for (const [k, v] of Object.entries(job)) {
      if (!(k in keys)) throw new SanaError('ERR_SANA_INVALID_OPTION', `${where}: unknown key ${JSON.stringify(k)} (known: ${Object.keys(keys).join(', ')})`);
      if (keys[k] === 'lora') {
        if (!Array.isArray(v) || !v.every((e) => typeof e === 'string'))
          throw new SanaError('ERR_SANA_INVALID_OPTION', `${where}: Expected an array of "file[:scale]" strings for lora but received ${describeValue(v)}`);
        try {
          (job as RenderJob).lora = v.map((e) => parseLoraSpec(e)).map((l) => ({ ...l, path: resolve(l.path) }));
        } catch (e) {
          throw new SanaError('ERR_SANA_INVALID_OPTION', `${where}: ${(e as Error).message}`);
        }
      } else if (typeof v !== keys[k]) throw new SanaError('ERR_SANA_INVALID_OPTION', `${where}: Expected a ${keys[k]} for ${k} but received ${describeValue(v)}`);
    }
    if (typeof (job as RenderJob).prompt !== 'string') throw new SanaError('ERR_SANA_INVALID_OPTION', `${where}: Expected a string for prompt but received undefined`);
    jobs.push(job as RenderJob);
  });
  if (jobs.length === 0) throw new SanaError('ERR_SANA_INVALID_OPTION', `${file} holds no prompts`);
  return jobs;
}

/** Lower-case words of the prompt joined by '-', at most 48 characters. */
export function slug(prompt: string): string {
  return prompt.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 48).replace(/-+$/, '') || 'image';
}
