// npm run bench:models — the real Sana shapes of ../shared/peer against onnxruntime-node in the same run
// (interleaved rounds; ours also without the activation block cache, in the same rounds), each with the
// max |diff| of both to the torch output:
//   * sana_transformer_medium_2l (600M widths, 2 layers): fp32 and bf16-weight modes;
//   * sana_600m_full_1024: the full 28-layer 600M transformer forward (batch 2, 1024 tokens, 300 text tokens);
//   * dcae_f32c32_decoder_512: the real DC-AE f32c32 decoder, 16×16 latent → 512² image;
//   * gemma2_2b_6l: the Gemma-2-2B text encoder at its real widths, 6 of its 26 layers, bf16 weights;
//   * the 600M, DC-AE and Gemma cases in both compute precisions (fp32, bf16), each with a per-op profile;
//   * a busy neighbour: the medium forward and the DC-AE decode with a busy-loop process on one core, ours and
//     ORT's slowdown;
//   * resident memory after loading the full 600M weights in fp32 and bf16 mode (a fresh process each).
// Weights are generated once by ../shared/peer/make-weights.mjs into .peer/ (git-ignored, ~3.2 GB).
//   * e2e: one whole 1024² image at the real sizes, 20 steps, in bf16 and fp32 (bench/whole-image.ts).
// Options: --skip-full (the medium case only), --only=medium,busy,600m,dcae,busy-dcae,gemma,memory,e2e,sprint, --e2e-bf16-only, --threads=N.
import { execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';

import * as ort from 'onnxruntime-node';
import { decoderInput, materialise, peerOut, readOutput, transformerInput } from './peer.js';

import { DEFAULT_CACHE_BYTES } from '../ts/backends/block-cache.js';
import { createBackend } from '../ts/backends/registry.js';
import { SafetensorsFile } from '../ts/io/safetensors.js';
import type { Backend } from '../ts/backends/backend.js';
import { AutoencoderDC } from '../ts/models/autoencoder-dc.js';
import { Gemma2Model } from '../ts/models/gemma2.js';
import type { LoadOptions } from '../ts/models/params.js';
import { SanaTransformer2DModel } from '../ts/models/sana-transformer.js';
import { packageRoot } from '../ts/paths.js';
import { wholeImage } from './whole-image.js';

const args = process.argv.slice(2);
const root = packageRoot();
const threads = Number(args.find((a) => a.startsWith('--threads='))?.slice(10) ?? 0);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One model call of a peer case, ours and ORT's: the stored inputs as ORT feeds and as our call. */
interface PeerCall {
  feeds: Record<string, ort.Tensor>;
  expected: Float32Array;
  load(backend: Backend, opts: LoadOptions): { run(): Float32Array; dispose(): void };
}

/** The ways ours runs a case: compute precision (and reduced-precision weights for the medium case). */
type Mode = { label: string; load: LoadOptions };
const FP32: Mode = { label: 'fp32', load: { precision: 'fp32' } };
const BF16: Mode = { label: 'bf16 precision', load: { precision: 'bf16' } };
const BF16_WEIGHTS: Mode = { label: 'bf16 weights, fp32 arithmetic', load: { precision: 'fp32', weightDtype: 'bf16' } };

function transformerCall(dir: string): PeerCall {
  const { input, tensors } = transformerInput(dir);
  const feeds: Record<string, ort.Tensor> = {};
  for (const [name, t] of Object.entries(tensors)) feeds[name] = new ort.Tensor(t.data instanceof BigInt64Array ? 'int64' : 'float32', t.data, t.shape);
  return {
    feeds,
    expected: readOutput(dir),
    load: (backend, opts) => {
      const model = SanaTransformer2DModel.fromFolder(dir, backend, opts);
      return { run: () => model.forward(input), dispose: () => model.dispose() };
    },
  };
}

function decoderCall(dir: string): PeerCall {
  const { z, shape } = decoderInput(dir);
  return {
    feeds: { latent: new ort.Tensor('float32', z, shape) },
    expected: readOutput(dir),
    load: (backend, opts) => {
      const vae = AutoencoderDC.fromFolder(dir, backend, opts);
      return { run: () => vae.decode(z, shape), dispose: () => vae.dispose() };
    },
  };
}

/** Gemma over all 509 positions (the pad rows too, as the pipeline runs it): compared on every row. */
function gemmaCall(dir: string): PeerCall {
  const f = SafetensorsFile.open(join(dir, 'inputs.safetensors'));
  const [ids, mask] = ['input_ids', 'attention_mask'].map((k) => f.read(k));
  f.close();
  const [B, L] = ids.info.shape;
  const out = SafetensorsFile.open(join(dir, 'outputs.safetensors'));
  const expected = out.read('last_hidden_state').data as Float32Array;
  out.close();
  return {
    feeds: { input_ids: new ort.Tensor('int64', ids.data as BigInt64Array, ids.info.shape), attention_mask: new ort.Tensor('int64', mask.data as BigInt64Array, mask.info.shape) },
    expected,
    load: (backend, opts) => {
      const model = Gemma2Model.fromFolder(dir, backend, opts);
      const idArr = Array.from(ids.data as BigInt64Array, Number);
      const maskArr = Array.from(mask.data as BigInt64Array, Number);
      return { run: () => model.forward(idArr, maskArr, B, L), dispose: () => model.dispose() };
    },
  };
}

/** Ours (with the activation block cache, and without it in the same rounds) against ORT on one peer case:
 * median of `rounds` interleaved runs after a warm-up each, max |diff| of both to the torch output. */
async function versusOrt(name: string, call: (dir: string) => PeerCall, modes: Mode[], rounds: number, profileTop = 0): Promise<void> {
  const dir = materialise(name);
  const c = call(dir);
  const backend = await createBackend('cpu', { threads });
  const sess = await ort.InferenceSession.create(join(dir, 'model.onnx'), {
    intraOpNumThreads: backend.info.threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
  });
  const ortOut = Object.values(await sess.run(c.feeds))[0].data as Float32Array;
  const maxDiff = (a: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - c.expected[i])), 0);
  const timed = (fn: () => unknown) => {
    const t0 = performance.now();
    fn();
    return performance.now() - t0;
  };
  for (const mode of modes) {
    const model = c.load(backend, mode.load);
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
      bench: name, mode: mode.label, threads: backend.info.threads, variant: backend.info.variant, rounds,
      oursMs: med(samples.ours), ortMs: med(samples.ort), ortOverOurs: med(samples.ort) / med(samples.ours),
      oursNoCacheMs: med(samples.oursNoCache), maxAbsDiffOurs: maxDiff(ours), relL2Ours: relL2(ours, c.expected), maxAbsDiffOrt: maxDiff(ortOut),
    }));
    if (profileTop > 0) {
      backend.profile(true);
      const total = timed(() => model.run());
      const ops = backend.profileReport();
      backend.profile(false);
      const inOps = ops.reduce((a, o) => a + o.ms, 0);
      console.log(JSON.stringify({
        bench: `${name} profile`, mode: mode.label, totalMs: Math.round(total), outsideOpsPct: +((100 * (total - inOps)) / total).toFixed(1),
        top: ops.slice(0, profileTop).map((o) => ({ op: o.op, calls: o.calls, ms: Math.round(o.ms), pct: +((100 * o.ms) / total).toFixed(1) })),
      }));
    }
    model.dispose();
  }
  await sess.release();
  backend.dispose();
}

function relL2(a: Float32Array, e: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < e.length; i++) {
    num += (a[i] - e[i]) ** 2;
    den += e[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/** One peer case, ours (fp32) and ORT's, alone and beside a busy-loop process (a core taken by someone else). */
async function busyNeighbour(name: string, call: (dir: string) => PeerCall, rounds: number): Promise<void> {
  const dir = materialise(name);
  const c = call(dir);
  const backend = await createBackend('cpu', { threads });
  const sess = await ort.InferenceSession.create(join(dir, 'model.onnx'), { intraOpNumThreads: backend.info.threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' });
  const model = c.load(backend, FP32.load);
  const time = async (fn: () => unknown) => {
    const t0 = performance.now();
    await fn();
    return performance.now() - t0;
  };
  const measure = async () => {
    const ours: number[] = [];
    const theirs: number[] = [];
    for (let r = 0; r < rounds; r++) {
      ours.push(await time(() => model.run()));
      theirs.push(await time(() => sess.run(c.feeds)));
    }
    const med = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1];
    return { ours: med(ours), ort: med(theirs) };
  };
  model.run();
  await sess.run(c.feeds);
  const quiet = await measure();
  const busy = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
  await sleep(200);
  let loaded: { ours: number; ort: number };
  try {
    loaded = await measure();
  } finally {
    busy.kill('SIGKILL');
  }
  console.log(JSON.stringify({
    bench: `busy neighbour: ${name} fp32`, threads: backend.info.threads, rounds,
    oursQuietMs: Math.round(quiet.ours), oursBusyMs: Math.round(loaded.ours), oursSlowdown: +(loaded.ours / quiet.ours).toFixed(2),
    ortQuietMs: Math.round(quiet.ort), ortBusyMs: Math.round(loaded.ort), ortSlowdown: +(loaded.ort / quiet.ort).toFixed(2),
  }));
  model.dispose();
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

const only = args.find((a) => a.startsWith('--only='))?.slice(7).split(',');
const want = (part: string) => !only || only.includes(part);
if (want('medium')) await versusOrt('sana_transformer_medium_2l', transformerCall, [FP32, BF16_WEIGHTS, BF16], 3);
if (want('busy')) await busyNeighbour('sana_transformer_medium_2l', transformerCall, 3);
if (!args.includes('--skip-full')) {
  if (want('600m')) await versusOrt('sana_600m_full_1024', transformerCall, [FP32, BF16], 3, 8);
  if (want('dcae')) await versusOrt('dcae_f32c32_decoder_512', decoderCall, [FP32], 3, 8);
  if (want('busy-dcae')) await busyNeighbour('dcae_f32c32_decoder_512', decoderCall, 3);
  if (want('gemma')) await versusOrt('gemma2_2b_6l', gemmaCall, [FP32, BF16], 3, 8);
  if (want('memory')) fullMemory();
  if (want('e2e')) await wholeImage(peerOut, materialise, { threads, precisions: args.includes('--e2e-bf16-only') ? ['bf16'] : undefined });
  if (only?.includes('sprint')) await wholeImage(peerOut, materialise, { threads, sprint: true }); // asked for only: two more whole images
}
