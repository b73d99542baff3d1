// The demo-model trainer (training/, PyTorch): its modules reproduce the diffusers golden outputs, and a few
// optimisation steps on a fixed batch lower both losses. Needs Debian's python3-torch (.ci/run installs it).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { golden, needs } from '../fixtures/shared.js';

const python = '/usr/bin/python3';
const root = join(import.meta.dirname, '..', '..');
const probe = spawnSync(python, ['-c', 'import torch, numpy'], { encoding: 'utf8' });
const missing = probe.status === 0 ? null : `PyTorch is not importable by ${python}: install python3-torch (${(probe.stderr || String(probe.error)).trim().split('\n').at(-1)})`;

function run(args: string[]) {
  const r = spawnSync(python, args, { cwd: root, encoding: 'utf8', timeout: 300_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe.skipIf(missing !== null)(`training/ (PyTorch)${missing ? ` — skipped: ${missing}` : ''}`, () => {
  it.skipIf(!golden.present)(needs(golden, 'the PyTorch AutoencoderDC and SanaTransformer2DModel load the golden weights strictly and match diffusers'), () => {
    const r = run(['training/selftest.py', golden.dir]);
    expect(r.out).toContain('selftest ok');
    expect(r.status).toBe(0);
  });

  it('a few training steps on a fixed batch lower the autoencoder and flow-matching losses', () => {
    const r = run(['training/train_demo.py', 'smoke', '--threads', '2']);
    expect(r.out).toMatch(/smoke ae: loss [\d.]+ -> [\d.]+/);
    expect(r.out).toContain('smoke ok');
    expect(r.status).toBe(0);
  });
});
