// The README's API example, run as written (only the model folder, the prompt and the size are swapped
// for the tiny test pipeline), from a project that installed this package.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, describe, expect, it } from 'vitest';

import { demoModelDir, packageRoot } from '../../ts/paths.js';
import { SafetensorsFile } from '../../ts/io/safetensors.js';
import { writeSafetensors } from '../fixtures/random-dcae.js';
import { golden, needs } from '../fixtures/shared.js';
import { tinyPipeline, tinySprintPipeline } from '../fixtures/tiny-pipeline.js';

const dir = mkdtempSync(join(tmpdir(), 'sana-readme-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('README', () => {
  it.skipIf(!golden.present)(needs(golden, 'the CLI examples of "Text to image" run (on the tiny pipeline instead of the 600M folder)'), () => {
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

  it.skipIf(!golden.present)(needs(golden, 'the API example runs and writes fox.png'), () => {
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

  it.skipIf(!golden.present)(needs(golden, 'the Sana-Sprint examples run (on the tiny Sprint pipeline)'), () => {
    const readme = readFileSync(join(packageRoot(), 'README.md'), 'utf8');
    const section = /### Sana-Sprint[\s\S]*?(?=\n## )/.exec(readme)?.[0] ?? '';
    const model = tinySprintPipeline(join(dir, 'sprint-model'));
    const cwd = join(dir, 'sprint');
    mkdirSync(join(cwd, 'node_modules'), { recursive: true });
    symlinkSync(packageRoot(), join(cwd, 'node_modules', 'sana-node'));
    const commands = (/```sh\n([\s\S]*?)```/.exec(section)?.[1] ?? '').split('\n').map((l) => l.replace(/#.*$/, '').trim()).filter((l) => l.startsWith('npx sana '));
    expect(commands.length).toBe(2);
    for (const command of commands) {
      const args = (command.slice('npx sana '.length).match(/"[^"]*"|\S+/g) ?? []).map((a) => a.replace(/^"|"$/g, ''))
        .map((a) => (a === './Sana_Sprint_0.6B_1024px_diffusers' ? model : a === 'a red fox in the snow' ? 'a red cube' : a));
      execFileSync(process.execPath, [join(packageRoot(), 'dist', 'ts', 'cli', 'sana.js'), ...args], { cwd, stdio: 'pipe' });
    }
    expect(PNG.sync.read(readFileSync(join(cwd, 'fox4.png'))).width).toBe(128); // the default size: sample_size 32 × the tiny VAE's 4
    const example = /```js\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
    const code = `import { writeFile } from 'node:fs/promises';\nimport { SanaPipeline } from 'sana-node';\n` +
      example.replace("'./Sana_Sprint_0.6B_1024px_diffusers'", JSON.stringify(model)).replace("'a red fox in the snow'", "'a red cube'") +
      `await writeFile('api.png', await images[0].toPNG());\nawait sprint.dispose();\n`;
    expect(code).not.toContain('Sana_Sprint_0.6B');
    writeFileSync(join(cwd, 'sprint.mjs'), code);
    execFileSync(process.execPath, ['sprint.mjs'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    expect(PNG.sync.read(readFileSync(join(cwd, 'api.png'))).width).toBe(128);
  });

  it.skipIf(!golden.present)(needs(golden, 'the image-to-image and LoRA examples run (demo model; tiny pipeline with a random adapter)'), () => {
    const readme = readFileSync(join(packageRoot(), 'README.md'), 'utf8');
    const section = /### Image to image and LoRA adapters[\s\S]*?(?=\n## )/.exec(readme)?.[0] ?? '';
    const cwd = join(dir, 'i2i');
    mkdirSync(cwd, { recursive: true });
    const png = new PNG({ width: 64, height: 64 });
    for (let p = 0; p < 64 * 64; p++) png.data.set((p % 64 - 32) ** 2 + (Math.floor(p / 64) - 32) ** 2 < 225 ? [220, 20, 20, 255] : [255, 255, 255, 255], p * 4);
    writeFileSync(join(cwd, 'red-circle.png'), PNG.sync.write(png));
    const model = tinyPipeline(join(dir, 'lora-model'));
    // a random rank-2 adapter on one attention projection of the tiny pipeline's transformer
    const weights = SafetensorsFile.open(join(model, 'transformer', 'diffusion_pytorch_model.safetensors'));
    const [out, inp] = weights.tensors.get('transformer_blocks.0.attn1.to_q.weight')!.shape;
    weights.close();
    writeSafetensors(join(cwd, 'fox-style.safetensors'), [
      { name: 'transformer.transformer_blocks.0.attn1.to_q.lora_A.weight', shape: [2, inp], data: new Float32Array(2 * inp).fill(0.05) },
      { name: 'transformer.transformer_blocks.0.attn1.to_q.lora_B.weight', shape: [out, 2], data: new Float32Array(out * 2).fill(0.05) },
    ]);
    const commands = (/```sh\n([\s\S]*?)```/.exec(section)?.[1] ?? '').split('\n').filter((l) => l.startsWith('npx sana '));
    expect(commands.length).toBe(2);
    for (const command of commands) {
      const args = (command.slice('npx sana '.length).match(/"[^"]*"|\S+/g) ?? []).map((a) => a.replace(/^"|"$/g, ''))
        .map((a) => (a === './Sana_600M_1024px_diffusers' ? model : a === 'a red fox in the snow' ? 'a red cube' : a));
      if (args.includes(model)) args.push('--size', '64x64', '--no-binning', '--no-chi', '--steps', '2');
      execFileSync(process.execPath, [join(packageRoot(), 'dist', 'ts', 'cli', 'sana.js'), ...args], { cwd, stdio: 'pipe' });
    }
    expect(PNG.sync.read(readFileSync(join(cwd, 'blue.png'))).width).toBe(64); // the colour change is test/api/img2img.test.ts
    expect(PNG.sync.read(readFileSync(join(cwd, 'fox.png'))).width).toBe(64);
  });

  it('the examples of "Big images and batches" run (on the built-in demo model)', () => {
    const readme = readFileSync(join(packageRoot(), 'README.md'), 'utf8');
    const section = /## Big images and batches[\s\S]*?(?=\n## )/.exec(readme)?.[0] ?? '';
    const cli = join(packageRoot(), 'dist', 'ts', 'cli', 'sana.js');
    const cwd = join(dir, 'big');
    mkdirSync(join(cwd, 'node_modules'), { recursive: true });
    symlinkSync(packageRoot(), join(cwd, 'node_modules', 'sana-node'));
    writeFileSync(join(cwd, 'prompts.txt'), 'a red circle on a blue background\na green square on a white background\n');
    const commands = (/```sh\n([\s\S]*?)```/.exec(section)?.[1] ?? '').split('\n').filter((l) => l.startsWith('npx sana '));
    expect(commands.length).toBe(2);
    for (const command of commands) {
      const args = (command.slice('npx sana '.length).match(/"[^"]*"|\S+/g) ?? []).map((a) => a.replace(/^"|"$/g, ''))
        .map((a) => (a.startsWith('./Sana_') ? demoModelDir() : a === '4096x4096' ? '64x64' : a));
      execFileSync(process.execPath, [cli, ...args], { cwd, stdio: 'pipe' });
    }
    expect(PNG.sync.read(readFileSync(join(cwd, 'big.png'))).width).toBe(64);
    const code = (/```js\n([\s\S]*?)```/.exec(section)?.[1] ?? '').replace("'./Sana_600M_1024px_diffusers'", JSON.stringify(demoModelDir()));
    expect(code).toContain('createSanaPool');
    expect(readdirSync(join(cwd, 'renders')).sort()).toEqual(['0001-seed0-a-red-circle-on-a-blue-background.png', '0002-seed1-a-green-square-on-a-white-background.png']);
    const api = join(dir, 'big-api');
    mkdirSync(join(api, 'node_modules'), { recursive: true });
    symlinkSync(packageRoot(), join(api, 'node_modules', 'sana-node'));
    writeFileSync(join(api, 'pool.mjs'), code);
    execFileSync(process.execPath, ['pool.mjs'], { cwd: api, stdio: ['ignore', 'pipe', 'pipe'] });
    expect(readdirSync(join(api, 'renders')).sort()).toEqual(['0001-seed0-a-red-fox-in-the-snow.png', '0002-seed7-a-blue-bird.png']);
  });
});
