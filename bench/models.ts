// npm run bench:models — the real Sana shapes of ../shared/peer against onnxruntime-node in the same run
// (interleaved rounds; ours also without the activation block cache, in the same rounds), each with the
// max |diff| of both to the torch output:
//   * sana_transformer_medium_2l (600M widths, 2 layers): fp32 and bf16-weight modes;
//   * sana_600m_full_1024: the full 28-layer 600M transformer forward (batch 2, 1024 tokens, 300 text tokens);
//   * dcae_f32c32_decoder_512: the real DC-AE f32c32 decoder, 16×16 latent → 512² image;
//   * resident memory after loading the full 600M weights in fp32 and bf16 mode (a fresh process each).
// Weights are generated once by ../shared/peer/make-weights.mjs into .peer/ (git-ignored, ~3.2 GB).
// Options: --skip-full (the medium case only), --threads=N.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import * as ort from 'onnxruntime-node';

import { DEFAULT_CACHE_BYTES } from '../ts/backends/block-cache.js';
import { createBackend } from '../ts/backends/registry.js';
import { SafetensorsFile } from '../ts/io/safetensors.js';
import type { Backend } from '../ts/backends/backend.js';
import { AutoencoderDC } from '../ts/models/autoencoder-dc.js';
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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One model call of a peer case, ours and ORT's: the stored inputs as ORT feeds and as our call. */
interface PeerCall {
  feeds: Record<string, ort.Tensor>;
  expected: Float32Array;
  load(backend: Backend, weightDtype: 'bf16' | undefined): { run(): Float32Array; dispose(): void };
}

function transformerCall(dir: string): PeerCall {
  const f = SafetensorsFile.open(join(dir, 'inputs.safetensors'));
  const [hs, ehs, mask, t] = ['hidden_states', 'encoder_hidden_states', 'encoder_attention_mask', 'timestep'].map((k) => f.read(k));
  f.close();
  const input = {
    hiddenStates: hs.data as Float32Array,
    shape: hs.info.shape as [number, number, number, number],
    encoderHiddenStates: ehs.data as Float32Array,
    textLength: ehs.info.shape[1],
    encoderAttentionMask: Array.from(mask.data as BigInt64Array, Number),
    timestep: t.data as Float32Array,
  };
  return {
    feeds: {
      hidden_states: new ort.Tensor('float32', input.hiddenStates, hs.info.shape),
      encoder_hidden_states: new ort.Tensor('float32', input.encoderHiddenStates, ehs.info.shape),
      timestep: new ort.Tensor('float32', input.timestep, t.info.shape),
      encoder_attention_mask: new ort.Tensor('int64', mask.data as BigInt64Array, mask.info.shape),
    },
    expected: readOutput(dir),
    load: (backend, weightDtype) => {
      const model = SanaTransformer2DModel.fromFolder(dir, backend, { weightDtype });
      return { run: () => model.forward(input), dispose: () => model.dispose() };
    },
  };
}

function decoderCall(dir: string): PeerCall {
  const f = SafetensorsFile.open(join(dir, 'inputs.safetensors'));
  const z = f.read('latent');
  f.close();
  const shape = z.info.shape as [number, number, number, number];
  return {
    feeds: { latent: new ort.Tensor('float32', z.data as Float32Array, shape) },
    expected: readOutput(dir),
    load: (backend, weightDtype) => {
      const vae = AutoencoderDC.fromFolder(dir, backend, { weightDtype });
      return { run: () => vae.decode(z.data as Float32Array, shape), dispose: () => vae.dispose() };
    },
  };
}

function readOutput(dir: string): Float32Array {
  const out = SafetensorsFile.open(join(dir, 'outputs.safetensors'));
  const expected = out.read('output').data as Float32Array;
  out.close();
  return expected;
}

/** Ours (with the activation block cache, and without it in the same rounds) against ORT on one peer case:
 * median of `rounds` interleaved runs after a warm-up each, max |diff| of both to the torch output. */
async function versusOrt(name: string, call: (dir: string) => PeerCall, weightDtypes: ('bf16' | undefined)[], rounds: number): Promise<void> {
  const dir = materialise(name);
  const c = call(dir);
  const backend = await createBackend('cpu', { threads });
  const sess = await ort.InferenceSession.create(join(dir, 'model.onnx'), {
    intraOpNumThreads: backend.info.threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
  });
  const ortOut = (await sess.run(c.feeds)).output.data as Float32Array;
  const maxDiff = (a: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - c.expected[i])), 0);
  const timed = (fn: () => unknown) => {
    const t0 = performance.now();
    fn();
    return performance.now() - t0;
  };
  for (const weightDtype of weightDtypes) {
    const model = c.load(backend, weightDtype);
    const ours = model.run();
    const samples = { ours: [] as number[], ort: [] as number[], oursNoCache: [] as number[] };
    for (let r = 0; r < rounds; r++) {
      await sleep(50); // ORT's spinning threads go idle first
      samples.ours.push(timed(() => model.run()));
      const t0 = performance.now();
      await sess.run(c.feeds);
      samples.ort.push(performance.now() - t0);
      await sleep(50);
      // every activation a fresh allocation, as before the cache
      backend.setCacheLimit(0);
      samples.oursNoCache.push(timed(() => model.run()));
      backend.setCacheLimit(DEFAULT_CACHE_BYTES);
      model.run(); // refill the cache
    }
    const med = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1];
    console.log(JSON.stringify({
      bench: name, weights: weightDtype ?? 'fp32', threads: backend.info.threads, variant: backend.info.variant, rounds,
      oursMs: med(samples.ours), ortMs: med(samples.ort), ortOverOurs: med(samples.ort) / med(samples.ours),
      oursNoCacheMs: med(samples.oursNoCache), maxAbsDiffOurs: maxDiff(ours), maxAbsDiffOrt: maxDiff(ortOut),
    }));
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

await versusOrt('sana_transformer_medium_2l', transformerCall, [undefined, 'bf16'], 3);
if (!args.includes('--skip-full')) {
  await versusOrt('sana_600m_full_1024', transformerCall, [undefined], 3);
  await versusOrt('dcae_f32c32_decoder_512', decoderCall, [undefined], 3);
  fullMemory();
}
