// Deterministic memory: dispose() frees native memory at once, and the garbage collector finalizing a
// disposed tensor's ArrayBuffer later must not free memory that a newer tensor now occupies (the
// allocator reuses addresses). Runs in a child process with --expose-gc to force collections.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { probeBackends } from '../../ts/backends/registry.js';
import { packageRoot } from '../../ts/paths.js';

describe('native tensor memory', () => {
  const cpu = probeBackends().find((p) => p.name === 'cpu')!;
  it.skipIf(!cpu.available)(`a late GC finalizer of a disposed tensor leaves reused memory alone (${cpu.reason ?? 'cpu available'})`, () => {
    const script = `
      import { createBackend } from ${JSON.stringify(join(packageRoot(), 'dist', 'ts', 'backends', 'registry.js'))};
      const be = await createBackend('cpu');
      let corrupted = 0;
      for (let round = 0; round < 50; round++) {
        let a = be.empty([4096]);
        a.dispose();
        a = null;
        const b = be.tensor([4096], 'f32', new Float32Array(4096).fill(round + 1));
        globalThis.gc();
        await new Promise((r) => setTimeout(r, 1));
        globalThis.gc();
        const c = be.tensor([4096], 'f32', new Float32Array(4096).fill(-1)); // would land on b if b was freed
        if (b.data.some((v) => v !== round + 1)) corrupted++;
        b.dispose();
        c.dispose();
      }
      console.log(JSON.stringify({ corrupted, rounds: 50 }));`;
    const out = JSON.parse(execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8' }));
    expect(out).toEqual({ corrupted: 0, rounds: 50 });
  });
});
