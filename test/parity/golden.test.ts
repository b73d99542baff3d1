// Parity with the reference implementation: walks every case folder under SANA_GOLDEN_DIR (default
// ../shared/golden) and its next/, runs each entry of its case.json `run` list (schema golden-run/1) on every available
// backend, and compares every output (and every intermediate tap, reporting the first that diverges) with
// numpy allclose semantics at the entry's tolerance. Driven by case.json only: a new case of a known op
// runs without code changes. An op the harness does not know fails the test.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import type { Backend } from '../../ts/backends/backend.js';
import { createBackend, probeBackends } from '../../ts/backends/registry.js';
import { HostAsDeviceBackend } from '../fixtures/host-as-device.js';
import { golden, goldenCases, reportSkipped } from '../fixtures/shared.js';
import { caseReader, compare, OPS, type RunEntry } from './golden-ops.js';

const cases = goldenCases();
// every available backend, plus the cpu kernels behind device-style memory (fixtures/host-as-device.ts): the
// runners and models must reach tensor data only as a GPU backend allows
const backends: { label: string; backend: Backend }[] = [];
for (const p of probeBackends()) if (p.available) backends.push({ label: p.name, backend: await createBackend(p.name) });
if (backends.some((b) => b.label === 'cpu')) backends.push({ label: 'cpu as a device', backend: HostAsDeviceBackend.create() });
afterAll(() => backends.forEach((b) => b.backend.dispose()));

describe('golden parity', () => {
  reportSkipped(golden, 'every golden case on every backend');
  it.skipIf(!golden.present)('finds the golden cases', () => expect(cases.length).toBeGreaterThan(0));

  for (const [caseName, caseDir] of cases) {
    const spec = JSON.parse(readFileSync(join(caseDir, 'case.json'), 'utf8'));
    describe(caseName, () => {
      it('uses run schema golden-run/1', () => expect(spec.run_schema).toBe('golden-run/1'));
      for (const entry of spec.run as RunEntry[]) {
        for (const { label, backend } of backends) {
          it(`${entry.id} (${entry.op}) on ${label}`, async () => {
            const runner = OPS[entry.op];
            expect(runner, `unknown op ${entry.op} in ${caseName}/case.json`).toBeDefined();
            const { read, close } = caseReader(caseDir);
            try {
              const result = await runner(backend, caseDir, entry, read);
              const tolFor = (name: string) => entry.tolerance_overrides?.[name] ?? entry.tolerance;
              // intermediates first, in execution order: the first divergence is the one to debug
              let compared = 0;
              for (const [tap, got] of result.taps) {
                const ref = entry.intermediates?.[tap];
                if (!ref) continue;
                compared++;
                const bad = compare(got, read(ref, 'intermediates'), tolFor(tap));
                expect(bad, `first diverging intermediate: ${tap}`).toBeNull();
              }
              if (entry.intermediates) expect(compared, 'intermediates compared').toBe(Object.keys(entry.intermediates).length);
              for (const [role, ref] of Object.entries(entry.outputs)) {
                const got = result.outputs[role];
                expect(got, `output ${role}`).toBeDefined();
                const want = read(ref, 'outputs');
                expect(compare(got, want, tolFor(role)), `output ${role}`).toBeNull();
                if (process.env.SANA_PARITY_REPORT) {
                  let maxAbs = 0;
                  for (let i = 0; i < want.data.length; i++) maxAbs = Math.max(maxAbs, Math.abs(Number(got.data[i]) - Number(want.data[i])));
                  console.log(`PARITY ${caseName} ${entry.id} ${role} ${label} max|diff| ${maxAbs.toExponential(2)}`);
                }
              }
            } finally {
              close();
            }
          });
        }
      }
    });
  }
});
