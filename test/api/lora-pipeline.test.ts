// LoRA through the entry points a user has: SanaPipeline (worker) loadLora / setLoraScale / unloadLora /
// loras, `sana generate --lora file[:scale]`, and `sana render` lines with "lora" (the pool applies each job's
// set). The numerics of the merge are test/models/lora.test.ts.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { SafetensorsFile } from '../../ts/io/safetensors.js';
import { SanaPipeline } from '../../ts/pipeline/sana-pipeline.js';
import { createSanaPool, readRenderJobs } from '../../ts/pool/sana-pool.js';
import { uniform, writeSafetensors } from '../fixtures/random-dcae.js';
import { golden, needs } from '../fixtures/shared.js';
import { tinyPipeline, withChiVocabulary } from '../fixtures/tiny-pipeline.js';

const dir = mkdtempSync(join(tmpdir(), 'sana-lora-pipe-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const base = { width: 64, height: 64, steps: 2, useResolutionBinning: false, complexHumanInstruction: null, maxSequenceLength: 8, seed: 5 } as const;

let model = '';
let adapter = '';
beforeAll(() => {
  if (!golden.present) return;
  model = withChiVocabulary(tinyPipeline(join(dir, 'model')));
  const f = SafetensorsFile.open(join(model, 'transformer', 'diffusion_pytorch_model.safetensors'));
  const shapeOf = (n: string) => f.tensors.get(n)!.shape;
  const u = uniform(3);
  const tensors = ['transformer_blocks.0.attn1.to_q', 'transformer_blocks.0.attn2.to_out.0'].flatMap((m) => {
    const [out, inp] = shapeOf(`${m}.weight`);
    return [
      { name: `transformer.${m}.lora_A.weight`, shape: [4, inp], data: Float32Array.from({ length: 4 * inp }, () => 0.5 * u()) },
      { name: `transformer.${m}.lora_B.weight`, shape: [out, 4], data: Float32Array.from({ length: out * 4 }, () => 0.5 * u()) },
    ];
  });
  f.close();
  adapter = join(dir, 'style.safetensors');
  writeSafetensors(adapter, tensors);
});

describe.skipIf(!golden.present)(needs(golden, 'LoRA in the pipeline, the CLI and render lines'), () => {
  it('SanaPipeline: load changes the image, scale 0 and unload restore it exactly, loras() lists them', async () => {
    const pipe = await SanaPipeline.fromPretrained(model, { backend: 'cpu' });
    try {
      const plain = Buffer.from((await pipe.generate('a red cube', base)).images[0].data);
      expect(await pipe.loadLora(adapter, { scale: 0.8 })).toBe('style');
      expect(await pipe.loras()).toEqual([{ name: 'style', file: adapter, scale: 0.8, modules: 2 }]);
      const styled = Buffer.from((await pipe.generate('a red cube', base)).images[0].data);
      expect(styled).not.toEqual(plain);
      await pipe.setLoraScale('style', 0);
      expect(Buffer.from((await pipe.generate('a red cube', base)).images[0].data)).toEqual(plain);
      await pipe.setLoraScale('style', 0.8);
      expect(Buffer.from((await pipe.generate('a red cube', base)).images[0].data)).toEqual(styled);
      await pipe.unloadLora('style');
      expect(await pipe.loras()).toEqual([]);
      expect(Buffer.from((await pipe.generate('a red cube', base)).images[0].data)).toEqual(plain);
      await expect(pipe.unloadLora('style')).rejects.toMatchObject({ code: 'ERR_SANA_INVALID_OPTION' });
    } finally {
      await pipe.dispose();
    }
  });

  it('sana generate --lora file:scale: the same image as the API with that adapter; a bad spec is a usage error', async () => {
    const cli = join(import.meta.dirname, '..', '..', 'dist', 'ts', 'cli', 'sana.js');
    const out = join(dir, 'cli.png');
    const args = ['generate', 'a red cube', '--model', model, '--size', '64x64', '--steps', '2', '--no-binning', '--no-chi', '--max-sequence-length', '8', '--seed', '5', '-o', out];
    const r = spawnSync(process.execPath, [cli, ...args, '--lora', `${adapter}:0.8`], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^LoRA style \(scale 0\.8\)$/m);
    const pipe = await SanaPipeline.fromPretrained(model, { backend: 'auto' });
    try {
      await pipe.loadLora(adapter, { scale: 0.8 });
      const api = (await pipe.generate('a red cube', base)).images[0].data;
      const png = PNG.sync.read(readFileSync(out));
      expect(Buffer.from(png.data.filter((_, i) => i % 4 !== 3))).toEqual(Buffer.from(api));
    } finally {
      await pipe.dispose();
    }
    const bad = spawnSync(process.execPath, [cli, ...args, '--lora', `${adapter}:strong`], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/Expected file\.safetensors or file\.safetensors:scale \(a number\) for a LoRA/);
  });

  it('render lines with "lora": each job gets its own adapter set on the pool, equal to in-process generate', async () => {
    const lines = join(dir, 'jobs.jsonl');
    writeFileSync(lines, [
      JSON.stringify({ prompt: 'a red cube', seed: 5, lora: [`${adapter}:0.8`] }),
      JSON.stringify({ prompt: 'a red cube', seed: 5 }),
    ].join('\n'));
    const jobs = readRenderJobs(lines);
    expect(jobs[0].lora).toEqual([{ path: adapter, scale: 0.8 }]);
    const pool = await createSanaPool({ model, devices: ['cpu'], threadsPerWorker: 1 });
    try {
      // one worker runs both jobs in order: the adapter must be gone for the second
      const summary = await pool.render(jobs.map((j) => ({ ...j, width: 64, height: 64, steps: 2 })), { outDir: join(dir, 'render') });
      const pipe = await SanaPipeline.fromPretrained(model, { backend: 'cpu' });
      try {
        const opts = { width: 64, height: 64, steps: 2, seed: 5 };
        const plain = (await pipe.generate('a red cube', opts)).images[0].data;
        await pipe.loadLora(adapter, { scale: 0.8 });
        const styled = (await pipe.generate('a red cube', opts)).images[0].data;
        const rgb = (f: string) => Buffer.from(PNG.sync.read(readFileSync(f)).data.filter((_, i) => i % 4 !== 3));
        expect(rgb(summary.rendered.find((f) => f.includes('0001-'))!)).toEqual(Buffer.from(styled));
        expect(rgb(summary.rendered.find((f) => f.includes('0002-'))!)).toEqual(Buffer.from(plain));
      } finally {
        await pipe.dispose();
      }
    } finally {
      await pool.dispose();
    }
    writeFileSync(lines, JSON.stringify({ prompt: 'x', lora: 'style.safetensors' }));
    expect(() => readRenderJobs(lines)).toThrow(/jobs\.jsonl:1: Expected an array of "file\[:scale\]" strings for lora/);
  });
});
