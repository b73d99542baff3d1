// Tensors and their storage (docs/engine.md): aliases are byte offsets into one block, never copies; host
// access goes through data/read/write; a tensor in device memory refuses host views and copies through its
// backend; memory() reports current and peak bytes of weights and activations.
import { afterAll, describe, expect, it } from 'vitest';

import { createBackend } from '../../ts/backends/registry.js';
import { SanaError } from '../../ts/errors.js';
import { Tensor, type Storage, type TensorOwner } from '../../ts/tensor/tensor.js';

const be = await createBackend('auto');
afterAll(() => be.dispose());

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof SanaError ? `${e.code}: ${e.message}` : String(e);
  }
  return undefined;
}

describe('host tensors', () => {
  it('reshape and slice alias the same block at a byte offset; writes show through; only the root frees', () => {
    const t = be.tensor([4, 6], 'f32', Array.from({ length: 24 }, (_, i) => i + 0.5));
    const row = t.slice(12, [2, 6]);
    expect(row.address).toBe(t.address + 12 * 4);
    expect(row.reshape([12]).address).toBe(row.address);
    expect(row.location).toBe('host');
    row.write(new Float32Array(12).fill(-1));
    expect(Array.from(t.toFloat32().subarray(10, 14))).toEqual([10.5, 11.5, -1, -1]);
    row.dispose(); // an alias: no effect
    expect(t.disposed).toBe(false);
    t.dispose();
    expect(row.disposed).toBe(true);
    expect(code(() => row.data)).toMatch(/^ERR_SANA_DISPOSED: tensor #\d+ \[2,6\] was disposed/);
  });

  it('read() and readSync() copy; write() takes the dtype\'s storage words and checks them', async () => {
    const t = be.tensor([3], 'i32', [7, -8, 9]);
    const copy = (await t.read()) as Int32Array;
    copy[0] = 100;
    expect(Array.from(t.readSync())).toEqual([7, -8, 9]);
    expect(code(() => t.write(new Float32Array(3)))).toMatch(/write: Expected a Int32Array of 3 elements for tensor #\d+ but received a Float32Array of 3/);
    t.dispose();
    await be.synchronize();
  });

  it('memory() counts weights and activations now and at their peak', () => {
    const before = be.memory();
    const w = be.tensor([1000], 'f32', undefined, 'weight');
    const a = be.empty([100_000]);
    const during = be.memory();
    expect(during.weightBytes - before.weightBytes).toBe(4000);
    expect(during.activationBytes - before.activationBytes).toBeGreaterThanOrEqual(400_000);
    expect(during.peakActivationBytes).toBeGreaterThanOrEqual(during.activationBytes);
    a.dispose();
    w.dispose();
    const after = be.memory();
    expect([after.weightBytes, after.activationBytes]).toEqual([before.weightBytes, before.activationBytes]);
    expect(after.peakActivationBytes).toBe(during.peakActivationBytes);
  });
});

describe('device tensors', () => {
  // a block of "device" memory: no host view, bytes reachable only through the owner's copies
  const deviceBytes = new Uint8Array(64);
  const owner: TensorOwner = {
    name: 'test-device',
    readStorage: async (_s, offset, dst) => void dst.set(deviceBytes.subarray(offset, offset + dst.length)),
    writeStorage: (_s, offset, src) => deviceBytes.set(src, offset),
  };
  const storage: Storage = { location: 'device', handle: 4096, bytes: 64, free: () => {} };

  it('refuse host views, copy through their backend, and alias by offset like host tensors', async () => {
    const t = new Tensor(owner, [16], 'f32', storage);
    expect(code(() => t.data)).toBe('ERR_SANA_UNSUPPORTED: tensor #' + t.id + ' lives on the test-device device: read it with await tensor.read()');
    expect(code(() => t.toFloat32())).toMatch(/^ERR_SANA_UNSUPPORTED/);
    t.slice(8, [4]).write(Float32Array.of(1, 2, 3, 4));
    expect(t.slice(8, [4]).address).toBe(4096 + 32);
    expect(Array.from((await t.read()) as Float32Array).slice(6, 13)).toEqual([0, 0, 1, 2, 3, 4, 0]);
  });
});
