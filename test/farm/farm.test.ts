// The render farm as users run it: a real redis-server (its own instance, fixtures/redis.ts), `sana render
// --queue` producers and `sana worker` processes of the CLI, the built-in demo model. Every image is compared
// byte for byte with a local `sana render` of the same batch.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Queue } from 'bullmq';

import { QUEUE_NAME } from '../../ts/farm/queue.js';
import { packageRoot } from '../../ts/paths.js';
import { RedisInstance, redisAvailable, redisReason } from '../fixtures/redis.js';

const cliPath = join(packageRoot(), 'dist', 'ts', 'cli', 'sana.js');
const root = mkdtempSync(join(tmpdir(), 'sana-farm-'));
const PROMPTS = [
  'a red circle on a blue background', 'a green square on a white background', 'a blue triangle on a yellow background',
  'a small yellow circle on a black background at the top left', 'a large white square on a green background', 'a black triangle on a red background at the center',
];

interface Run {
  proc: ChildProcess;
  stderr: () => string;
  exited: Promise<number>;
  /** resolves when stderr contains `text` */
  saw(text: string | RegExp, timeoutMs?: number): Promise<void>;
}

function sana(args: string[]): Run {
  const proc = spawn(process.execPath, [cliPath, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  const waiters: { test: (s: string) => boolean; resolve: () => void }[] = [];
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    for (const w of waiters.splice(0)) (w.test(err) ? w.resolve : () => waiters.push(w))();
  });
  proc.stdout!.resume();
  const exited = new Promise<number>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
  return {
    proc,
    stderr: () => err,
    exited,
    saw: (text, timeoutMs = 60_000) =>
      new Promise<void>((resolve, reject) => {
        const test = (s: string) => (typeof text === 'string' ? s.includes(text) : text.test(s));
        if (test(err)) return resolve();
        const timer = setTimeout(() => reject(new Error(`no ${text} within ${timeoutMs} ms in:\n${err}`)), timeoutMs);
        waiters.push({ test, resolve: () => (clearTimeout(timer), resolve()) });
        void exited.then(() => !test(err) && (clearTimeout(timer), reject(new Error(`exited before ${text}:\n${err}`))));
      }),
  };
}

function promptsFile(name: string, lines: object[]): string {
  const file = join(root, `${name}.jsonl`);
  writeFileSync(file, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  return file;
}

/** name → bytes of every PNG in a folder */
function images(dir: string): Map<string, Buffer> {
  return new Map(readdirSync(dir).filter((f) => f.endsWith('.png')).sort().map((f) => [f, readFileSync(join(dir, f))]));
}

async function localRender(file: string): Promise<Map<string, Buffer>> {
  const out = join(root, `local-${Math.random().toString(36).slice(2)}`);
  const r = sana(['render', file, '--out', out, '--devices', 'cpu']);
  expect(await r.exited, r.stderr()).toBe(0);
  return images(out);
}

describe.skipIf(!redisAvailable)(redisAvailable ? 'render farm (redis-server, BullMQ)' : `render farm: ${redisReason}`, () => {
  let redis: RedisInstance;
  const workers: Run[] = [];
  const worker = async (...extra: string[]) => {
    const w = sana(['worker', '--queue', redis.url, '--devices', 'cpu', '--threads-per-worker', '1', '--lock-duration', '2', '--stalled-interval', '1', '--redis-timeout', '30', ...extra]);
    workers.push(w);
    await w.saw('SIGTERM or Ctrl-C stops');
    return w;
  };
  const stopWorkers = async () => {
    for (const w of workers.splice(0)) {
      w.proc.kill('SIGTERM');
      expect(await w.exited).toBe(0); // graceful: running jobs finish, the worker closes
    }
  };

  beforeAll(async () => {
    redis = await RedisInstance.create();
  });
  afterAll(async () => {
    for (const w of workers) w.proc.kill('SIGKILL');
    await redis?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('a producer and two worker processes render 6 prompts, byte-identical to a local sana render; a second submission renders nothing again', async () => {
    const file = promptsFile('six', PROMPTS.map((prompt) => ({ prompt })));
    const want = await localRender(file);
    const [a, b] = [await worker(), await worker()];
    const out = join(root, 'six-out');
    const p = sana(['render', file, '--queue', redis.url, '--name', 'six', '--wait', '--out', out]);
    expect(await p.exited, p.stderr()).toBe(0);
    expect(p.stderr()).toContain('batch six: 6 of 6 image(s) added to the queue');
    expect(images(out)).toEqual(want);
    const done = (w: Run) => (w.stderr().match(/^sana worker: done /gm) ?? []).length;
    expect(done(a) + done(b)).toBe(6);
    expect(done(a)).toBeGreaterThan(0);
    expect(done(b)).toBeGreaterThan(0);

    const again = join(root, 'six-again');
    const q = sana(['render', file, '--queue', redis.url, '--name', 'six', '--wait', '--out', again]);
    expect(await q.exited, q.stderr()).toBe(0);
    expect(q.stderr()).toContain('batch six: 0 of 6 image(s) added to the queue (6 already there)');
    expect(images(again)).toEqual(want);
    expect(done(a) + done(b)).toBe(6);
    await stopWorkers();
  });

  it('images over the inline limit land in the shared folder (whole, under their names); the producer collects them', async () => {
    const file = promptsFile('shared', PROMPTS.slice(0, 3).map((prompt) => ({ prompt })));
    const want = await localRender(file);
    const shared = join(root, 'shared-folder');
    await worker('--out', shared, '--inline-max-bytes', '100'); // every 64×64 PNG is larger than 100 bytes
    const out = join(root, 'shared-out');
    const p = sana(['render', file, '--queue', redis.url, '--name', 'shared', '--wait', '--out', out]);
    expect(await p.exited, p.stderr()).toBe(0);
    expect(images(join(shared, 'shared'))).toEqual(want); // <out>/<batch>/<file name>
    expect(images(out)).toEqual(want);
    expect(readdirSync(join(shared, 'shared')).filter((f) => !f.endsWith('.png'))).toEqual([]);
    const queue = new Queue(QUEUE_NAME, { connection: { host: '127.0.0.1', port: redis.port } });
    try {
      const results = (await queue.getJobs(['completed'])).filter((j) => j.id!.startsWith('shared-')).map((j) => j.returnvalue);
      expect(results).toHaveLength(3);
      for (const r of results) {
        expect(r.png).toBeUndefined();
        expect(r.path).toBe(join(shared, 'shared', r.fileName));
      }
    } finally {
      await queue.close();
    }
    await stopWorkers();
  });

  it('kill -9 of a worker in the middle of a job: the batch still completes, every image whole and identical', async () => {
    const file = promptsFile('slow', PROMPTS.map((prompt) => ({ prompt, steps: 150 })));
    const want = await localRender(file);
    const victim = await worker();
    const out = join(root, 'slow-out');
    const p = sana(['render', file, '--queue', redis.url, '--name', 'slow', '--wait', '--out', out]);
    await victim.saw(/rendering \S+ \(job slow-/);
    await new Promise((r) => setTimeout(r, 300));
    victim.proc.kill('SIGKILL');
    expect(await victim.exited).toBe(128);
    workers.splice(workers.indexOf(victim), 1);
    const rescuer = await worker();
    expect(await p.exited, p.stderr()).toBe(0);
    expect(images(out)).toEqual(want);
    expect(rescuer.stderr()).toMatch(/rendering \S+ \(job slow-\S+, try [12]\)/);
    expect(readdirSync(out).filter((f) => f.includes('.partial'))).toEqual([]);
    await stopWorkers();
  });

  it('SIGTERM in the middle of a job: the worker finishes that image, takes no other, and exits 0', async () => {
    const file = promptsFile('term', PROMPTS.map((prompt) => ({ prompt, steps: 150 })));
    const w = await worker();
    const sub = sana(['render', file, '--queue', redis.url, '--name', 'term']);
    expect(await sub.exited, sub.stderr()).toBe(0);
    await w.saw(/rendering \S+ \(job term-/);
    w.proc.kill('SIGTERM');
    expect(await w.exited, w.stderr()).toBe(0);
    workers.splice(workers.indexOf(w), 1);
    expect((w.stderr().match(/^sana worker: rendering /gm) ?? []).length).toBe(1);
    expect((w.stderr().match(/^sana worker: done /gm) ?? []).length).toBe(1);
    expect(w.stderr()).toContain('stopping (running jobs finish first)');
    const s = sana(['render', '--queue', redis.url, '--status', 'term']);
    expect(await s.exited, s.stderr()).toBe(0);
    expect(s.stderr()).toContain('completed: 1');
    expect(s.stderr()).toContain('waiting: 5');
    expect((await sana(['render', '--queue', redis.url, '--cancel', 'term']).exited)).toBe(0);
  });

  it('Redis stopped mid-batch: workers and producer report the lost connection and carry on when it is back', async () => {
    const file = promptsFile('outage', PROMPTS.map((prompt) => ({ prompt, steps: 60 })));
    const want = await localRender(file);
    const w = await worker();
    const out = join(root, 'outage-out');
    const p = sana(['render', file, '--queue', redis.url, '--name', 'outage', '--wait', '--out', out, '--redis-timeout', '30']);
    await w.saw(/done \S+ \(job outage-/);
    await redis.stop();
    await w.saw('lost the connection to redis');
    await p.saw('lost the connection to redis');
    await new Promise((r) => setTimeout(r, 1500));
    await redis.start();
    expect(await p.exited, p.stderr()).toBe(0);
    expect(p.stderr()).toMatch(/reconnected to redis at 127\.0\.0\.1:\d+\/0 after/);
    expect(w.stderr()).toMatch(/reconnected to redis at/);
    expect(images(out)).toEqual(want);
    await stopWorkers();
  });

  it('a Redis that stays away: the producer fails clearly after its bounded wait', async () => {
    await redis.stop();
    try {
      const p = sana(['render', '--queue', redis.url, '--status', 'six', '--redis-timeout', '2']);
      expect(await p.exited).toBe(1);
      expect(p.stderr()).toMatch(/sana: redis at 127\.0\.0\.1:\d+\/0 has been unreachable for 2 s/);
    } finally {
      await redis.start();
    }
  });

  it('--cancel stops a batch: its waiting images are removed and no worker renders them', async () => {
    const file = promptsFile('cancelled', PROMPTS.map((prompt) => ({ prompt })));
    const sub = sana(['render', file, '--queue', redis.url, '--name', 'cancelled']);
    expect(await sub.exited, sub.stderr()).toBe(0);
    const c = sana(['render', '--queue', redis.url, '--cancel', 'cancelled']);
    expect(await c.exited, c.stderr()).toBe(0);
    expect(c.stderr()).toContain('batch cancelled cancelled: 6 waiting image(s) removed, 0 running one(s) told to stop, 0 already finished');
    const w = await worker();
    const s = sana(['render', '--queue', redis.url, '--status', 'cancelled']);
    expect(await s.exited, s.stderr()).toBe(0);
    expect(s.stderr()).toContain('batch cancelled: 6 image(s), cancelled');
    expect(s.stderr()).toContain('unknown: 6');
    await new Promise((r) => setTimeout(r, 1500));
    expect(w.stderr()).not.toMatch(/rendering \S+ \(job cancelled-/);
    await stopWorkers();
  });

  it('a job with bad options fails once, with its SanaError code and message, and is not retried', async () => {
    const file = promptsFile('bad', [{ prompt: 'a red circle', lora: [join(root, 'no-such-adapter.safetensors')] }]);
    await worker();
    const p = sana(['render', file, '--queue', redis.url, '--name', 'bad', '--wait', '--out', join(root, 'bad-out')]);
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toMatch(/failed 0001-seed0-a-red-circle\.png: ERR_SANA_\w+: .*no-such-adapter/);
    const queue = new Queue(QUEUE_NAME, { connection: { host: '127.0.0.1', port: redis.port } });
    try {
      const [job] = await queue.getJobs(['failed']);
      expect(job.id).toMatch(/^bad-1-seed0-/);
      expect(job.attemptsMade).toBe(1);
      expect(job.failedReason).toMatch(/^ERR_SANA_\w+: /);
    } finally {
      await queue.close();
    }
    await stopWorkers();
  });

  it('bad producer input is refused before anything is queued', async () => {
    const p = sana(['render', promptsFile('x', [{ prompt: 'a' }]), '--queue', redis.url, '--name', 'has:colon']);
    expect(await p.exited).toBe(2);
    expect(p.stderr()).toContain("Expected a batch name of 1..64 letters, digits, '.', '_' or '-' for name but received \"has:colon\"");
    const u = sana(['render', '--queue', 'http://127.0.0.1:1', '--status', 'six']);
    expect(await u.exited).toBe(2);
    expect(u.stderr()).toContain('Expected a redis:// URL for queue but received "http://127.0.0.1:1"');
  });
});
