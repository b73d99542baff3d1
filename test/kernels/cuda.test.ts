// The cuda backend where it cannot run (the probe's reason, worked out independently in fixtures/cuda.ts) and
// where it can (device memory, copies, out-of-memory that leaves the backend usable). Its kernels are checked
// by ops.test.ts and glue.test.ts, which take every available backend, cuda included.
import { afterAll, describe, expect, it } from 'vitest';

import { CudaBackend } from '../../ts/backends/cuda.js';
import { probeBackends } from '../../ts/backends/registry.js';
import { cudaModule, expectedCudaProbe, nvccPresent } from '../fixtures/cuda.js';
import { existsSync } from 'node:fs';

const probe = probeBackends().find((p) => p.name === 'cuda')!;
const ci = process.env.SANA_REQUIRE_FIXTURES === '1';

describe('cuda probe', () => {
  const expected = expectedCudaProbe();
  it.skipIf(!expected)('says why cuda cannot run on this machine', () => {
    expect(probe).toEqual({ name: 'cuda', ...expected });
  });

  it.skipIf(!ci || !nvccPresent())('CI with nvcc: the CUDA module was built', () => {
    expect(existsSync(cudaModule)).toBe(true);
  });
});

describe.skipIf(!probe.available)(probe.available ? 'cuda device' : `cuda device: skipped (${probe.reason})`, () => {
  const be = probe.available ? CudaBackend.create(0) : undefined!;
  afterAll(() => be?.dispose());

  it('names the device and reads back what it was given, after an op, asynchronously', async () => {
    expect(be.info.device).toMatch(/^cuda:0 \(.+\)$/);
    expect(Number(be.deviceInfo.computeCapability)).toBeGreaterThanOrEqual(8);
    const x = be.tensor([5], 'f32', [-2, -0.5, 0, 1.5, 3]);
    expect(x.location).toBe('device');
    const y = be.activation(x, 'relu');
    await be.synchronize();
    expect(Array.from((await y.read()) as Float32Array)).toEqual([0, 0, 0, 1.5, 3]);
    expect(() => y.data).toThrow(/read it with await tensor.read\(\)/);
    x.dispose();
    y.dispose();
  });

  it('out of memory names the request and the free memory; the backend stays usable', () => {
    const huge = 2 ** 46;
    let err: { code?: string; message?: string } = {};
    try {
      be.empty([huge / 4], 'f32', 'weight');
    } catch (e) {
      err = e as typeof err;
    }
    expect(err.code).toBe('ERR_SANA_OUT_OF_MEMORY');
    expect(err.message).toMatch(/out of device memory for \d+ bytes on cuda:0 \(\d+ of \d+ bytes free\)/);
    const t = be.tensor([3], 'f32', [1, 2, 3]);
    expect(be.axpby(2, t, 0, null).location).toBe('device');
    t.dispose();
  });

  it('a bad token id is a named error from the device, and the next op runs', async () => {
    const table = be.tensor([4, 3], 'f32', Array.from({ length: 12 }, (_, i) => i));
    const ids = be.tensor([3], 'i32', [0, 7, 1]);
    expect(() => be.embedding(table, ids)).toThrow('embedding: Expected token ids in [0, 4) for ids but received 7 at position 1');
    const ok = be.tensor([2], 'i32', [3, 0]);
    const rows = be.embedding(table, ok);
    expect(Array.from((await rows.read()) as Float32Array)).toEqual([9, 10, 11, 0, 1, 2]);
    for (const t of [table, ids, ok, rows]) t.dispose();
  });
});
