/**
 * Exact sharded DC-AE decoding: the image is cut into rectangular shards that separate tasks decode (in one
 * thread or across a worker pool), and the result equals the untiled decode within fp32 rounding, with the
 * memory of one task bounded by its shard. docs/sharded-decode.md explains the design; in short:
 *
 * - The decoder is a list of steps (decoderSteps). Runs of local steps (3×3 convs, up-sampling, per-pixel
 *   norms) become one pass: each task crops its shard's input plus the halo the receptive field needs
 *   (walked back step by step), runs the steps with zero padding and keeps only the pixels the halo makes exact.
 * - An EfficientViT block's ReLU linear attention is global, but its state is a sum over pixels: per head
 *   Σ v·relu(k)ᵀ and Σ relu(k). A first pass gives each shard's share, the driver adds them up (in shard
 *   order, in float64), a second pass applies the whole map's state to each shard.
 * - Passes communicate through whole feature maps in SharedArrayBuffers (at most two alive, recycled), which
 *   workers read and write in place; tasks carry no state, so a failed one can be rerun anywhere.
 */
import { SanaError } from '../errors.js';
import type { Tensor } from '../tensor/tensor.js';
import type { AutoencoderDC } from './autoencoder-dc.js';
import { type AutoencoderDcConfig, type DecoderStep, decoderSteps } from './dcae-config.js';
import { cropMap, cropTensor, type Rect } from './dcae-tiling.js';

/** A one-image NCHW float32 map in shared memory: `C × H × W` values from float index `offset`. */
export interface MapRef {
  buffer: SharedArrayBuffer;
  offset: number;
  C: number;
  H: number;
  W: number;
}

export type ShardTask =
  /** decoder steps [from, to) for the output pixels `rect` */
  | { kind: 'local'; from: number; to: number; input: MapRef; output: MapRef; rect: Rect }
  /** EfficientViT step: this shard's share of the attention state */
  | { kind: 'state'; step: number; input: MapRef; rect: Rect }
  /** EfficientViT step with the whole map's attention state */
  | { kind: 'apply'; step: number; input: MapRef; output: MapRef; rect: Rect; state: Float32Array };

export interface ShardPass {
  index: number;
  count: number;
  label: string;
}

/** Runs one pass's tasks (any order, any worker) and returns their results in task order. */
export type ShardRunner = (tasks: ShardTask[], pass: ShardPass) => Promise<(Float32Array | null)[]>;

export interface ShardOptions {
  /** the same shard grid [rows, cols] for every pass (clamped to each pass's size); default: from shardBytes */
  grid?: [number, number];
  /** the working memory one task may use (estimate); default 512 MiB */
  shardBytes?: number;
  /** the number of workers: at least this many shards per pass where the map is big enough, and a multiple of it */
  minShards?: number;
}

const DEFAULT_SHARD_BYTES = 512 * 2 ** 20;

/** Runs one task on a loaded decoder: reads its input map, writes its output rectangle in place. */
export function runShardTask(vae: AutoencoderDC, task: ShardTask): Float32Array | null {
  const steps = decoderSteps(vae.config);
  if (task.kind === 'local') {
    const sizes = stepInputSizes(steps, task.from, task.to, task.input);
    const need = [task.rect];
    for (let k = task.to - 1; k >= task.from; k--) need.unshift(inputRect(steps[k], need[0], sizes[k - task.from]));
    let cur = readRect(vae, task.input, need[0]);
    try {
      for (let k = task.from; k < task.to; k++) {
        const s = steps[k].scale;
        const covered = need[k - task.from];
        const out = vae.runStep(steps[k], cur);
        cur.dispose();
        cur = out;
        const keep = need[k - task.from + 1];
        const rel = { y0: keep.y0 - covered.y0 * s, y1: keep.y1 - covered.y0 * s, x0: keep.x0 - covered.x0 * s, x1: keep.x1 - covered.x0 * s };
        if (rel.y0 !== 0 || rel.x0 !== 0 || rel.y1 !== cur.shape[2] || rel.x1 !== cur.shape[3]) {
          const cropped = cropTensor(vae.backend, cur, rel);
          cur.dispose();
          cur = cropped;
        }
      }
      writeRect(cur, task.output, task.rect);
      return null;
    } finally {
      cur.dispose();
    }
  }
  const step = steps[task.step];
  if (step?.kind !== 'evit') throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `shard task: step ${task.step} is not an EfficientViT block`);
  const halo = attentionHalo(step) + (task.kind === 'apply' ? 1 : 0); // + the GLUMBConv's 3×3 depth-wise conv
  const crop = expand(task.rect, halo, task.input.H, task.input.W);
  const x = readRect(vae, task.input, crop);
  try {
    const rel = { y0: task.rect.y0 - crop.y0, y1: task.rect.y1 - crop.y0, x0: task.rect.x0 - crop.x0, x1: task.rect.x1 - crop.x0 };
    if (task.kind === 'state') return vae.evitStatePartial(step, x, rel);
    const y = vae.evitWithState(step, x, task.state);
    try {
      const kept = cropTensor(vae.backend, y, rel);
      writeRect(kept, task.output, task.rect);
      kept.dispose();
      return null;
    } finally {
      y.dispose();
    }
  } finally {
    x.dispose();
  }
}

/** Decodes latents [B, C, h, w] (already divided by the scaling factor) shard by shard. */
export async function shardedDecode(
  config: AutoencoderDcConfig,
  z: Float32Array,
  shape: readonly [number, number, number, number],
  run: ShardRunner,
  opts: ShardOptions = {},
): Promise<Float32Array> {
  const [B, C, h, w] = shape;
  if (C !== config.latentChannels || z.length !== B * C * h * w)
    throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `shardedDecode: Expected latents [B, ${config.latentChannels}, h, w] with ${B * C * h * w} values but received ${JSON.stringify(shape)} with ${z.length}`);
  const steps = decoderSteps(config);
  const passes = planPasses(steps);
  const f = 2 ** (config.decoderBlockOutChannels.length - 1);
  const out = new SharedArrayBuffer(B * config.inChannels * h * f * w * f * 4);
  const buffers = new BufferPool();
  let index = 0;
  const count = B * passes.reduce((n, p) => n + (p.kind === 'evit' ? 2 : 1), 0);
  for (let b = 0; b < B; b++) {
    let input: MapRef = { buffer: buffers.take(C * h * w), offset: 0, C, H: h, W: w };
    new Float32Array(input.buffer, 0, C * h * w).set(z.subarray(b * C * h * w, (b + 1) * C * h * w));
    for (const p of passes) {
      const scale = p.to === undefined ? 1 : steps.slice(p.from, p.to).reduce((s, st) => s * st.scale, 1);
      const last = steps[(p.to ?? p.from + 1) - 1];
      const H = input.H * scale;
      const W = input.W * scale;
      const isLast = p.to === steps.length;
      const output: MapRef = isLast
        ? { buffer: out, offset: b * last.channels * H * W, C: last.channels, H, W }
        : { buffer: buffers.take(last.channels * H * W), offset: 0, C: last.channels, H, W };
      const rects = shardRects(input.H, input.W, scale, passBytesPerPixel(steps, p), opts);
      if (p.kind === 'local') {
        await run(rects.map((rect) => ({ kind: 'local', from: p.from, to: p.to!, input, output, rect })), { index: index++, count, label: p.label });
      } else {
        const shares = await run(rects.map((rect) => ({ kind: 'state', step: p.from, input, rect })), { index: index++, count, label: `${p.label} (attention state)` });
        const state = sumStates(shares);
        await run(rects.map((rect) => ({ kind: 'apply', step: p.from, input, output, rect, state })), { index: index++, count, label: p.label });
      }
      buffers.give(input.buffer);
      input = output;
    }
  }
  const image = new Float32Array(out);
  if (!image.every(Number.isFinite))
    throw new SanaError('ERR_SANA_NON_FINITE', 'AutoencoderDC sharded decode produced non-finite values (NaN or Infinity): the latents or weights hold NaN/Inf');
  return image;
}

type Pass = { kind: 'local'; from: number; to: number; label: string } | { kind: 'evit'; from: number; to?: undefined; label: string };

/** Runs of local steps, and each EfficientViT block on its own. */
function planPasses(steps: DecoderStep[]): Pass[] {
  const passes: Pass[] = [];
  let from = 0;
  const flush = (to: number) => {
    if (to > from) passes.push({ kind: 'local', from, to, label: `${describe(steps[from])} … ${describe(steps[to - 1])}` });
  };
  steps.forEach((s, i) => {
    if (s.kind !== 'evit') return;
    flush(i);
    passes.push({ kind: 'evit', from: i, label: describe(s) });
    from = i + 1;
  });
  flush(steps.length);
  return passes;
}

function describe(s: DecoderStep): string {
  return s.kind === 'conv_in' ? 'decoder.conv_in' : s.kind === 'head' ? 'decoder.conv_out' : s.pre;
}

function attentionHalo(step: DecoderStep & { kind: 'evit' }): number {
  return Math.max(0, ...step.scales.map((k) => Math.floor(k / 2)));
}

/** The input rectangle a local step needs to compute `r` of its output exactly (clipped to the input map). */
function inputRect(step: DecoderStep, r: Rect, size: [number, number]): Rect {
  const [H, W] = size;
  switch (step.kind) {
    case 'conv_in':
    case 'head':
      return expand(r, 1, H, W);
    case 'res':
      return expand(r, 2, H, W);
    case 'up': // output row y needs input rows ⌊y/2⌋ − 1 … ⌊y/2⌋ + 1: a 3×3 conv before pixel-shuffle, or (a subset) after nearest ×2
      return { y0: Math.max(0, Math.floor(r.y0 / 2) - 1), y1: Math.min(H, Math.floor((r.y1 - 1) / 2) + 2), x0: Math.max(0, Math.floor(r.x0 / 2) - 1), x1: Math.min(W, Math.floor((r.x1 - 1) / 2) + 2) };
    case 'evit':
      throw new SanaError('ERR_SANA_INVALID_ARGUMENT', 'an EfficientViT block is not a local step');
  }
}

function expand(r: Rect, by: number, H: number, W: number): Rect {
  return { y0: Math.max(0, r.y0 - by), y1: Math.min(H, r.y1 + by), x0: Math.max(0, r.x0 - by), x1: Math.min(W, r.x1 + by) };
}

function stepInputSizes(steps: DecoderStep[], from: number, to: number, input: MapRef): [number, number][] {
  const sizes: [number, number][] = [];
  let [H, W] = [input.H, input.W];
  for (let k = from; k < to; k++) {
    sizes.push([H, W]);
    H *= steps[k].scale;
    W *= steps[k].scale;
  }
  return sizes;
}

/**
 * Shards of a pass's output: a grid over its input map (so shard edges fall on input pixels) scaled up by the
 * pass's factor. The grid is opts.grid, or the smallest near-square grid whose shards fit opts.shardBytes.
 */
function shardRects(H: number, W: number, scale: number, bytesPerPixel: number, opts: ShardOptions): Rect[] {
  let [gr, gc] = opts.grid ?? [0, 0];
  if (!opts.grid) {
    const budget = opts.shardBytes ?? DEFAULT_SHARD_BYTES;
    const workers = opts.minShards ?? 1;
    // a multiple of the worker count, so that no worker idles through the pass's last round
    const n = Math.ceil(Math.max(workers, Math.ceil((H * W * scale * scale * bytesPerPixel) / budget)) / workers) * workers;
    gr = Math.max(1, Math.round(Math.sqrt((n * H) / W)));
    gc = Math.ceil(n / gr);
    while ((gr * gc) % workers !== 0 && gc < W) gc++;
  }
  if (!(Number.isInteger(gr) && gr >= 1 && Number.isInteger(gc) && gc >= 1))
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a shard grid of two positive integers but received ${JSON.stringify(opts.grid)}`);
  gr = Math.min(gr, H);
  gc = Math.min(gc, W);
  const rects: Rect[] = [];
  for (let i = 0; i < gr; i++)
    for (let j = 0; j < gc; j++)
      rects.push({
        y0: Math.floor((i * H) / gr) * scale, y1: Math.floor(((i + 1) * H) / gr) * scale,
        x0: Math.floor((j * W) / gc) * scale, x1: Math.floor(((j + 1) * W) / gc) * scale,
      });
  return rects;
}

/**
 * A task's working memory per output pixel of its pass (an estimate with 1.5× for halos): the largest step,
 * counted in fp32 values alive at once per pixel of that step's resolution (runStep frees as it goes).
 */
function passBytesPerPixel(steps: DecoderStep[], p: Pass): number {
  if (p.kind === 'evit') return 1.5 * 4 * 40 * steps[p.from].channels; // qkv and its aggregation, relu copies, the 8C GLUMBConv
  let area = 1;
  for (let k = p.to - 1; k >= p.from; k--) area /= steps[k].scale ** 2;
  let worst = 0;
  for (let k = p.from; k < p.to; k++) {
    area *= steps[k].scale ** 2;
    worst = Math.max(worst, stepValuesPerPixel(steps, k) * area);
  }
  return 1.5 * 4 * worst;
}

/** fp32 values alive at once per output pixel while step k runs. */
export function stepValuesPerPixel(steps: DecoderStep[], k: number): number {
  const s = steps[k];
  const cin = k > 0 ? steps[k - 1].channels : s.channels;
  switch (s.kind) {
    case 'conv_in':
      return 3 * s.channels;
    case 'up':
      return cin + 4 * s.channels; // upsampled input, conv output, shortcut, its shuffle, the sum
    case 'res':
      return 5 * s.channels;
    case 'evit':
      return 40 * s.channels;
    case 'head':
      return 3 * cin + s.channels;
  }
}

/** Peak bytes of decoding one [C, h, w] latent: the largest step over the whole map (full), or the largest pair
 * of shared maps a pass reads and writes plus one shard task per worker (sharded). For choosing a decode mode
 * and sizing, not an exact figure (weights not included). */
export function estimateDecodeBytes(config: AutoencoderDcConfig, h: number, w: number, mode: 'full' | 'sharded', opts: ShardOptions & { workers?: number } = {}): number {
  const steps = decoderSteps(config);
  const areaAfter: number[] = [];
  let area = h * w;
  let full = 0;
  for (let k = 0; k < steps.length; k++) {
    area *= steps[k].scale ** 2;
    areaAfter.push(area);
    full = Math.max(full, 4 * area * stepValuesPerPixel(steps, k));
  }
  if (mode === 'full') return full;
  let maps = 0;
  for (const p of planPasses(steps)) {
    const last = (p.to ?? p.from + 1) - 1;
    const input = p.from === 0 ? config.latentChannels * h * w : steps[p.from - 1].channels * areaAfter[p.from - 1];
    maps = Math.max(maps, 4 * (input + steps[last].channels * areaAfter[last]));
  }
  return maps + (opts.workers ?? 1) * Math.min(full, opts.shardBytes ?? DEFAULT_SHARD_BYTES);
}

function sumStates(shares: (Float32Array | null)[]): Float32Array {
  const n = shares[0]?.length ?? 0;
  const acc = new Float64Array(n);
  for (const s of shares) {
    if (!s || s.length !== n) throw new SanaError('ERR_SANA_NATIVE', 'sharded decode: a shard returned no attention state');
    for (let i = 0; i < n; i++) acc[i] += s[i];
  }
  return Float32Array.from(acc);
}

function readRect(vae: AutoencoderDC, m: MapRef, r: Rect): Tensor {
  return cropMap(vae.backend, new Float32Array(m.buffer, m.offset * 4, m.C * m.H * m.W), m.C, m.H, m.W, r);
}

function writeRect(t: Tensor, m: MapRef, r: Rect): void {
  const h = r.y1 - r.y0;
  const w = r.x1 - r.x0;
  if (t.shape[1] !== m.C || t.shape[2] !== h || t.shape[3] !== w)
    throw new SanaError('ERR_SANA_NATIVE', `sharded decode: a shard produced ${JSON.stringify(t.shape)} for ${JSON.stringify(r)} of a ${m.C}-channel map`);
  const src = t.toFloat32();
  const dst = new Float32Array(m.buffer, m.offset * 4, m.C * m.H * m.W);
  for (let c = 0; c < m.C; c++)
    for (let y = 0; y < h; y++) dst.set(src.subarray((c * h + y) * w, (c * h + y + 1) * w), (c * m.H + r.y0 + y) * m.W + r.x0);
}

/** Shared maps by size: a pass's input goes back once the pass is done, so at most two maps of a size live. */
class BufferPool {
  private readonly free: SharedArrayBuffer[] = [];
  take(values: number): SharedArrayBuffer {
    const i = this.free.findIndex((b) => b.byteLength === values * 4);
    if (i >= 0) return this.free.splice(i, 1)[0];
    this.free.length = 0; // the decoder only moves on to larger maps: the smaller ones are done with
    return new SharedArrayBuffer(values * 4);
  }
  give(b: SharedArrayBuffer): void {
    this.free.push(b);
  }
}
