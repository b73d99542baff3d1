// The render-farm commands: `sana render --queue` (submit, --wait, --status, --cancel) and `sana worker`.
import { basename } from 'node:path';

import { MultiBar, type SingleBar } from 'cli-progress';

import { SanaError } from '../errors.js';
import { batchStatus, cancelBatch, enqueueRender, waitForBatch } from '../farm/producer.js';
import { startRenderWorker } from '../farm/worker.js';
import type { PrecisionChoice } from '../models/precision.js';
import type { DecodeMode } from '../pipeline/pipeline-core.js';
import { readRenderJobs } from '../pool/sana-pool.js';

/** What `sana render` takes for a batch, rendered here or on a farm. */
export interface BatchCliOptions {
  out: string;
  size?: { width: number; height: number };
  steps?: number;
  guidance?: number;
  seed: number;
  decode?: 'auto' | DecodeMode;
  maxAttempts: number;
}

export interface QueueCliOptions extends BatchCliOptions {
  queue: string;
  name?: string;
  wait?: boolean;
  status?: string;
  cancel?: string;
  redisTimeout: number;
}

const say = (line: string) => process.stderr.write(`${line}\n`);

/** `sana render [prompts] --queue URL`: submit (and follow), or report / cancel a batch. */
export async function renderViaQueue(prompts: string | undefined, opts: QueueCliOptions): Promise<void> {
  const conn = { redis: opts.queue, maxDownMs: opts.redisTimeout * 1000, report: (l: string) => say(`sana: ${l}`) };
  if (opts.status) {
    const s = await batchStatus({ ...conn, name: opts.status });
    say(`batch ${s.name}: ${s.jobs} image(s)${s.cancelled ? ', cancelled' : ''}`);
    for (const [state, n] of Object.entries(s.counts)) say(`  ${state}: ${n}`);
    for (const f of s.failed) say(`  failed ${f.id}: ${f.reason}`);
    return;
  }
  if (opts.cancel) {
    const c = await cancelBatch({ ...conn, name: opts.cancel });
    say(`batch ${opts.cancel} cancelled: ${c.removed} waiting image(s) removed, ${c.stopping} running one(s) told to stop, ${c.finished} already finished`);
    return;
  }
  if (!prompts) throw new SanaError('ERR_SANA_INVALID_OPTION', 'Expected a prompts file (or --status NAME / --cancel NAME) with --queue');
  const name = opts.name ?? basename(prompts).replace(/\.[^.]*$/, '').replace(/[^A-Za-z0-9._-]+/g, '-');
  const jobs = readRenderJobs(prompts);
  const r = await enqueueRender({
    ...conn, name, prompts: jobs, seed: opts.seed, steps: opts.steps, guidanceScale: opts.guidance, width: opts.size?.width, height: opts.size?.height,
    decode: opts.decode, attempts: opts.maxAttempts,
  });
  say(`batch ${r.name}: ${r.added} of ${r.jobs} image(s) added to the queue (${r.jobs - r.added} already there)`);
  if (!opts.wait) return;
  await follow(conn, r.name, r.jobs, opts.out);
}

async function follow(conn: { redis: string; maxDownMs: number; report: (l: string) => void }, name: string, total: number, out: string): Promise<void> {
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const bars = new MultiBar({ format: '{name} |{bar}| {value}/{total} {unit}', stream: process.stderr, hideCursor: true, noTTYOutput: true, notTTYSchedule: 5000 });
  const overall = bars.create(total, 0, { name: 'all'.padEnd(28), unit: 'images' });
  const perImage = new Map<string, SingleBar>();
  const failures: string[] = [];
  try {
    const r = await waitForBatch({
      ...conn, name, outDir: out, signal: abort.signal,
      onProgress: (e) => {
        if (e.status === 'progress') {
          let bar = perImage.get(e.id);
          if (!bar) perImage.set(e.id, (bar = bars.create(e.progress.totalSteps, 0, { name: e.fileName.slice(0, 28).padEnd(28), unit: 'steps' })));
          bar.update(e.progress.step);
          return;
        }
        const bar = perImage.get(e.id);
        if (bar) bars.remove(bar);
        perImage.delete(e.id);
        overall.update(e.done);
        if (e.status === 'failed') failures.push(`failed ${e.fileName}: ${e.reason}`);
      },
    });
    bars.stop();
    failures.forEach((f) => say(f));
    say(`batch ${name}: ${r.written.length} image(s) in ${out}, ${r.failed.length} failed`);
    if (r.failed.length) throw new SanaError('ERR_SANA_WORKER_FAILED', `batch ${name}: ${r.failed.length} image(s) failed (first: ${r.failed[0].reason})`);
  } finally {
    bars.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export interface WorkerCliOptions {
  queue: string;
  model: string;
  devices?: string;
  out?: string;
  result?: 'auto' | 'inline' | 'file';
  inlineMaxBytes: number;
  threadsPerWorker?: number;
  precision?: PrecisionChoice;
  lockDuration: number;
  stalledInterval: number;
  redisTimeout: number;
}

/** `sana worker --queue URL`: renders the queue's jobs until SIGTERM/SIGINT (running jobs finish first). */
export async function workerCli(opts: WorkerCliOptions): Promise<void> {
  const w = await startRenderWorker({
    redis: opts.queue, model: opts.model, devices: opts.devices, outDir: opts.out, result: opts.result, inlineMaxBytes: opts.inlineMaxBytes,
    threadsPerWorker: opts.threadsPerWorker, precision: opts.precision, lockDurationMs: opts.lockDuration * 1000, stalledIntervalMs: opts.stalledInterval * 1000,
    maxDownMs: opts.redisTimeout * 1000,
  });
  say(`sana worker ${w.name}: ${w.pool.devices.map((d) => d.label).join(', ')} on ${opts.queue}${opts.out ? `, shared output ${opts.out}` : ''}; SIGTERM or Ctrl-C stops after the running jobs`);
  const stop = () => {
    say(`sana worker ${w.name}: stopping (running jobs finish first)`);
    void w.close();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await w.stopped;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  say(`sana worker ${w.name}: stopped`);
}
