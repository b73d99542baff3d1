// The addon is context-aware: it loads in the main thread and in worker threads at once, each with its
// own context (threads, variant), and computes the same results everywhere.
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';

import { createBackend, probeBackends } from '../../ts/backends/registry.js';
import { packageRoot } from '../../ts/paths.js';
import { rand } from './helpers.js';

const registry = join(packageRoot(), 'dist', 'ts', 'backends', 'registry.js');
const [M, K, N] = [67, 130, 45];
const x = rand(M * K, 7);
const w = rand(N * K, 8);

const workerCode = `
  const { parentPort, workerData } = require('node:worker_threads');
  import(workerData.registry).then(async ({ createBackend }) => {
    const b = await createBackend('cpu', { threads: workerData.threads });
    const y = b.linear(b.tensor([${M}, ${K}], 'f32', workerData.x), b.tensor([${N}, ${K}], 'f32', workerData.w), { act: 'silu' });
    parentPort.postMessage({ y: y.toFloat32(), threads: b.info.threads, variant: b.info.variant });
  }).catch((e) => parentPort.postMessage({ error: String(e && e.stack || e) }));`;

function runWorker(threads: number): Promise<{ y: Float32Array; threads: number; variant: string; error?: string }> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(workerCode, { eval: true, workerData: { registry, x, w, threads } });
    worker.once('message', (m) => {
      resolve(m);
      void worker.terminate();
    });
    worker.once('error', reject);
  });
}

describe('native addon in worker threads', () => {
  const cpu = probeBackends().find((p) => p.name === 'cpu')!;
  it.skipIf(!cpu.available)(`loads in the main thread and two workers with separate contexts (${cpu.reason ?? 'cpu available'})`, async () => {
    const main = await createBackend('cpu', { threads: 2 });
    const expected = main.linear(main.tensor([M, K], 'f32', x), main.tensor([N, K], 'f32', w), { act: 'silu' }).toFloat32();
    const [a, b] = await Promise.all([runWorker(1), runWorker(2)]);
    expect(a.error).toBeUndefined();
    expect(b.error).toBeUndefined();
    expect(a.threads).toBe(1);
    expect(b.threads).toBe(2);
    expect(main.info.threads).toBe(2); // a worker's setThreads(1) did not touch the main thread's context
    expect(Array.from(a.y)).toEqual(Array.from(expected));
    expect(Array.from(b.y)).toEqual(Array.from(expected));
  });
});
