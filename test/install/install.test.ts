// A packed tarball installs into a fresh project; without the native addon (build skipped, as when a
// machine has no compiler) the install still succeeds and the package runs on wasm, saying why.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { packageRoot } from '../../ts/paths.js';

const dir = mkdtempSync(join(tmpdir(), 'sana-install-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let tarball: string | undefined;
function installInto(name: string, env: Record<string, string>): string {
  if (!tarball) {
    execFileSync('npm', ['pack', '--pack-destination', dir, '--silent'], { cwd: packageRoot(), stdio: ['ignore', 'pipe', 'inherit'] });
    tarball = join(dir, readdirSync(dir).find((f) => f.endsWith('.tgz'))!);
  }
  const app = join(dir, name);
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name, version: '1.0.0', type: 'module', private: true }));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: app, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  return app;
}

const script = `
  import { createBackend, probeBackends } from 'sana-node';
  const be = await createBackend('auto');
  const y = be.activation(be.tensor([3], 'f32', [-1, 0.5, 2]), 'relu').toFloat32();
  const probe = (n) => probeBackends().find((p) => p.name === n);
  console.log(JSON.stringify({ name: be.name, y: Array.from(y), cpu: probe('cpu'), cuda: probe('cuda') }));`;
const run = (app: string) => JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: app, encoding: 'utf8' }));

describe('npm pack + install', () => {
  it('builds the addon at install time without nvcc (hidden from PATH) and runs an op on cpu; cuda says why not', () => {
    const path = (process.env.PATH ?? '').split(delimiter).filter((d) => !existsSync(join(d, 'nvcc'))).join(delimiter);
    const out = run(installInto('with-addon', { PATH: path, CUDACXX: '' }));
    expect(out).toEqual({
      name: 'cpu', y: [0, 0.5, 2], cpu: { name: 'cpu', available: true },
      cuda: { name: 'cuda', available: false, reason: 'this build has no CUDA backend: no nvcc at build time (put the CUDA toolkit on PATH or set CUDACXX, then run npm run build:native)' },
    });
  });

  it('installs without the addon and runs an op on wasm, reporting why cpu is unavailable', () => {
    const out = run(installInto('without-addon', { SANA_SKIP_NATIVE_BUILD: '1' }));
    expect(out.name).toBe('wasm');
    expect(out.y).toEqual([0, 0.5, 2]);
    expect(out.cpu).toEqual({ name: 'cpu', available: false, reason: 'native addon not built (SANA_SKIP_NATIVE_BUILD=1 was set)' });
  });
});
