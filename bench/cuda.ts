// npm run bench:cuda — the CUDA backend at Sana's real shapes (run by scripts/cuda-check/run.sh on a GPU
// machine; one JSON line per result): GEMM TFLOP/s at the DiT's shapes (bf16 tensor cores and fp32), the full
// 600M transformer forward at 1024² (batch 2), the DC-AE f32c32 decode at 1024²
// (one backend) and 4096² (sharded over a pool of every GPU), and whole 1024² images: 20 steps, and
// Sana-Sprint's 2 steps beside them. A part that fails prints its error and the next one runs.
import { availableParallelism } from 'node:os';

import type { Backend } from '../ts/backends/backend.js';
import { createBackend, deviceCount } from '../ts/backends/registry.js';
import { AutoencoderDC } from '../ts/models/autoencoder-dc.js';
import { SanaTransformer2DModel } from '../ts/models/sana-transformer.js';
import { createSanaPool } from '../ts/pool/sana-pool.js';
import { materialise, peerOut } from './peer.js';
import { randArray } from './random.js';
import { wholeImage } from './whole-image.js';

const only = process.argv.find((a) => a.startsWith('--only='))?.slice(7).split(',');
const want = (part: string) => !only || only.includes(part);
const emit = (row: object) => console.log(JSON.stringify(row));

async function part(name: string, fn: () => Promise<void>): Promise<void> {
  if (!want(name)) return;
  try {
    await fn();
  } catch (e) {
    emit({ bench: name, error: `${(e as { code?: string }).code ?? ''} ${(e as Error).message}`.trim() });
  }
}

/** Median wall time of `rounds` calls after one warm-up, each ended by a synchronize. */
async function timeIt(be: Backend, rounds: number, fn: () => void): Promise<number> {
  fn();
  await be.synchronize();
  const ms: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    fn();
    await be.synchronize();
    ms.push(performance.now() - t0);
  }
  return ms.sort((a, b) => a - b)[Math.floor(rounds / 2)];
}

const be = await createBackend('cuda');
emit({ bench: 'device', device: be.info.device, gpus: deviceCount('cuda'), cpuCores: availableParallelism() });

await part('gemm', async () => {
  // tokens 2048 = CFG batch 2 × 1024 tokens of a 1024² image
  for (const [M, K, N, what] of [[2048, 1152, 1152, 'attn out'], [2048, 1152, 3456, 'fused qkv'], [2048, 1152, 5760, 'Mix-FFN expand'], [2048, 2880, 1152, 'Mix-FFN project'], [8192, 1152, 5760, 'Mix-FFN expand, 2048² image']] as const) {
    for (const dtype of ['bf16', 'f32'] as const) {
      const x = be.tensor([M, K], 'f32', randArray(M * K, 1));
      const w = be.tensor([N, K], dtype, randArray(N * K, 2));
      const y = be.empty([M, N]);
      const ms = await timeIt(be, 20, () => be.linear(x, w, { out: y, fastBf16: dtype === 'bf16' }));
      emit({ bench: 'gemm', shape: [M, K, N], what, weights: dtype, engine: dtype === 'bf16' ? 'tensor cores (bf16, fp32 accumulation)' : 'fp32 FMA', ms: +ms.toFixed(3), tflops: +((2 * M * N * K) / ms / 1e9).toFixed(2) });
      for (const t of [x, w, y]) t.dispose();
    }
  }
});

// random inputs of the real shapes (the GPU machine carries the peer cases' configs and manifests, not their
// stored tensors: correctness is the golden suite's, run on cuda by the same check)
await part('600m', async () => {
  const dir = materialise('sana_600m_full_1024');
  const [B, C, H, W, T, caption] = [2, 32, 32, 32, 300, 2304];
  const input = {
    hiddenStates: randArray(B * C * H * W, 5), shape: [B, C, H, W] as const, encoderHiddenStates: randArray(B * T * caption, 6),
    textLength: T, encoderAttentionMask: new Array<number>(B * T).fill(1), timestep: new Float32Array([500, 500]),
  };
  for (const precision of ['bf16', 'fp32'] as const) {
    const model = SanaTransformer2DModel.fromFolder(dir, be, { precision });
    try {
      const ms = await timeIt(be, 5, () => model.forward(input));
      emit({ bench: 'sana_600m_full_1024 forward (batch 2, 1024 tokens, 300 text tokens)', precision, ms: +ms.toFixed(1) });
    } finally {
      model.dispose();
    }
  }
});

await part('dcae', async () => {
  const dir = materialise('dcae_f32c32_decoder_512');
  const vae = AutoencoderDC.fromFolder(dir, be, { precision: 'fp32' });
  try {
    const z1024 = randArray(32 * 32 * 32, 3);
    const ms = await timeIt(be, 3, () => vae.decode(z1024, [1, 32, 32, 32]));
    emit({ bench: 'dcae decode 1024²', ms: +ms.toFixed(1) });
  } finally {
    vae.dispose();
  }
  const gpus = deviceCount('cuda');
  const pool = await createSanaPool({ kind: 'vae', model: dir, devices: Array.from({ length: gpus }, (_, i) => `cuda:${i}`) });
  try {
    const z4k = randArray(32 * 128 * 128, 4);
    const t0 = performance.now();
    const img = await pool.decode(z4k, [1, 32, 128, 128]);
    emit({ bench: 'dcae decode 4096², sharded over the pool', gpus, ms: Math.round(performance.now() - t0), values: img.length });
  } finally {
    await pool.dispose();
  }
});

be.dispose();
await part('e2e', () => wholeImage(peerOut, materialise, { threads: 0, precisions: ['bf16'], backend: 'cuda' }));
await part('sprint', () => wholeImage(peerOut, materialise, { threads: 0, sprint: true, backend: 'cuda' }));
