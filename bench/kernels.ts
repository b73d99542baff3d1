// npm run bench:kernels — time and throughput of every op × kernel variant × backend at Sana's shapes,
// plus onnxruntime-node's MatMul on the DiT's GEMM shapes measured in the same run (one-node models built
// here). Prints one JSON line per result (with a fingerprint) and a markdown table at the end.
// Options: --quick (fewer shapes/variants), --ops=linear,attention,fresh,... (subset; 'fresh' = fresh vs reused outputs).
import { execSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';

import * as ort from 'onnxruntime-node';

import type { Backend } from '../ts/backends/backend.js';
import { DEFAULT_CACHE_BYTES } from '../ts/backends/block-cache.js';
import { createBackend, probeBackends } from '../ts/backends/registry.js';
import type { Tensor } from '../ts/tensor/tensor.js';
import { randArray } from './random.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const onlyOps = args.find((a) => a.startsWith('--ops='))?.slice(6).split(',');

const commit = (() => {
  try {
    return execSync('git rev-parse --short HEAD', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
})();
const cpuModel = (() => {
  const model = cpus()[0]?.model ?? 'unknown';
  try {
    // the model name is generic on virtual machines: add family/model ids
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const family = /^cpu family\s*:\s*(\d+)/m.exec(info)?.[1];
    const id = /^model\s*:\s*(\d+)/m.exec(info)?.[1];
    return family && id ? `${model} (family ${family} model ${id})` : model;
  } catch {
    return model;
  }
})();

interface Row {
  op: string;
  shape: string;
  backend: string;
  variant: string;
  threads: number;
  dtype: string;
  ms: number;
  gflops?: number;
  gbps?: number;
  note?: string;
}
const rows: Row[] = [];

function emit(r: Row): void {
  rows.push(r);
  console.log(JSON.stringify({ ...r, commit, cpu: cpuModel, node: process.version }));
}

/** Median wall time of fn after one warm-up, repeated until ~0.6 s or 7 runs. */
async function time(fn: () => unknown | Promise<unknown>): Promise<number> {
  await fn();
  const samples: number[] = [];
  const start = performance.now();
  while (samples.length < 7 && (samples.length < 3 || performance.now() - start < 600)) {
    const t0 = performance.now();
    await fn();
    samples.push(performance.now() - t0);
  }
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1];
}


// ---- a minimal ONNX writer: one MatMul node, weight as an initializer (ORT pre-packs it) ----
function varint(v: number): number[] {
  const out: number[] = [];
  let n = BigInt(v);
  while (n > 127n) {
    out.push(Number(n & 127n) | 128);
    n >>= 7n;
  }
  out.push(Number(n));
  return out;
}
const fieldBytes = (num: number, bytes: ArrayLike<number>) => [...varint((num << 3) | 2), ...varint(bytes.length), ...Array.from(bytes)];
const fieldStr = (num: number, s: string) => fieldBytes(num, Buffer.from(s));
const fieldInt = (num: number, v: number) => [...varint(num << 3), ...varint(v)];
function valueInfo(name: string, dims: number[]): number[] {
  const shape = dims.flatMap((d) => fieldBytes(1, fieldInt(1, d)));
  const tensorType = [...fieldInt(1, 1 /* FLOAT */), ...fieldBytes(2, shape)];
  return [...fieldStr(1, name), ...fieldBytes(2, fieldBytes(1, tensorType))];
}
function matmulModel(M: number, K: number, N: number, wKN: Float32Array): Uint8Array {
  const raw = new Uint8Array(wKN.buffer, wKN.byteOffset, wKN.byteLength);
  const init = [...fieldInt(1, K), ...fieldInt(1, N), ...fieldInt(2, 1), ...fieldStr(8, 'W')];
  const initBytes = new Uint8Array(init.length + 16 + raw.length);
  const head = [...init, ...varint((9 << 3) | 2), ...varint(raw.length)];
  initBytes.set(head);
  initBytes.set(raw, head.length);
  const tensor = initBytes.subarray(0, head.length + raw.length);
  const node = [...fieldStr(1, 'X'), ...fieldStr(1, 'W'), ...fieldStr(2, 'Y'), ...fieldStr(4, 'MatMul')];
  const graphHead = [...fieldBytes(1, node), ...fieldStr(2, 'matmul')];
  const graphTail = [...fieldBytes(11, valueInfo('X', [M, K])), ...fieldBytes(12, valueInfo('Y', [M, N]))];
  const initField = [...varint((5 << 3) | 2), ...varint(tensor.length)];
  const graphLen = graphHead.length + initField.length + tensor.length + graphTail.length;
  const prefix = [...fieldInt(1, 8), ...fieldBytes(8, [...fieldStr(1, ''), ...fieldInt(2, 17)]), ...varint((7 << 3) | 2), ...varint(graphLen)];
  const out = new Uint8Array(prefix.length + graphLen);
  let o = 0;
  for (const part of [prefix, graphHead, initField]) {
    out.set(part, o);
    o += part.length;
  }
  out.set(tensor, o);
  o += tensor.length;
  out.set(graphTail, o);
  return out;
}

// ---- backends and variants ----
const backends: Backend[] = [];
for (const p of probeBackends()) if (p.available) backends.push(await createBackend(p.name));
const cpu = backends.find((b) => b.name === 'cpu');
const wasm = backends.find((b) => b.name === 'wasm');
const hw = cpus().length;

interface Config {
  backend: Backend;
  variant: string;
  threads: number;
}
function configs(all: boolean): Config[] {
  const out: Config[] = [];
  if (cpu) {
    const variants = cpu.info.variants.filter((v) => v !== 'ref');
    const best = variants[variants.length - 1];
    for (const v of all && !quick ? variants : [best]) for (const t of hw > 1 ? [1, hw] : [1]) out.push({ backend: cpu, variant: v, threads: t });
  }
  if (wasm) out.push({ backend: wasm, variant: 'wasm-simd128', threads: 1 });
  return out;
}
function use(c: Config): Backend {
  c.backend.setVariant(c.variant);
  c.backend.setThreads(c.threads);
  return c.backend;
}
const want = (op: string) => !onlyOps || onlyOps.includes(op);

// ---- GEMM at the DiT's shapes: tokens 2048 (= CFG batch 2 × 1024 tokens) ----
const gemmShapes: [number, number, number, string][] = [
  [2048, 1152, 1152, 'attn q/k/v/out'],
  [2048, 1152, 3456, 'fused qkv'],
  [2048, 1152, 5760, 'ff.conv_inverted'],
  [2048, 2880, 1152, 'ff.conv_point'],
];
if (want('linear')) {
  for (const [M, K, N, what] of quick ? gemmShapes.slice(0, 1) : gemmShapes) {
    const shape = `${M}x${K}x${N} (${what})`;
    const flop = 2 * M * N * K;
    const x = randArray(M * K, 1);
    const w = randArray(N * K, 2);
    const wKN = new Float32Array(K * N);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) wKN[k * N + n] = w[n * K + k];
    // Contenders are timed in interleaved rounds (ORT, ours, ORT, ours, …) so drift of this shared
    // machine hits both alike; each figure is the median over the rounds.
    interface Contender { row: Omit<Row, 'ms' | 'gflops'>; run: () => unknown; release: () => unknown }
    const contenders: Contender[] = [];
    for (const threads of hw > 1 ? [1, hw] : [1]) {
      const sess = await ort.InferenceSession.create(matmulModel(M, K, N, wKN), {
        intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
      });
      const feeds = { X: new ort.Tensor('float32', x, [M, K]) };
      contenders.push({
        row: { op: 'linear', shape, backend: 'onnxruntime-node', variant: `ort ${ort.env.versions?.common ?? ''}`.trim(), threads, dtype: 'f32' },
        run: () => sess.run(feeds),
        release: () => sess.release(),
      });
    }
    for (const c of configs(true)) {
      const b = c.backend;
      const xt = b.tensor([M, K], 'f32', x);
      const dtypes = c.backend === wasm ? (['f32', 'bf16'] as const) : (['f32', 'f16', 'bf16'] as const);
      for (const dtype of dtypes) {
        const dense = b.tensor([N, K], dtype, w);
        const y = b.empty([M, N]);
        if (dtype === 'f32') {
          const packed = b.packWeight(dense); // what the models use for fp32 checkpoints
          contenders.push({
            row: { op: 'linear', shape, backend: b.name, variant: c.variant, threads: c.threads, dtype: 'f32 packed' },
            run: () => {
              use(c);
              b.linear(xt, packed, { out: y });
            },
            release: () => packed.dispose(),
          });
        }
        const wt = dense;
        const engine = dtype === 'bf16' && (c.variant === 'avx512bf16' || c.variant === 'amx-bf16');
        if (engine) {
          const packed = b.packWeight(dense); // what the models use in bf16 precision
          contenders.push({
            row: { op: 'linear', shape, backend: b.name, variant: c.variant, threads: c.threads, dtype: 'bf16 fast packed' },
            run: () => {
              use(c);
              b.linear(xt, packed, { out: y, fastBf16: true });
            },
            release: () => packed.dispose(),
          });
        }
        const modes = engine ? [false, true] : [false];
        for (const fast of modes)
          contenders.push({
            row: { op: 'linear', shape, backend: b.name, variant: c.variant, threads: c.threads, dtype: fast ? 'bf16 fast' : dtype },
            run: () => {
              use(c);
              b.linear(xt, wt, { out: y, fastBf16: fast });
            },
            release: () => {
              if (!fast) [wt, y].forEach((t) => t.dispose());
            },
          });
      }
      contenders.push({ row: { op: 'linear', shape, backend: b.name, variant: c.variant, threads: c.threads, dtype: 'input' }, run: () => {}, release: () => xt.dispose() });
    }
    const live = contenders.filter((c) => c.row.dtype !== 'input');
    const samples = live.map(() => [] as number[]);
    for (const c of live) await c.run(); // warm-up
    const rounds = quick ? 3 : 7;
    for (let r = 0; r < rounds; r++)
      for (let i = 0; i < live.length; i++) {
        // ORT's intra-op threads spin for a while after a run; let them go idle so they do not steal the
        // cores from whoever runs next (measured: up to 2× slower otherwise)
        await new Promise((resolve) => setTimeout(resolve, 30));
        const t0 = performance.now();
        await live[i].run();
        samples[i].push(performance.now() - t0);
      }
    live.forEach((c, i) => {
      const ms = samples[i].sort((a, b) => a - b)[samples[i].length >> 1];
      emit({ ...c.row, ms, gflops: flop / ms / 1e6 });
    });
    for (const c of contenders) await c.release();
  }
}

// ---- the other ops: every cpu variant (1 and all threads) and wasm ----
interface OpBench {
  op: string;
  shape: string;
  flop?: number;
  bytes?: number;
  setup(b: Backend): { run(): void; free(): void };
}
function tensors(b: Backend, specs: [number[], number, ('f32' | 'bf16')?][]): Tensor[] {
  return specs.map(([shape, seed, dt]) => b.tensor(shape, dt ?? 'f32', randArray(shape.reduce((p, q) => p * q, 1), seed)));
}
const free = (ts: Tensor[]) => () => ts.forEach((t) => t.dispose());
const ops: OpBench[] = [
  {
    op: 'linearAttention', shape: '[2, 1024, 36, 32] (DiT self-attn)', flop: 2 * 36 * (2 * 1024 * 33 * 32 * 2),
    setup: (b) => {
      const ts = tensors(b, [[[2, 1024, 36, 32], 1], [[2, 1024, 36, 32], 2], [[2, 1024, 36, 32], 3], [[2, 1024, 36, 32], 4]]);
      return { run: () => b.linearAttention(ts[0], ts[1], ts[2], { out: ts[3] }), free: free(ts) };
    },
  },
  {
    op: 'attention', shape: '[2, 1024→300, 16, 72] (DiT cross-attn)', flop: 2 * 2 * 16 * 1024 * 300 * 72 * 2,
    setup: (b) => {
      const ts = tensors(b, [[[2, 1024, 16, 72], 1], [[2, 300, 16, 72], 2], [[2, 300, 16, 72], 3], [[2, 1024, 16, 72], 4]]);
      return { run: () => b.attention(ts[0], ts[1], ts[2], { out: ts[3] }), free: free(ts) };
    },
  },
  {
    op: 'glumbconv', shape: '[2, 32x32, 1152 → 2·2880 → 1152] (DiT Mix-FFN)', flop: 2 * 2048 * (1152 * 5760 + 2880 * 1152) + 2 * 2048 * 5760 * 9,
    setup: (b) => {
      const ts = tensors(b, [[[2, 1024, 1152], 1], [[5760, 1152, 1, 1], 2], [[5760], 3], [[5760, 1, 3, 3], 4], [[5760], 5], [[1152, 2880, 1, 1], 6], [[2, 1024, 1152], 7]]);
      return { run: () => b.glumbconv(ts[0], { wInverted: ts[1], bInverted: ts[2], wDepth: ts[3], bDepth: ts[4], wPoint: ts[5] }, { height: 32, width: 32, out: ts[6] }), free: free(ts) };
    },
  },
  {
    op: 'glumbconv', shape: '[2, 32x32, 1152 → 2·2880 → 1152] (DiT Mix-FFN), packed weights as the model runs it', flop: 2 * 2048 * (1152 * 5760 + 2880 * 1152) + 2 * 2048 * 5760 * 9,
    setup: (b) => {
      const ts = tensors(b, [[[2, 1024, 1152], 1], [[5760, 1152, 1, 1], 2], [[5760], 3], [[5760, 1, 3, 3], 4], [[5760], 5], [[1152, 2880, 1, 1], 6], [[2, 1024, 1152], 7]]);
      const wi = b.packWeight(ts[1]), wp = b.packWeight(ts[5]);
      const run = () => b.glumbconv(ts[0], { wInverted: wi, bInverted: ts[2], wDepth: ts[3], bDepth: ts[4], wPoint: wp }, { height: 32, width: 32, out: ts[6] });
      return { run, free: () => (free(ts)(), wi.dispose(), wp.dispose()) };
    },
  },
  {
    op: 'glumbconv', shape: '[2, 32x32, 1152 → 2·2880 → 1152] (DiT Mix-FFN), bf16 precision (packed bf16 weights, fastBf16)', flop: 2 * 2048 * (1152 * 5760 + 2880 * 1152) + 2 * 2048 * 5760 * 9,
    setup: (b) => {
      const ts = tensors(b, [[[2, 1024, 1152], 1], [[5760, 1152, 1, 1], 2, 'bf16'], [[5760], 3], [[5760, 1, 3, 3], 4, 'bf16'], [[5760], 5], [[1152, 2880, 1, 1], 6, 'bf16'], [[2, 1024, 1152], 7]]);
      const wi = b.packWeight(ts[1]), wp = b.packWeight(ts[5]);
      const run = () => b.glumbconv(ts[0], { wInverted: wi, bInverted: ts[2], wDepth: ts[3], bDepth: ts[4], wPoint: wp }, { height: 32, width: 32, fastBf16: true, out: ts[6] });
      return { run, free: () => (free(ts)(), wi.dispose(), wp.dispose()) };
    },
  },
  {
    op: 'conv2d', shape: '[1, 128, 128, 128] 3x3 → 128 (DC-AE stage 0)', flop: 2 * 128 * 128 * 9 * 128 * 128,
    setup: (b) => {
      const ts = tensors(b, [[[1, 128, 128, 128], 1], [[128, 128, 3, 3], 2], [[128], 3], [[1, 128, 128, 128], 4]]);
      return { run: () => b.conv2d(ts[0], ts[1], { bias: ts[2], padding: 1, out: ts[3] }), free: free(ts) };
    },
  },
  {
    op: 'conv2d', shape: '[1, 1536, 32, 32] 5x5 depth-wise (LiteMLA aggregation)', flop: 2 * 1536 * 25 * 1024,
    setup: (b) => {
      const ts = tensors(b, [[[1, 1536, 32, 32], 1], [[1536, 1, 5, 5], 2], [[1, 1536, 32, 32], 3]]);
      return { run: () => b.conv2d(ts[0], ts[1], { padding: 2, groups: 1536, out: ts[2] }), free: free(ts) };
    },
  },
  {
    op: 'layerNorm', shape: '[2048, 1152] + adaLN', bytes: 2 * 2048 * 1152 * 4,
    setup: (b) => {
      const ts = tensors(b, [[[2, 1024, 1152], 1], [[2, 1152], 2], [[2, 1152], 3], [[2, 1024, 1152], 4]]);
      return { run: () => b.layerNorm(ts[0], { eps: 1e-6, scale: ts[1], shift: ts[2], out: ts[3] }), free: free(ts) };
    },
  },
  {
    op: 'rmsNormChannels', shape: '[1, 128, 256, 256]', bytes: 2 * 128 * 65536 * 4,
    setup: (b) => {
      const ts = tensors(b, [[[1, 128, 256, 256], 1], [[128], 2], [[128], 3], [[1, 128, 256, 256], 4]]);
      return { run: () => b.rmsNormChannels(ts[0], { eps: 1e-5, weight: ts[1], bias: ts[2], out: ts[3] }), free: free(ts) };
    },
  },
  {
    op: 'pixelShuffle', shape: '[1, 512, 128, 128] r2', bytes: 2 * 512 * 16384 * 4,
    setup: (b) => {
      const ts = tensors(b, [[[1, 512, 128, 128], 1], [[1, 128, 256, 256], 2]]);
      return { run: () => b.pixelShuffle(ts[0], 2, { out: ts[1] }), free: free(ts) };
    },
  },
  {
    op: 'activation', shape: 'silu [2048·5760]', bytes: 2 * 2048 * 5760 * 4,
    setup: (b) => {
      const ts = tensors(b, [[[2048 * 5760], 1], [[2048 * 5760], 2]]);
      return { run: () => b.activation(ts[0], 'silu', ts[1]), free: free(ts) };
    },
  },
  {
    op: 'rope', shape: '[2, 300, 8, 256] (Gemma-2 q)', bytes: 2 * 2 * 300 * 8 * 256 * 4,
    setup: (b) => {
      const ts = tensors(b, [[[2, 300, 8, 256], 1], [[2, 300, 8, 256], 2]]);
      return { run: () => b.rope(ts[0], { out: ts[1] }), free: free(ts) };
    },
  },
];
for (const o of ops) {
  if (!want(o.op)) continue;
  for (const c of configs(true)) {
    const b = use(c);
    const s = o.setup(b);
    const ms = await time(() => s.run());
    s.free();
    emit({
      op: o.op, shape: o.shape, backend: b.name, variant: c.variant, threads: c.threads, dtype: 'f32', ms,
      ...(o.flop ? { gflops: o.flop / ms / 1e6 } : { gbps: o.bytes! / ms / 1e6 }),
    });
  }
}

// ---- fresh vs reused outputs of memory-bound ops at the DiT's sizes: what the block cache saves ----
interface FreshBench {
  op: string;
  shape: string;
  bytes: number;
  setup(b: Backend): { run(out?: Tensor): Tensor; free(): void };
}
const freshOps: FreshBench[] = [
  {
    op: 'residual', shape: '[2, 2048, 1152] + gate', bytes: 3 * 2 * 2048 * 1152 * 4,
    setup: (b) => {
      const ts = tensors(b, [[[2, 2048, 1152], 1], [[2, 2048, 1152], 2], [[2, 1152], 3]]);
      return { run: (out) => b.residual(ts[0], ts[1], { gate: ts[2], out }), free: free(ts) };
    },
  },
  {
    op: 'layerNorm', shape: '[2, 2048, 1152] + adaLN', bytes: 2 * 2 * 2048 * 1152 * 4,
    setup: (b) => {
      const ts = tensors(b, [[[2, 2048, 1152], 1], [[2, 1152], 2], [[2, 1152], 3]]);
      return { run: (out) => b.layerNorm(ts[0], { eps: 1e-6, scale: ts[1], shift: ts[2], out }), free: free(ts) };
    },
  },
  {
    op: 'activation', shape: 'silu [2048·5760]', bytes: 2 * 2048 * 5760 * 4,
    setup: (b) => {
      const ts = tensors(b, [[[2048 * 5760], 1]]);
      return { run: (out) => b.activation(ts[0], 'silu', out), free: free(ts) };
    },
  },
];
const freshSummary: string[] = [];
if (want('fresh'))
  for (const o of freshOps)
    for (const c of configs(false)) {
      const b = use(c);
      const s = o.setup(b);
      const out = s.run();
      // interleaved rounds, as for the GEMM: reused out, fresh output from the cache, fresh output without it
      const modes = [
        { dtype: 'f32 out reused', run: () => void s.run(out) },
        { dtype: 'f32 fresh (cached)', run: () => s.run().dispose(), before: () => b.setCacheLimit(DEFAULT_CACHE_BYTES) },
        { dtype: 'f32 fresh (no cache)', run: () => s.run().dispose(), before: () => b.setCacheLimit(0) },
      ];
      const samples = modes.map(() => [] as number[]);
      for (let r = 0; r < (quick ? 5 : 15); r++)
        modes.forEach((m, i) => {
          m.before?.();
          m.run(); // warm: the cache holds the block from here on
          const t0 = performance.now();
          m.run();
          samples[i].push(performance.now() - t0);
        });
      b.setCacheLimit(DEFAULT_CACHE_BYTES);
      out.dispose();
      s.free();
      const ms = samples.map((x) => x.sort((p, q) => p - q)[x.length >> 1]);
      modes.forEach((m, i) => emit({ op: o.op, shape: o.shape, backend: b.name, variant: c.variant, threads: c.threads, dtype: m.dtype, ms: ms[i], gbps: o.bytes / ms[i] / 1e6 }));
      freshSummary.push(`${o.op} ${o.shape} on ${b.name} (${c.threads} threads): fresh/reused ${(ms[1] / ms[0]).toFixed(2)}× with the cache, ${(ms[2] / ms[0]).toFixed(2)}× without`);
    }

// ---- markdown summary ----
const fmt = (v: number | undefined, d = 1) => (v === undefined ? '' : v.toFixed(d));
console.log(`\n## Kernel benchmark — commit ${commit}, ${cpuModel}, ${hw} threads, Node ${process.version}\n`);
console.log('| op | shape | backend | variant | threads | dtype | ms | GFLOP/s | GB/s | vs ORT (same threads) |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  const peer = rows.find((p) => p.op === r.op && p.shape === r.shape && p.backend === 'onnxruntime-node' && p.threads === r.threads);
  const ratio = peer && r.backend !== 'onnxruntime-node' ? `${(peer.ms / r.ms).toFixed(2)}×` : '';
  console.log(`| ${r.op} | ${r.shape} | ${r.backend} | ${r.variant} | ${r.threads} | ${r.dtype} | ${fmt(r.ms, 2)} | ${fmt(r.gflops)} | ${fmt(r.gbps)} | ${ratio} |`);
}
if (freshSummary.length) console.log(`\nFresh outputs vs a reused out (target ≤ 1.2× with the cache):\n${freshSummary.map((l) => `- ${l}`).join('\n')}`);
for (const b of backends) b.dispose();
