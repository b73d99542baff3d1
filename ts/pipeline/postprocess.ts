/**
 * Decoder output → pixels as diffusers' PixArtImageProcessor / VaeImageProcessor do it: bilinear resize
 * (align_corners = False, no antialias, fp32) and centre crop back to the requested size after resolution
 * binning, denormalise clamp(x·0.5 + 0.5, 0, 1), NHWC, and uint8 with round-half-to-even.
 */
const f = Math.fround;

/** torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=False) on NCHW fp32. */
export function resizeBilinear(x: Float32Array, [B, C, H, W]: readonly number[], Ho: number, Wo: number): Float32Array {
  const out = new Float32Array(B * C * Ho * Wo);
  const axis = (inSize: number, outSize: number) => {
    const scale = f(inSize / outSize);
    const i0 = new Int32Array(outSize);
    const i1 = new Int32Array(outSize);
    const w0 = new Float32Array(outSize);
    const w1 = new Float32Array(outSize);
    for (let o = 0; o < outSize; o++) {
      let src = f(f(scale * f(o + 0.5)) - 0.5);
      if (src < 0) src = 0;
      const lo = Math.floor(src);
      i0[o] = lo;
      i1[o] = lo + (lo < inSize - 1 ? 1 : 0);
      w1[o] = f(src - lo);
      w0[o] = f(1 - w1[o]);
    }
    return { i0, i1, w0, w1 };
  };
  const ys = axis(H, Ho);
  const xs = axis(W, Wo);
  for (let p = 0; p < B * C; p++) {
    const src = x.subarray(p * H * W, (p + 1) * H * W);
    for (let oy = 0; oy < Ho; oy++) {
      const r0 = ys.i0[oy] * W;
      const r1 = ys.i1[oy] * W;
      for (let ox = 0; ox < Wo; ox++) {
        const a = f(f(xs.w0[ox] * src[r0 + xs.i0[ox]]) + f(xs.w1[ox] * src[r0 + xs.i1[ox]]));
        const b = f(f(xs.w0[ox] * src[r1 + xs.i0[ox]]) + f(xs.w1[ox] * src[r1 + xs.i1[ox]]));
        out[(p * Ho + oy) * Wo + ox] = f(ys.w0[oy] * a) + f(ys.w1[oy] * b);
      }
    }
  }
  return out;
}

/** PixArtImageProcessor.resize_and_crop_tensor: scale to cover (height, width), then centre crop.
 * Upstream truncates int(side · ratio), which can fall one pixel short of the request (e.g. 11 · 15/11 =
 * 14.999…) and then returns a 1-pixel-wide crop; each side is kept at least as large as requested, so the
 * result always has the requested size (as the golden case's output_hw records). */
export function resizeAndCrop(x: Float32Array, shape: readonly number[], height: number, width: number): Float32Array {
  const [B, C, H, W] = shape;
  if (H === height && W === width) return x;
  const ratio = Math.max(height / H, width / W);
  const Hr = Math.max(height, Math.trunc(H * ratio));
  const Wr = Math.max(width, Math.trunc(W * ratio));
  const resized = resizeBilinear(x, shape, Hr, Wr);
  const top = Math.floor((Hr - height) / 2);
  const left = Math.floor((Wr - width) / 2);
  const out = new Float32Array(B * C * height * width);
  for (let p = 0; p < B * C; p++)
    for (let y = 0; y < height; y++) {
      const from = (p * Hr + top + y) * Wr + left;
      out.set(resized.subarray(from, from + width), (p * height + y) * width);
    }
  return out;
}

/** clamp(x·0.5 + 0.5, 0, 1) and NCHW → NHWC (output_type "np"). */
export function denormalizeToNhwc(x: Float32Array, [B, C, H, W]: readonly number[]): Float32Array {
  const out = new Float32Array(x.length);
  for (let b = 0; b < B; b++)
    for (let c = 0; c < C; c++)
      for (let p = 0; p < H * W; p++) {
        const v = f(f(x[(b * C + c) * H * W + p] * 0.5) + 0.5);
        out[(b * H * W + p) * C + c] = v < 0 ? 0 : v > 1 ? 1 : v;
      }
  return out;
}

/** numpy (images * 255).round().astype(uint8): fp32 multiply, round half to even. */
export function toUint8(images: Float32Array): Uint8Array {
  const out = new Uint8Array(images.length);
  for (let i = 0; i < images.length; i++) {
    const v = f(images[i] * 255);
    let r = Math.round(v);
    if (r - v === 0.5 && r % 2 !== 0) r -= 1; // Math.round rounds .5 up; numpy rounds to even
    out[i] = r;
  }
  return out;
}
