// Weights bigger than one conversion chunk (2^20 elements) load whole: straight from the file and converted
// to bf16, into host memory and into device-style memory (uploads in chunks), each value where it belongs.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { createBackend } from '../../ts/backends/registry.js';
import { WeightStore } from '../../ts/io/weights.js';
import { Params } from '../../ts/models/params.js';
import { decode, encode } from '../../ts/tensor/dtype.js';
import { HostAsDeviceBackend } from '../fixtures/host-as-device.js';
import { uniform, writeSafetensors } from '../fixtures/random-dcae.js';

const dir = mkdtempSync(join(tmpdir(), 'sana-chunked-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const shape = [1200, 1001]; // 1,201,200 elements: one full chunk and a partial one
const rnd = uniform(3);
const values = Float32Array.from({ length: shape[0] * shape[1] }, () => rnd() * 2 - 1);
writeSafetensors(join(dir, 'diffusion_pytorch_model.safetensors'), [{ name: 'w', shape, data: values }]);

describe('weights larger than a conversion chunk', async () => {
  const backends = [await createBackend('cpu'), HostAsDeviceBackend.create()];
  afterAll(() => backends.forEach((b) => b.dispose()));
  for (const [i, label] of ['host memory', 'device-style memory'].entries())
    for (const weightDtype of [undefined, 'bf16'] as const)
      it(`${label}, ${weightDtype ?? 'as stored (f32)'}`, () => {
        const store = WeightStore.open(dir, 'diffusion_pytorch_model');
        try {
          const p = Params.load(backends[i], store, [{ name: 'w', shape }], 'test', weightDtype);
          const t = p.get('w');
          expect(t.dtype).toBe(weightDtype ?? 'f32');
          const want = weightDtype ? decode(encode(values, 'bf16'), 'bf16') : values;
          const got = t.toFloat32();
          expect(got.length).toBe(want.length);
          expect(got.findIndex((v, k) => !Object.is(v, want[k]))).toBe(-1); // every value, the chunk seam included
          t.dispose();
        } finally {
          store.close();
        }
      });
});
