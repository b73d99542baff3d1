// `sana render` as a user runs it: 6 prompts over 2 CPU workers, Ctrl-C part-way (exit 130, promptly, only
// whole files left, no worker keeping the process alive), then the same command again finishes the rest
// and the result equals an uninterrupted render. Also `sana generate --decode`.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, describe, expect, it } from 'vitest';

import { packageRoot } from '../../ts/paths.js';
import { slug } from '../../ts/pool/sana-pool.js';

const cli = join(packageRoot(), 'dist', 'ts', 'cli', 'sana.js');
const root = mkdtempSync(join(tmpdir(), 'sana-render-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const PROMPTS = ['a red circle on a blue background', 'a small green square at the top left on a white background', 'a yellow triangle on a black background',
  'a white circle at the bottom right on a red background', 'a large blue square on a yellow background', 'a black triangle at the center on a green background'];
const file = join(root, 'prompts.txt');
writeFileSync(file, `# six prompts\n${PROMPTS.join('\n')}\n`);

const renderArgs = (out: string) => [cli, 'render', file, '--devices', 'cpu,cpu', '--out', out, '--steps', '60', '--seed', '100'];
const pngs = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.png')).sort();

describe('sana render', () => {
  it('6 prompts over 2 workers: interrupted with Ctrl-C, then resumed, equals an uninterrupted render', async () => {
    const full = join(root, 'full');
    const r = spawnSync(process.execPath, renderArgs(full), { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/rendered 6, skipped 0/);
    expect(r.stderr).toMatch(/cpu#0: \d+ images?, [\d.]+ images\/min/);
    expect(r.stderr).toMatch(/cpu#1: \d+ images?, [\d.]+ images\/min/);
    expect(pngs(full)).toEqual(PROMPTS.map((p, i) => `000${i + 1}-seed${100 + i}-${slug(p)}.png`));

    const out = join(root, 'resumed');
    const child = spawn(process.execPath, renderArgs(out), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    // interrupt once the first image is written
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        let n = 0;
        try { n = pngs(out).length; } catch { /* not created yet */ }
        if (n >= 1) {
          clearInterval(poll);
          resolve();
        }
      }, 20);
    });
    const t0 = performance.now();
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(code, stderr).toBe(130);
    expect(stderr).toMatch(/aborted/);
    const partial = pngs(out);
    expect(partial.length).toBeGreaterThanOrEqual(1);
    expect(partial.length).toBeLessThan(6);
    expect(readdirSync(out).filter((f) => !f.endsWith('.png'))).toEqual([]); // no half-written files

    const again = spawnSync(process.execPath, renderArgs(out), { encoding: 'utf8' });
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toContain(`rendered ${6 - partial.length}, skipped ${partial.length}`);
    expect(pngs(out)).toEqual(pngs(full));
    for (const f of pngs(full)) expect(readFileSync(join(out, f)).equals(readFileSync(join(full, f))), f).toBe(true);
  });

  it('usage errors exit 2 with the reason', () => {
    const r = spawnSync(process.execPath, [cli, 'render', file, '--devices', 'cpu,tpu'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/Expected one of cuda:N, cpu, wasm for a device but received "tpu"/);
    const missing = spawnSync(process.execPath, [cli, 'render', join(root, 'nope.txt')], { encoding: 'utf8' });
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/cannot read the prompts file .*nope\.txt \(ENOENT\)/);
  });
});

describe('sana generate --decode', () => {
  it.each([['full'], ['sharded'], ['tiled']])('--decode %s writes the same picture and says how it decoded', (mode) => {
    const png = join(root, `${mode}.png`);
    const r = spawnSync(process.execPath, [cli, 'generate', 'a red circle on a blue background', '--seed', '3', '--decode', mode, '-o', png], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`decode \\d+ ms \\(${mode}: requested`));
    if (mode !== 'full') {
      // equal to the full decode within fp32 rounding: a pixel may land on the other side of a uint8 step
      const [a, b] = [png, join(root, 'full.png')].map((f) => PNG.sync.read(readFileSync(f)).data);
      expect(a.length).toBe(b.length);
      expect(a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0)).toBeLessThanOrEqual(1);
    }
  });

  it('--decode auto says what it chose; a bad mode is a usage error', () => {
    const r = spawnSync(process.execPath, [cli, 'generate', 'a red circle on a blue background', '-o', join(root, 'auto.png')], { encoding: 'utf8' });
    expect(r.stderr).toMatch(/\(full: auto: a full decode needs about \d+ MiB, within the [\d.]+ GiB budget\)/);
    const tiled = spawnSync(process.execPath, [cli, 'generate', 'a red circle on a blue background', '--tile', '32/16', '-o', join(root, 'tile.png')], { encoding: 'utf8' });
    expect(tiled.stderr).toMatch(/\(tiled: requested: tiles 32\/32 px, stride 16\/16 px/); // --tile implies --decode tiled
    const conflict = spawnSync(process.execPath, [cli, 'generate', 'x', '--tile', '32/16', '--decode', 'full'], { encoding: 'utf8' });
    expect(conflict.status).toBe(2);
    expect(conflict.stderr).toMatch(/Expected decode 'tiled' with tiling but received "full"/);
    const bad = spawnSync(process.execPath, [cli, 'generate', 'x', '--decode', 'tiles'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/Expected one of auto, full, tiled, sharded but received "tiles"/);
  });
});
