/**
 * The render farm's worker side: one BullMQ Worker whose jobs go to a SanaPool (one loaded pipeline per
 * device, as many jobs at once as devices). Each job reports its steps (job.updateProgress) and returns the
 * PNG inline or as a file in the shared output folder (written under a temporary name, then renamed). A
 * failure a retry may cure is thrown for BullMQ to retry with backoff; any other SanaError fails the job at
 * once (UnrecoverableError) with its code and message as the failure reason. A worker process that dies is
 * recovered by BullMQ's stalled-job check: its job is rendered again elsewhere, to the same bytes.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

import { UnrecoverableError, Worker, type Job } from 'bullmq';

import { SanaError, type SanaErrorCode } from '../errors.js';
import { createSanaPool, renderFileName, type SanaPool, type SanaPoolOptions } from '../pool/sana-pool.js';
import { batchKeys, connect, QUEUE_NAME, type RenderJobData, type RenderJobProgress, type RenderJobResult } from './queue.js';

/** Failures that another try (here or on another worker) may cure. */
const RETRYABLE: SanaErrorCode[] = ['ERR_SANA_NATIVE', 'ERR_SANA_OUT_OF_MEMORY', 'ERR_SANA_WORKER_FAILED'];

export interface RenderWorkerOptions extends Pick<SanaPoolOptions, 'model' | 'devices' | 'threadsPerWorker' | 'precision'> {
  redis: string;
  /** the shared output folder (e.g. a network mount) for images returned as files: <outDir>/<batch>/<file name> */
  outDir?: string;
  /** 'auto' (the default with outDir): inline up to inlineMaxBytes, else a file; 'inline' (the default without); 'file' */
  result?: 'auto' | 'inline' | 'file';
  /** default 2 MiB */
  inlineMaxBytes?: number;
  /** how long a job's lock lives without renewal; a dead worker's job is taken over after about this (default 30 s) */
  lockDurationMs?: number;
  /** how often the stalled-job check runs (default 30 s) */
  stalledIntervalMs?: number;
  maxDownMs?: number;
  report?: (line: string) => void;
}

export interface RenderWorker {
  readonly name: string;
  readonly pool: SanaPool;
  /** resolves when the worker stopped: closed, or the Redis connection given up on (rejects then) */
  readonly stopped: Promise<void>;
  /** stops taking jobs, lets the running ones finish, closes the worker and the pool */
  close(): Promise<void>;
}

/** Sends every value, except that while one send is in flight only the latest value waits for the next: each
 * step's progress goes out when Redis keeps up, and steps faster than a round trip never queue up. */
function latestOnly<T>(send: (v: T) => Promise<unknown>): { send(v: T): void } {
  let busy = false;
  let next: { v: T } | null = null;
  const go = (v: T) => {
    busy = true;
    void send(v).catch(() => {}).finally(() => {
      busy = false;
      if (next) {
        const n = next.v;
        next = null;
        go(n);
      }
    });
  };
  return { send: (v) => (busy ? (next = { v }) : go(v)) };
}

export async function startRenderWorker(opts: RenderWorkerOptions): Promise<RenderWorker> {
  const { outDir, result = outDir ? 'auto' : 'inline', inlineMaxBytes = 2 * 2 ** 20 } = opts;
  if (!['auto', 'inline', 'file'].includes(result)) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected auto, inline or file for result but received ${JSON.stringify(result)}`);
  if (result !== 'inline' && !outDir) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a shared output folder (--out) for result ${result} (large images are written there)`);
  const report = opts.report ?? ((l: string) => process.stderr.write(`sana worker: ${l}\n`));
  let giveUp!: (e: SanaError) => void;
  const gaveUp = new Promise<never>((_, reject) => (giveUp = reject));
  gaveUp.catch(() => {});
  const conn = connect(opts.redis, { report, maxDownMs: opts.maxDownMs ?? 60_000, onGiveUp: (e) => giveUp(e) });
  let pool: SanaPool;
  try {
    pool = await createSanaPool({ model: opts.model, devices: opts.devices, threadsPerWorker: opts.threadsPerWorker, precision: opts.precision });
  } catch (e) {
    await conn.close();
    throw e;
  }
  const name = `${hostname()}-${process.pid}`;
  const scratch = mkdtempSync(join(tmpdir(), 'sana-worker-'));

  const renderJob = async (job: Job<RenderJobData, RenderJobResult>): Promise<RenderJobResult> => {
    const d = job.data;
    const cancelled = batchKeys(d.batch).cancelled;
    const abort = new AbortController();
    const isCancelled = async () => (await conn.client.exists(cancelled)) === 1;
    if (await isCancelled()) throw new UnrecoverableError(`ERR_SANA_ABORTED: batch ${d.batch} was cancelled`);
    let lastCancelCheck = performance.now();
    const progress = latestOnly((p: RenderJobProgress) => job.updateProgress(p as unknown as object));
    // a batch's files go to a folder of its own: two batches may name an image alike. A job delivered twice
    // renders the same bytes again and replaces the file whole (rename), so a reader never sees a mix
    const target = outDir ? join(outDir, d.batch, d.fileName) : undefined;
    const dir = join(scratch, job.id!);
    rmSync(dir, { recursive: true, force: true });
    try {
      const { lora, options, prompt } = d;
      const { seed, decode, negativePrompt, width, height, steps, guidanceScale } = options;
      await pool.render([{ prompt, seed, lora, negativePrompt, width, height, steps, guidanceScale }], {
        outDir: dir,
        decode,
        signal: abort.signal,
        onProgress: (e) => {
          if (e.status !== 'worker' || e.event.status !== 'step') return;
          progress.send({ step: e.event.step, totalSteps: e.event.totalSteps });
          // the cancel flag is looked at once a second, not per step (a Redis round trip each)
          if (performance.now() - lastCancelCheck < 1000) return;
          lastCancelCheck = performance.now();
          void isCancelled().then((c) => c && abort.abort(), () => {});
        },
      });
      const rendered = join(dir, renderFileName(0, 1, seed, prompt));
      const png = readFileSync(rendered);
      if (result === 'inline' || (result === 'auto' && png.length <= inlineMaxBytes)) return { ...resultOf(d.fileName, png), png: png.toString('base64') };
      mkdirSync(dirname(target!), { recursive: true });
      const partial = `${target}.partial-${name}`;
      copyFileSync(rendered, partial);
      renameSync(partial, target!);
      return resultOf(d.fileName, png, target);
    } catch (e) {
      if (abort.signal.aborted) throw new UnrecoverableError(`ERR_SANA_ABORTED: batch ${d.batch} was cancelled`);
      if (e instanceof SanaError && !RETRYABLE.includes(e.code)) throw new UnrecoverableError(`${e.code}: ${e.message}`);
      throw e;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const resultOf = (fileName: string, png: Buffer, path?: string): RenderJobResult => ({ fileName, bytes: png.length, sha256: createHash('sha256').update(png).digest('hex'), ...(path ? { path } : {}), worker: name });

  const worker = new Worker<RenderJobData, RenderJobResult>(QUEUE_NAME, renderJob, {
    connection: conn.connection,
    name,
    concurrency: pool.devices.length,
    lockDuration: opts.lockDurationMs ?? 30_000,
    stalledInterval: opts.stalledIntervalMs ?? 30_000,
    maxStalledCount: 2,
  });
  worker.on('error', () => {}); // connection errors: reported by the watch
  worker.on('active', (job) => report(`rendering ${job.data.fileName} (job ${job.id}, try ${job.attemptsMade + 1})`));
  worker.on('completed', (job) => report(`done ${job.data.fileName} (job ${job.id})`));
  worker.on('failed', (job, err) => report(`failed ${job?.data.fileName ?? '?'} (job ${job?.id}): ${err.message}`));

  let closing: Promise<void> | undefined;
  let markStopped!: () => void;
  const close = () =>
    (closing ??= (async () => {
      await worker.close();
      await pool.dispose();
      await conn.close();
      rmSync(scratch, { recursive: true, force: true });
      markStopped();
    })());
  const stopped = new Promise<void>((resolve, reject) => {
    markStopped = resolve;
    gaveUp.catch((e) => void close().finally(() => reject(e)));
  });
  return { name, pool, stopped, close };
}
