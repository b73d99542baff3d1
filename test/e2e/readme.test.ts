// The README's API example, run as written (only the model folder, the prompt and the size are swapped
// for the tiny test pipeline), from a project that installed this package.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, describe, expect, it } from 'vitest';

import { packageRoot } from '../../ts/paths.js';
import { tinyPipeline } from '../fixtures/tiny-pipeline.js';

const dir = mkdtempSync(join(tmpdir(), 'sana-readme-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('README', () => {
  it('the CLI examples of "Text to image" run (on the tiny pipeline instead of the 600M folder)', () => {
    const readme = readFileSync(join(packageRoot(), 'README.md'), 'utf8');
    const block = /## Text to image[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
    const commands = block.split('\n').map((l) => l.replace(/#.*$/, '').trim()).filter((l) => l.startsWith('npx sana '));
    expect(commands.length).toBeGreaterThanOrEqual(3);
    const model = tinyPipeline(join(dir, 'cli-model'));
    for (const command of commands) {
      const args = (command.slice('npx sana '.length).match(/"[^"]*"|\S+/g) ?? []).map((a) => a.replace(/^"|"$/g, ''))
        .map((a) => (a === './Sana_600M_1024px_diffusers' ? model : a === '1024x1024' ? '64x64' : a === 'a red fox in the snow' ? 'a red cube' : a));
      if (args[0] === 'generate' && !args.includes('--help')) args.push('--no-binning', '--no-chi', '--steps', '2');
      execFileSync(process.execPath, [join(packageRoot(), 'dist', 'ts', 'cli', 'sana.js'), ...args], { cwd: dir, stdio: 'pipe' });
    }
    expect(PNG.sync.read(readFileSync(join(dir, 'fox.png'))).width).toBe(64);
  });

  it('the API example runs and writes fox.png', () => {
    const readme = readFileSync(join(packageRoot(), 'README.md'), 'utf8');
    const example = /## Text to image[\s\S]*?```js\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(example).toBeDefined();
    const model = tinyPipeline(join(dir, 'model'));
    const code = example!
      .replace("'./Sana_600M_1024px_diffusers'", JSON.stringify(model))
      .replace("'a red fox in the snow'", "'a red cube'")
      .replace('width: 1024, height: 1024, steps: 20', 'width: 64, height: 64, steps: 2, useResolutionBinning: false, complexHumanInstruction: null');
    expect(code).not.toContain('Sana_600M'); // every substitution applied
    mkdirSync(join(dir, 'node_modules'));
    symlinkSync(packageRoot(), join(dir, 'node_modules', 'sana-node'));
    writeFileSync(join(dir, 'example.mjs'), code);
    execFileSync(process.execPath, ['example.mjs'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    const png = PNG.sync.read(readFileSync(join(dir, 'fox.png')));
    expect([png.width, png.height]).toEqual([64, 64]);
  });
});
