/**
 * What the render farm's producer and workers share: the BullMQ queue, the jobs of a batch (one per image,
 * with a deterministic id, so submitting a batch twice adds nothing), the Redis keys beside the queue (a
 * batch's job ids, its cancel flag), and the Redis connection with a watch on it (a lost connection is
 * reported, waited for up to a bound, then a clear error). The queue itself is BullMQ's; nothing here
 * re-implements one.
 */
import { createHash } from 'node:crypto';

import { Queue, type ConnectionOptions } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';

import { describeValue, SanaError } from '../errors.js';
import { renderFileName, type RenderJob } from '../pool/sana-pool.js';
import type { GenerateOptions } from '../pipeline/pipeline-core.js';

export const QUEUE_NAME = 'sana-render';

/** Options every image of a batch shares (a prompt line's own values win). */
export type BatchOptions = Pick<GenerateOptions, 'steps' | 'guidanceScale' | 'width' | 'height' | 'decode'> & {
  /** seed of prompt i when its line names none: seed + i (default 0) */
  seed?: number;
};

/** A job's data: everything a worker needs to render the image, and the name it lands under. */
export interface RenderJobData {
  batch: string;
  index: number;
  fileName: string;
  prompt: string;
  options: Omit<GenerateOptions, 'signal' | 'onProgress' | 'seed'> & { seed: number };
  lora: { path: string; scale: number }[];
}

/** A job's result: the PNG itself (small images) or where it was written in the shared output folder. */
export interface RenderJobResult {
  fileName: string;
  bytes: number;
  sha256: string;
  /** base64 PNG, when it was at most the worker's inline limit */
  png?: string;
  /** the file in the worker's shared --out folder otherwise */
  path?: string;
  worker: string;
}

/** Progress a worker reports per denoising step. */
export interface RenderJobProgress {
  step: number;
  totalSteps: number;
}

export function checkBatchName(name: unknown): string {
  if (typeof name !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(name))
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a batch name of 1..64 letters, digits, '.', '_' or '-' for name but received ${describeValue(name)}`);
  return name;
}

/** One job per image: id `<batch>-<index>-seed<seed>-<hash of prompt and options>` (BullMQ ids hold no ':'). */
export function batchJobs(batch: string, jobs: RenderJob[], opts: BatchOptions): { id: string; data: RenderJobData }[] {
  checkBatchName(batch);
  const { seed = 0, ...common } = opts;
  return jobs.map((job, index) => {
    const s = job.seed ?? seed + index;
    const { prompt, seed: _, lora = [], ...overrides } = job;
    const options = { ...common, ...overrides, seed: s };
    const hash = createHash('sha256').update(JSON.stringify({ prompt, options, lora })).digest('hex').slice(0, 12);
    return { id: `${batch}-${index + 1}-seed${s}-${hash}`, data: { batch, index, fileName: renderFileName(index, jobs.length, s, prompt), prompt, options, lora } };
  });
}

/** Redis keys beside the queue's (same prefix): the set of a batch's job ids and its cancel flag. */
export const batchKeys = (batch: string) => ({ jobs: `bull:${QUEUE_NAME}:sana-batch:${batch}:jobs`, cancelled: `bull:${QUEUE_NAME}:sana-batch:${batch}:cancelled` });

export interface FarmConnection {
  /** for BullMQ's Queue, Worker and QueueEvents (each makes the connections it needs from these options) */
  connection: ConnectionOptions;
  /** a plain client for the batch keys */
  client: Redis;
  close(): Promise<void>;
}

/**
 * Connects to `url` (redis://[user:password@]host:port[/db]). Connection loss is reported through `report`
 * once when it happens and once when the connection is back; after `maxDownMs` without one, `onGiveUp` gets
 * an ERR_SANA_QUEUE error naming the URL and the wait.
 */
export function connect(url: string, watch: { report: (line: string) => void; maxDownMs: number; onGiveUp: (e: SanaError) => void }): FarmConnection {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a redis:// URL for queue but received ${describeValue(url)}`);
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:')
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a redis:// URL for queue but received ${describeValue(url)}`);
  const where = `${parsed.hostname}:${parsed.port || 6379}${parsed.pathname.length > 1 ? parsed.pathname : ''}`;
  // BullMQ's workers need commands to wait for a reconnection rather than fail after a few retries
  const options = { maxRetriesPerRequest: null, enableOfflineQueue: true, retryStrategy: (n: number) => Math.min(200 * n, 2000) };
  const redisOpts: RedisOptions = { ...redisOptions(parsed), ...options };
  const client = new Redis(redisOpts);
  const connection: ConnectionOptions = redisOpts;
  let downSince = 0;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  client.on('error', () => {}); // reported by the close/ready pair below, not per retry
  client.on('close', () => {
    if (closed || downSince) return;
    downSince = Date.now();
    watch.report(`lost the connection to redis at ${where}; retrying for up to ${Math.round(watch.maxDownMs / 1000)} s`);
    timer = setTimeout(() => watch.onGiveUp(new SanaError('ERR_SANA_QUEUE', `redis at ${where} has been unreachable for ${Math.round(watch.maxDownMs / 1000)} s`)), watch.maxDownMs);
  });
  client.on('ready', () => {
    if (!downSince) return;
    watch.report(`reconnected to redis at ${where} after ${((Date.now() - downSince) / 1000).toFixed(1)} s`);
    downSince = 0;
    clearTimeout(timer);
  });
  return {
    connection,
    client,
    async close() {
      closed = true;
      clearTimeout(timer);
      client.disconnect();
    },
  };
}

function redisOptions(u: URL): { host: string; port: number; db: number; username?: string; password?: string; tls?: object } {
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a database number after the port in the queue URL but received ${describeValue(u.pathname.slice(1))}`);
  return {
    host: u.hostname,
    port: u.port ? Number(u.port) : 6379,
    db,
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

export const openQueue = (conn: FarmConnection) => new Queue<RenderJobData, RenderJobResult>(QUEUE_NAME, { connection: conn.connection });
