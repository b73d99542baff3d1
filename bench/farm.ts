// npm run bench:farm — the render farm's cost: one batch of the demo model rendered by the in-process pool
// (1 and 2 CPU workers, 1 thread each) and through Redis by 1 and 2 `sana worker` processes (1 thread each),
// on this machine, in one run; per-image overhead = (farm − pool) / images for the same number of workers.
// Needs redis-server (it starts its own on a loopback port). Options: --images=N (default 24), --steps=N (20).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { enqueueRender, waitForBatch } from '../ts/farm/producer.js';
import { packageRoot } from '../ts/paths.js';
import { createSanaPool, type RenderJob } from '../ts/pool/sana-pool.js';
import { RedisInstance } from './redis-server.js';

const arg = (name: string, fallback: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback);
const images = arg('images', 24);
const steps = arg('steps', 20);
const colours = ['red', 'green', 'blue', 'yellow', 'white', 'black'];
const shapes = ['circle', 'square', 'triangle'];
const jobs: RenderJob[] = Array.from({ length: images }, (_, i) => ({ prompt: `a ${colours[i % 6]} ${shapes[i % 3]} on a ${colours[(i + 1) % 6]} background`, seed: i }));
const root = mkdtempSync(join(tmpdir(), 'sana-bench-farm-'));
const cli = join(packageRoot(), 'dist', 'ts', 'cli', 'sana.js');
const emit = (row: object) => console.log(JSON.stringify(row));

async function viaPool(workers: number): Promise<number> {
  const pool = await createSanaPool({ devices: Array(workers).fill('cpu'), threadsPerWorker: 1 });
  try {
    const t0 = performance.now();
    await pool.render(jobs, { outDir: join(root, `pool-${workers}`), steps });
    return performance.now() - t0;
  } finally {
    await pool.dispose();
  }
}

async function viaFarm(redis: RedisInstance, workers: number): Promise<number> {
  const procs = Array.from({ length: workers }, () => spawn(process.execPath, [cli, 'worker', '--queue', redis.url, '--devices', 'cpu', '--threads-per-worker', '1'], { stdio: ['ignore', 'ignore', 'pipe'] }));
  try {
    // workers load the model before the clock starts, as the pool's do
    await Promise.all(procs.map((p) => new Promise<void>((resolve) => p.stderr!.on('data', (d: Buffer) => d.toString().includes('SIGTERM or Ctrl-C stops') && resolve()))));
    const name = `bench-${workers}`;
    const t0 = performance.now();
    await enqueueRender({ redis: redis.url, name, prompts: jobs, steps });
    const r = await waitForBatch({ redis: redis.url, name, outDir: join(root, name) });
    if (r.failed.length) throw new Error(`bench:farm: ${r.failed.length} image(s) failed: ${r.failed[0].reason}`);
    return performance.now() - t0;
  } finally {
    await Promise.all(procs.map((p) => new Promise<void>((resolve) => (p.once('exit', () => resolve()), p.kill('SIGTERM')))));
  }
}

const redis = await RedisInstance.create();
try {
  const rows: Record<string, number> = {};
  for (const workers of [1, 2]) {
    rows[`pool ${workers}`] = await viaPool(workers);
    rows[`farm ${workers}`] = await viaFarm(redis, workers);
    emit({
      bench: 'farm', images, steps, workers, poolMs: Math.round(rows[`pool ${workers}`]), farmMs: Math.round(rows[`farm ${workers}`]),
      poolImagesPerMin: +((images * 60000) / rows[`pool ${workers}`]).toFixed(1), farmImagesPerMin: +((images * 60000) / rows[`farm ${workers}`]).toFixed(1),
      overheadMsPerImage: +((rows[`farm ${workers}`] - rows[`pool ${workers}`]) / images).toFixed(1),
    });
  }
  emit({ bench: 'farm scaling', farm2OverFarm1: +(rows['farm 1'] / rows['farm 2']).toFixed(2), pool2OverPool1: +(rows['pool 1'] / rows['pool 2']).toFixed(2) });
} finally {
  await redis.close();
  rmSync(root, { recursive: true, force: true });
}
