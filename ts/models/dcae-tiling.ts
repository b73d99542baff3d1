/** diffusers' tiled DC-AE decode (latent tiles, then a linear-ramp blend of the decoded tiles) and the
 * crops the sharded decode takes of feature maps. */
import type { Backend } from '../backends/backend.js';
import { describeValue, SanaError } from '../errors.js';
import { view4, type Tensor } from '../tensor/tensor.js';

/** A rectangle [y0, y1) × [x0, x1) of a feature map. */
export interface Rect {
  y0: number;
  y1: number;
  x0: number;
  x1: number;
}

export interface TilingOptions {
  tileSampleMinHeight: number;
  tileSampleMinWidth: number;
  tileSampleStrideHeight: number;
  tileSampleStrideWidth: number;
}

/** Throws ERR_SANA_INVALID_OPTION unless every tile size and stride is a positive multiple of f and no stride exceeds its tile. */
export function checkTiling(t: TilingOptions, f: number): void {
  for (const [k, v] of Object.entries(t))
    if (!(Number.isInteger(v) && v > 0 && v % f === 0)) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a positive multiple of ${f} pixels for tiling.${k} but received ${describeValue(v)}`);
  if (t.tileSampleStrideHeight > t.tileSampleMinHeight || t.tileSampleStrideWidth > t.tileSampleMinWidth)
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected tiling strides no larger than the tiles but received ${JSON.stringify(t)}`);
}

/** The latent tiles of diffusers' tiled decode, row by row: tiles of tile_sample_min / f latents every
 * tile_sample_stride / f (edge tiles smaller), each a copy [B, C, th, tw]. */
export function latentTiles(z: Float32Array, shape: readonly [number, number, number, number], f: number, t: TilingOptions): { z: Float32Array; shape: [number, number, number, number] }[][] {
  const [B, C, h, w] = shape;
  const tileH = t.tileSampleMinHeight / f;
  const tileW = t.tileSampleMinWidth / f;
  const rows = [];
  for (let i = 0; i < h; i += t.tileSampleStrideHeight / f) {
    const row = [];
    for (let j = 0; j < w; j += t.tileSampleStrideWidth / f) {
      const th = Math.min(tileH, h - i);
      const tw = Math.min(tileW, w - j);
      const tile = new Float32Array(B * C * th * tw);
      for (let b = 0; b < B; b++)
        for (let ch = 0; ch < C; ch++)
          for (let y = 0; y < th; y++) {
            const src = ((b * C + ch) * h + i + y) * w + j;
            tile.set(z.subarray(src, src + tw), ((b * C + ch) * th + y) * tw);
          }
      row.push({ z: tile, shape: [B, C, th, tw] as [number, number, number, number] });
    }
    rows.push(row);
  }
  return rows;
}

/** diffusers' blend of decoded tiles [B, Co, th·f, tw·f] (row-major as latentTiles gives them): each tile blends
 * the (already blended) tile above and to its left into its first min − stride rows / columns with a linear
 * ramp, in place, then its first stride × stride pixels are kept. */
export function blendTiles(rows: Float32Array[][], shape: readonly [number, number, number, number], f: number, Co: number, t: TilingOptions): Float32Array {
  const [B, , h, w] = shape;
  const blendH = t.tileSampleMinHeight - t.tileSampleStrideHeight;
  const blendW = t.tileSampleMinWidth - t.tileSampleStrideWidth;
  const H = h * f;
  const W = w * f;
  const tiles = rows.map((row, i) => row.map((data, j) => ({
    data, H: Math.min(t.tileSampleMinHeight, H - i * t.tileSampleStrideHeight), W: Math.min(t.tileSampleMinWidth, W - j * t.tileSampleStrideWidth),
  })));
  const out = new Float32Array(B * Co * H * W);
  let y0 = 0;
  tiles.forEach((row, i) => {
    let x0 = 0;
    let keptH = 0;
    row.forEach((tile, j) => {
      if (tile.data.length !== B * Co * tile.H * tile.W)
        throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `blendTiles: tile (${i}, ${j}) has ${tile.data.length} values, expected [${B}, ${Co}, ${tile.H}, ${tile.W}]`);
      if (i > 0) {
        const above = tiles[i - 1][j];
        const e = Math.min(above.H, tile.H, blendH);
        for (let bc = 0; bc < B * Co; bc++)
          for (let y = 0; y < e; y++)
            for (let x = 0; x < tile.W; x++) {
              const k = (bc * tile.H + y) * tile.W + x;
              tile.data[k] = above.data[(bc * above.H + above.H - e + y) * above.W + x] * (1 - y / e) + tile.data[k] * (y / e);
            }
      }
      if (j > 0) {
        const left = row[j - 1];
        const e = Math.min(left.W, tile.W, blendW);
        for (let bc = 0; bc < B * Co; bc++)
          for (let y = 0; y < tile.H; y++)
            for (let x = 0; x < e; x++) {
              const k = (bc * tile.H + y) * tile.W + x;
              tile.data[k] = left.data[(bc * left.H + y) * left.W + left.W - e + x] * (1 - x / e) + tile.data[k] * (x / e);
            }
      }
      const kh = Math.min(tile.H, t.tileSampleStrideHeight);
      const kw = Math.min(tile.W, t.tileSampleStrideWidth);
      for (let bc = 0; bc < B * Co; bc++)
        for (let y = 0; y < kh; y++)
          out.set(tile.data.subarray((bc * tile.H + y) * tile.W, (bc * tile.H + y) * tile.W + kw), (bc * H + y0 + y) * W + x0);
      x0 += kw;
      keptH = kh;
    });
    y0 += keptH;
  });
  return out;
}

/** A copy of `r` (in x's coordinates) of a one-image NCHW map, made on x's backend (one strided copy). */
export function cropTensor(be: Backend, x: Tensor, r: Rect): Tensor {
  const [B, C, H, W] = x.shape;
  if (B !== 1 || r.y0 < 0 || r.x0 < 0 || r.y1 > H || r.x1 > W || r.y0 >= r.y1 || r.x0 >= r.x1)
    throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `crop: Expected a non-empty rectangle inside [1, C, ${H}, ${W}] but received ${JSON.stringify(r)} of ${JSON.stringify(x.shape)}`);
  const h = r.y1 - r.y0;
  const w = r.x1 - r.x0;
  const out = be.empty([1, C, h, w]);
  try {
    return be.copy(view4(x, [C, h, 1, w], [H * W, W, 0, 1], r.y0 * W + r.x0), view4(out, [C, h, 1, w]));
  } catch (e) {
    out.dispose();
    throw e;
  }
}

/** A new [1, C, h, w] tensor holding rectangle `r` of the C × H × W host map `src` (a shard's shared memory):
 * only the rectangle is written to the backend. */
export function cropMap(be: Backend, src: Float32Array, C: number, H: number, W: number, r: Rect): Tensor {
  const h = r.y1 - r.y0;
  const w = r.x1 - r.x0;
  const dst = new Float32Array(C * h * w);
  for (let c = 0; c < C; c++)
    for (let y = 0; y < h; y++) {
      const s = (c * H + r.y0 + y) * W + r.x0;
      dst.set(src.subarray(s, s + w), (c * h + y) * w);
    }
  return be.tensorFromRaw([1, C, h, w], 'f32', dst);
}
