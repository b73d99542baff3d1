/**
 * The render farm's producer side: submit a batch (one BullMQ job per image), follow it (QueueEvents) and
 * write the images it receives, report a batch's state, cancel it.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { Job, QueueEvents, type JobState, type Queue } from 'bullmq';

import { SanaError } from '../errors.js';
import type { RenderJob } from '../pool/sana-pool.js';
import { batchJobs, batchKeys, checkBatchName, connect, openQueue, QUEUE_NAME, type BatchOptions, type FarmConnection, type RenderJobData, type RenderJobProgress, type RenderJobResult } from './queue.js';

export interface FarmClientOptions {
  /** redis://host:port[/db] */
  redis: string;
  /** how long a lost Redis connection is waited for before ERR_SANA_QUEUE (default 60 s) */
  maxDownMs?: number;
  /** connection reports (lost, back), one line each; default: stderr */
  report?: (line: string) => void;
}

export interface EnqueueOptions extends FarmClientOptions, BatchOptions {
  /** the batch name (job ids, --status, --cancel) */
  name: string;
  prompts: RenderJob[];
  /** tries per image for failures a retry may cure (default 3), with exponential backoff from 2 s */
  attempts?: number;
}

/** A connection whose give-up rejects `failed` (and so whatever awaits it). */
function client(opts: FarmClientOptions): { conn: FarmConnection; failed: Promise<never> } {
  let fail!: (e: SanaError) => void;
  const failed = new Promise<never>((_, reject) => (fail = reject));
  failed.catch(() => {});
  const conn = connect(opts.redis, { report: opts.report ?? ((l) => process.stderr.write(`sana: ${l}\n`)), maxDownMs: opts.maxDownMs ?? 60_000, onGiveUp: fail });
  return { conn, failed };
}

async function withQueue<T>(opts: FarmClientOptions, fn: (queue: Queue<RenderJobData, RenderJobResult>, conn: FarmConnection, failed: Promise<never>) => Promise<T>): Promise<T> {
  const { conn, failed } = client(opts);
  const queue = openQueue(conn);
  queue.on('error', () => {}); // connection errors: reported by the watch
  try {
    return await Promise.race([fn(queue, conn, failed), failed]);
  } finally {
    await queue.close().catch(() => {});
    await conn.close();
  }
}

/** Adds the batch's jobs; ids are deterministic, so a job already there (waiting, done or failed) is not added again. */
export async function enqueueRender(opts: EnqueueOptions): Promise<{ name: string; jobs: number; added: number; ids: string[] }> {
  const name = checkBatchName(opts.name);
  const { prompts, attempts = 3 } = opts;
  if (!Array.isArray(prompts) || prompts.length === 0) throw new SanaError('ERR_SANA_INVALID_OPTION', 'Expected at least one prompt for prompts');
  const jobs = batchJobs(name, prompts, opts);
  return withQueue(opts, async (queue, conn) => {
    const keys = batchKeys(name);
    await conn.client.del(keys.cancelled);
    await conn.client.sadd(keys.jobs, ...jobs.map((j) => j.id));
    let added = 0;
    for (const j of jobs) {
      if (await queue.getJob(j.id)) continue;
      await queue.add(j.data.fileName, j.data, { jobId: j.id, attempts, backoff: { type: 'exponential', delay: 2000 }, removeOnComplete: false, removeOnFail: false });
      added++;
    }
    return { name, jobs: jobs.length, added, ids: jobs.map((j) => j.id) };
  });
}

export interface BatchStatus {
  name: string;
  jobs: number;
  cancelled: boolean;
  counts: Partial<Record<JobState | 'unknown', number>>;
  failed: { id: string; reason: string }[];
}

/** The state of every job of a batch. */
export async function batchStatus(opts: FarmClientOptions & { name: string }): Promise<BatchStatus> {
  const name = checkBatchName(opts.name);
  return withQueue(opts, async (queue, conn) => {
    const keys = batchKeys(name);
    const ids = (await conn.client.smembers(keys.jobs)).sort();
    if (ids.length === 0) throw new SanaError('ERR_SANA_INVALID_OPTION', `no batch named ${name} in queue ${QUEUE_NAME}`);
    const counts: BatchStatus['counts'] = {};
    const failed: BatchStatus['failed'] = [];
    for (const id of ids) {
      const state = await queue.getJobState(id);
      counts[state] = (counts[state] ?? 0) + 1;
      if (state === 'failed') failed.push({ id, reason: (await queue.getJob(id))?.failedReason ?? '' });
    }
    return { name, jobs: ids.length, cancelled: (await conn.client.exists(keys.cancelled)) === 1, counts, failed };
  });
}

/** Removes the batch's jobs that have not started and flags the batch, so that workers stop the ones running. */
export async function cancelBatch(opts: FarmClientOptions & { name: string }): Promise<{ removed: number; stopping: number; finished: number }> {
  const name = checkBatchName(opts.name);
  return withQueue(opts, async (queue, conn) => {
    const keys = batchKeys(name);
    const ids = await conn.client.smembers(keys.jobs);
    if (ids.length === 0) throw new SanaError('ERR_SANA_INVALID_OPTION', `no batch named ${name} in queue ${QUEUE_NAME}`);
    await conn.client.set(keys.cancelled, '1');
    let removed = 0;
    let stopping = 0;
    let finished = 0;
    for (const id of ids) {
      const state = await queue.getJobState(id);
      if (state === 'active') stopping++;
      else if (state === 'completed' || state === 'failed' || state === 'unknown') finished++;
      else {
        await queue.remove(id);
        removed++;
      }
    }
    return { removed, stopping, finished };
  });
}

export interface WaitOptions extends FarmClientOptions {
  name: string;
  /** where the images land: those received inline are written here, those in the shared folder copied */
  outDir: string;
  onProgress?: (e: { status: 'progress'; id: string; fileName: string; progress: RenderJobProgress } | { status: 'done'; id: string; fileName: string; result: RenderJobResult; done: number; total: number } | { status: 'failed'; id: string; fileName: string; reason: string; done: number; total: number }) => void;
  signal?: AbortSignal;
}

/** Follows a batch until every job is completed or failed; writes each image (a temporary name, then renamed). */
export async function waitForBatch(opts: WaitOptions): Promise<{ written: string[]; failed: { id: string; reason: string }[] }> {
  const name = checkBatchName(opts.name);
  return withQueue(opts, async (queue, conn, failedConnection) => {
    const ids = new Set(await conn.client.smembers(batchKeys(name).jobs));
    if (ids.size === 0) throw new SanaError('ERR_SANA_INVALID_OPTION', `no batch named ${name} in queue ${QUEUE_NAME}`);
    mkdirSync(opts.outDir, { recursive: true });
    const events = new QueueEvents(QUEUE_NAME, { connection: conn.connection });
    events.on('error', () => {});
    const written: string[] = [];
    const failed: { id: string; reason: string }[] = [];
    const settled = new Set<string>();
    const names = new Map<string, string>();
    let finish!: () => void;
    const all = new Promise<void>((r) => (finish = r));
    const fileOf = async (id: string) => names.get(id) ?? (await queue.getJob(id))?.data.fileName ?? id;
    const cancelled = batchKeys(name).cancelled;
    const settle = async (id: string, lookups = 0): Promise<void> => {
      if (settled.has(id)) return;
      const job = await Job.fromId<RenderJobData, RenderJobResult>(queue, id);
      const state = job ? await job.getState() : 'unknown';
      if (state !== 'completed' && state !== 'failed' && state !== 'unknown') return;
      // a job found nowhere was removed: by --cancel (flagged), or else by hand; a lookup that misses a job
      // in passing between two states (seen once under load) is not taken for a removal
      if (state === 'unknown' && !(await conn.client.exists(cancelled)) && lookups < 10) {
        setTimeout(() => void settle(id, lookups + 1), 500);
        return;
      }
      if (settled.has(id)) return;
      settled.add(id);
      const fileName = job?.data.fileName ?? id;
      if (state === 'completed' && job) {
        written.push(writeImage(opts.outDir, job.returnvalue));
        opts.onProgress?.({ status: 'done', id, fileName, result: job.returnvalue, done: settled.size, total: ids.size });
      } else {
        const reason = state === 'failed' ? job!.failedReason : `the job was removed${(await conn.client.exists(cancelled)) ? ` (batch ${name} was cancelled)` : ''}`;
        failed.push({ id, reason });
        opts.onProgress?.({ status: 'failed', id, fileName, reason, done: settled.size, total: ids.size });
      }
      if (settled.size === ids.size) finish();
    };
    const onAbort = () => finish();
    opts.signal?.addEventListener('abort', onAbort);
    try {
      events.on('progress', ({ jobId, data }) => {
        if (!ids.has(jobId)) return;
        void fileOf(jobId).then((fileName) => {
          names.set(jobId, fileName);
          opts.onProgress?.({ status: 'progress', id: jobId, fileName, progress: data as unknown as RenderJobProgress });
        });
      });
      const onEnd = ({ jobId }: { jobId: string }) => void (ids.has(jobId) && settle(jobId));
      events.on('completed', onEnd);
      events.on('failed', onEnd);
      events.on('removed', onEnd);
      await events.waitUntilReady();
      for (const id of ids) await settle(id); // the ones already finished before we listened
      await Promise.race([all, failedConnection]);
      if (opts.signal?.aborted) throw new SanaError('ERR_SANA_ABORTED', `stopped following batch ${name} (its jobs go on)`);
      return { written, failed };
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      await events.close().catch(() => {});
    }
  });
}

/** Writes a received image into outDir (whole or absent: a temporary name, then renamed); returns its path. */
function writeImage(outDir: string, r: RenderJobResult): string {
  const file = join(outDir, r.fileName);
  const bytes = r.png !== undefined ? Buffer.from(r.png, 'base64') : readFileSync(r.path!);
  if (r.path === file) return file;
  const partial = `${file}.partial-${process.pid}`;
  writeFileSync(partial, bytes);
  renameSync(partial, file);
  return file;
}
