// npm run bench:decode — the real DC-AE f32c32 decoder (Sana's widths, random weights from
// ../shared/peer/dcae_f32c32_decoder_512) decoding 1024², 2048² and 4096² images: time and peak resident memory
// of each decode mode, each measured in a fresh process (peak RSS = VmHWM of that process, worker threads included):
//   full       one piece, in-process, all cores
//   tiled      diffusers' tiling (512/448; 1024/896 at 4096²), in-process, all cores
//   sharded-1  exact sharded decode on a SanaPool of one CPU worker with one thread
//   sharded-2  the same on two CPU workers with one thread each (the 1 → 2 worker speedup)
// First it checks our decode of the peer's 512² latent against the torch output, and sharded against full.
// Options: --sizes=1024,2048,4096  --modes=full,tiled,sharded-1,sharded-2  --skip-check  (full is skipped where its estimated
// memory exceeds half of this machine's). A 4096² decode is ~134 TFLOP: many minutes per mode on 2 cores.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';

import { createBackend } from '../ts/backends/registry.js';
import { ConfigReader } from '../ts/io/config.js';
import { SafetensorsFile } from '../ts/io/safetensors.js';
import { AutoencoderDC } from '../ts/models/autoencoder-dc.js';
import { readAutoencoderDcConfig } from '../ts/models/dcae-config.js';
import { estimateDecodeBytes } from '../ts/models/dcae-sharded.js';
import { packageRoot } from '../ts/paths.js';
import { randn, TorchGenerator } from '../ts/pipeline/torch-random.js';
import { createSanaPool } from '../ts/pool/sana-pool.js';

const CASE = 'dcae_f32c32_decoder_512';
const MODES = ['full', 'tiled', 'sharded-1', 'sharded-2'] as const;
type Mode = (typeof MODES)[number];

const args = process.argv.slice(2);
const opt = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const root = packageRoot();
const peerSrc = process.env.SANA_PEER_DIR ?? join(root, '..', 'shared', 'peer');
const dir = join(root, '.peer', CASE);
const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

function materialise(): void {
  if (existsSync(join(dir, 'diffusion_pytorch_model.safetensors'))) return;
  console.error(`generating ${CASE} weights into ${dir} ...`);
  execFileSync(process.execPath, [join(peerSrc, 'make-weights.mjs'), join(peerSrc, CASE), dir], { stdio: 'inherit' });
}

/** The latent of one size: randn / scaling_factor as the pipeline passes it, seeded. */
function latent(px: number): { z: Float32Array; shape: [number, number, number, number] } {
  const h = px / 32;
  const z = randn(new TorchGenerator(1n), 32 * h * h, 'float32') as Float32Array;
  return { z: z.map((v) => v / 0.41407), shape: [1, 32, h, h] };
}

function peakRssBytes(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : process.memoryUsage().rss;
}

/** One measurement in this (fresh) process. */
async function one(px: number, mode: Mode): Promise<void> {
  const { z, shape } = latent(px);
  let ms: number;
  let out: Float32Array;
  if (mode === 'full' || mode === 'tiled') {
    const be = await createBackend('cpu');
    const vae = AutoencoderDC.fromFolder(dir, be);
    const big = px >= 4096;
    const tiling = mode === 'tiled' ? { tileSampleMinHeight: big ? 1024 : 512, tileSampleMinWidth: big ? 1024 : 512, tileSampleStrideHeight: big ? 896 : 448, tileSampleStrideWidth: big ? 896 : 448 } : undefined;
    const t0 = performance.now();
    out = vae.decode(z, shape, { tiling });
    ms = performance.now() - t0;
  } else {
    const workers = mode === 'sharded-1' ? 1 : 2;
    const pool = await createSanaPool({ model: dir, kind: 'vae', devices: Array(workers).fill('cpu'), threadsPerWorker: 1 });
    let tasks = 0;
    const t0 = performance.now();
    out = await pool.decode(z, shape, {
      onProgress: (e) => {
        if (e.status === 'pass') process.stderr.write(`  ${px}² ${mode}: pass ${e.index + 1}/${e.count} ${e.label} (${e.tasks} shards)\n`);
        if (e.status === 'task-done') tasks++;
      },
    });
    ms = performance.now() - t0;
    await pool.dispose();
    process.stderr.write(`  ${px}² ${mode}: ${tasks} tasks\n`);
  }
  let sum = 0;
  for (const v of out) sum += v;
  console.log(JSON.stringify({ px, mode, ms: Math.round(ms), peakRssMiB: Math.round(peakRssBytes() / 2 ** 20), checksum: sum / out.length }));
}

/** Our decode of the peer's latent against the torch output; sharded (2 workers) against full. */
async function check(): Promise<void> {
  const inputs = SafetensorsFile.open(join(dir, 'inputs.safetensors'));
  const t = inputs.read('latent');
  inputs.close();
  const outputs = SafetensorsFile.open(join(dir, 'outputs.safetensors'));
  const expected = outputs.read('output').data as Float32Array;
  outputs.close();
  const shape = t.info.shape as [number, number, number, number];
  const be = await createBackend('cpu');
  const vae = AutoencoderDC.fromFolder(dir, be);
  const full = vae.decode(t.data as Float32Array, shape);
  vae.dispose();
  const pool = await createSanaPool({ model: dir, kind: 'vae', devices: 'cpu,cpu', threadsPerWorker: 1 });
  const sharded = await pool.decode(t.data as Float32Array, shape, { shardBytes: 64 * 2 ** 20 });
  await pool.dispose();
  const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
  const maxRef = expected.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  console.log(JSON.stringify({ check: `${CASE} 512²`, fullVsTorch: maxDiff(full, expected), shardedVsFull: maxDiff(sharded, full), maxAbsRef: maxRef }));
}

async function main(): Promise<void> {
  materialise();
  if (opt('one')) {
    const [px, mode] = opt('one')!.split(':');
    return one(Number(px), mode as Mode);
  }
  if (!args.includes('--skip-check')) await check();
  const sizes = (opt('sizes') ?? '1024,2048,4096').split(',').map(Number);
  const modes = (opt('modes') ?? MODES.join(',')).split(',') as Mode[];
  const config = readAutoencoderDcConfig(ConfigReader.load(dir));
  const script = join(root, 'dist', 'bench', 'decode.js');
  const results: Record<string, { ms: number; peakRssMiB: number }> = {};
  for (const px of sizes)
    for (const mode of modes) {
      if (mode === 'full' && estimateDecodeBytes(config, px / 32, px / 32, 'full') > totalmem() / 2) {
        console.log(JSON.stringify({ px, mode, skipped: `estimated ${gib(estimateDecodeBytes(config, px / 32, px / 32, 'full'))} > half of this machine's ${gib(totalmem())}` }));
        continue;
      }
      const line = execFileSync(process.execPath, [script, `--one=${px}:${mode}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 }).trim();
      console.log(line);
      results[`${px}:${mode}`] = JSON.parse(line);
    }
  for (const px of sizes) {
    const a = results[`${px}:sharded-1`];
    const b = results[`${px}:sharded-2`];
    if (a && b) console.log(JSON.stringify({ px, speedupOneToTwoWorkers: +(a.ms / b.ms).toFixed(2) }));
  }
}

await main();
