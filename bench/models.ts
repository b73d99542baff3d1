// npm run bench:models — the real Sana shapes of ../shared/peer against onnxruntime-node in the same run:
//   * sana_transformer_medium_2l (600M widths, 2 layers): forward time ours vs ORT, max |diff| to the
//     torch output, fp32 and bf16-weight modes;
//   * sana_600m_full_1024 (the full 28-layer 600M transformer): resident memory after loading the weights
//     in fp32 and in bf16 mode (each in a fresh process).
// Weights are generated once by ../shared/peer/make-weights.mjs into .peer/ (git-ignored, ~2.6 GB).
// Options: --skip-full (no 600M memory figures), --threads=N.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import * as ort from 'onnxruntime-node';

import { createBackend } from '../ts/backends/registry.js';
import { SafetensorsFile } from '../ts/io/safetensors.js';
import { SanaTransformer2DModel } from '../ts/models/sana-transformer.js';
import { packageRoot } from '../ts/paths.js';

const args = process.argv.slice(2);
const root = packageRoot();
const peerSrc = process.env.SANA_PEER_DIR ?? join(root, '..', 'shared', 'peer');
const peerOut = join(root, '.peer');
const threads = Number(args.find((a) => a.startsWith('--threads='))?.slice(10) ?? 0);

function materialise(name: string): string {
  const dir = join(peerOut, name);
  if (!existsSync(join(dir, 'diffusion_pytorch_model.safetensors'))) {
    console.error(`generating ${name} weights into ${dir} ...`);
    execFileSync(process.execPath, [join(peerSrc, 'make-weights.mjs'), join(peerSrc, name), dir], { stdio: 'inherit' });
  }
  return dir;
}

function readInputs(dir: string) {
  const f = SafetensorsFile.open(join(dir, 'inputs.safetensors'));
  const get = (k: string) => f.read(k);
  const hs = get('hidden_states');
  const ehs = get('encoder_hidden_states');
  const mask = get('encoder_attention_mask');
  const t = get('timestep');
  f.close();
  const out = SafetensorsFile.open(join(dir, 'outputs.safetensors'));
  const expected = out.read('output').data as Float32Array;
  out.close();
  return { hs, ehs, mask, t, expected };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function medium(): Promise<void> {
  const dir = materialise('sana_transformer_medium_2l');
  const { hs, ehs, mask, t, expected } = readInputs(dir);
  const backend = await createBackend('cpu', { threads });
  const input = {
    hiddenStates: hs.data as Float32Array,
    shape: hs.info.shape as [number, number, number, number],
    encoderHiddenStates: ehs.data as Float32Array,
    textLength: ehs.info.shape[1],
    encoderAttentionMask: Array.from(mask.data as BigInt64Array, Number),
    timestep: t.data as Float32Array,
  };
  const sess = await ort.InferenceSession.create(join(dir, 'model.onnx'), {
    intraOpNumThreads: backend.info.threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
  });
  const feeds = {
    hidden_states: new ort.Tensor('float32', input.hiddenStates, hs.info.shape),
    encoder_hidden_states: new ort.Tensor('float32', input.encoderHiddenStates, ehs.info.shape),
    timestep: new ort.Tensor('float32', input.timestep, t.info.shape),
    encoder_attention_mask: new ort.Tensor('int64', mask.data as BigInt64Array, mask.info.shape),
  };
  const ortOut = (await sess.run(feeds)).output.data as Float32Array;
  const maxDiff = (a: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - expected[i])), 0);
  for (const weightDtype of [undefined, 'bf16'] as const) {
    const model = SanaTransformer2DModel.fromFolder(dir, backend, { weightDtype });
    const ours = model.forward(input);
    const samples = { ours: [] as number[], ort: [] as number[] };
    for (let r = 0; r < 3; r++) {
      await sleep(50); // ORT's spinning threads go idle first
      let t0 = performance.now();
      model.forward(input);
      samples.ours.push(performance.now() - t0);
      t0 = performance.now();
      await sess.run(feeds);
      samples.ort.push(performance.now() - t0);
      await sleep(50);
    }
    const med = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1];
    const row = {
      bench: 'sana_transformer_medium_2l forward', weights: weightDtype ?? 'fp32', threads: backend.info.threads, variant: backend.info.variant,
      oursMs: med(samples.ours), ortMs: med(samples.ort), ratio: med(samples.ort) / med(samples.ours),
      maxAbsDiffOurs: maxDiff(ours), maxAbsDiffOrt: maxDiff(ortOut),
    };
    console.log(JSON.stringify(row));
    model.dispose();
  }
  await sess.release();
  backend.dispose();
}

/** Resident memory after loading the full 600M transformer, in a fresh process per mode. */
function fullMemory(): void {
  const dir = materialise('sana_600m_full_1024');
  for (const mode of ['fp32', 'bf16']) {
    const script = `
      import { createBackend } from ${JSON.stringify(join(root, 'dist', 'ts', 'backends', 'registry.js'))};
      import { SanaTransformer2DModel } from ${JSON.stringify(join(root, 'dist', 'ts', 'models', 'sana-transformer.js'))};
      const before = process.memoryUsage().rss;
      const t0 = performance.now();
      const be = await createBackend('cpu');
      const m = SanaTransformer2DModel.fromFolder(${JSON.stringify(dir)}, be, { weightDtype: ${mode === 'bf16' ? "'bf16'" : 'undefined'} });
      const ms = performance.now() - t0;
      console.log(JSON.stringify({ bench: 'sana_600m_full_1024 load', weights: '${mode}', rssBeforeMiB: Math.round(before / 2 ** 20), rssAfterLoadMiB: Math.round(process.memoryUsage().rss / 2 ** 20), loadMs: Math.round(ms) }));`;
    process.stdout.write(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }));
  }
}

await medium();
if (!args.includes('--skip-full')) fullMemory();
