// The file-level cases of ../shared/fuzz/cases.json through the safetensors reader: every malformed file is
// rejected with ERR_SANA_MODEL_FORMAT naming the file (and the tensor), every valid one reads back exactly.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { SanaError } from '../../ts/errors.js';
import { SafetensorsFile } from '../../ts/io/safetensors.js';
import { bf16ToF32, f16ToF32 } from '../../ts/tensor/dtype.js';
import { fuzz, needs } from '../fixtures/shared.js';

const fuzzDir = fuzz.dir;

interface FuzzCase {
  id: string;
  level: 'file' | 'model' | 'pipeline';
  path: string;
  defect: string;
  expected: 'error' | 'ok' | 'ok-but-nan';
  mentions?: string[];
  mentions_any?: string[];
  tensors?: Record<string, { dtype: string; shape: number[]; values: (number | string)[] }>;
}

const cases: FuzzCase[] = fuzz.present ? JSON.parse(readFileSync(join(fuzzDir, 'cases.json'), 'utf8')).cases : [];
const fileCases = cases.filter((c) => c.level === 'file');

/** The case file's value notation: "NaN", "Infinity", "-0", big integers as decimal strings. */
function expectedValue(v: number | string): number | bigint {
  if (typeof v === 'number') return v;
  if (v === 'NaN') return NaN;
  if (v === 'Infinity') return Infinity;
  if (v === '-Infinity') return -Infinity;
  if (v === '-0') return -0;
  return BigInt(v);
}

/** Values as the case file writes them: 64-bit integers within ±(2^53 − 1) as numbers. */
function decoded(dtype: string, data: ArrayLike<number | bigint>): (number | bigint)[] {
  if (dtype === 'F16') return Array.from(f16ToF32(data as Uint16Array));
  if (dtype === 'BF16') return Array.from(bf16ToF32(data as Uint16Array));
  return Array.from(data as ArrayLike<number | bigint>, (v) =>
    typeof v === 'bigint' && v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v,
  );
}

describe.skipIf(!fuzz.present)(needs(fuzz, 'safetensors reader on the fuzz corpus'), () => {
  it('covers every file-level case', () => expect(fileCases.length).toBe(68));

  it.each(fileCases.map((c) => ({ ...c, name: `${c.id}: ${c.defect.slice(0, 80)}` })))('$name', (c) => {
    const path = join(fuzzDir, c.path);
    const before = process.memoryUsage();
    if (c.expected === 'error') {
      let err: unknown;
      try {
        SafetensorsFile.open(path).close();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(SanaError);
      expect((err as SanaError).code).toBe('ERR_SANA_MODEL_FORMAT');
      for (const m of c.mentions ?? []) expect((err as Error).message).toContain(m);
      if (c.mentions_any) expect(c.mentions_any.some((m) => (err as Error).message.includes(m))).toBe(true);
    } else {
      const f = SafetensorsFile.open(path);
      try {
        expect([...f.tensors.keys()].sort()).toEqual(Object.keys(c.tensors ?? {}).sort());
        for (const [name, want] of Object.entries(c.tensors ?? {})) {
          const { info, data } = f.read(name);
          expect(info.dtype).toBe(want.dtype);
          expect(info.shape).toEqual(want.shape);
          const got = decoded(info.dtype, data);
          const exp = want.values.map(expectedValue);
          expect(got.length).toBe(exp.length);
          got.forEach((g, i) => expect(Object.is(g, exp[i]) || g === exp[i]).toBe(true));
        }
      } finally {
        f.close();
      }
    }
    const after = process.memoryUsage();
    expect(after.arrayBuffers - before.arrayBuffers).toBeLessThan(64 << 20); // validated before allocating
  });
});
