// Float64 references of every op, written from the formulas in ../shared/design/sana-spec.md independently
// of the C++ code. Inputs are the exact float32 (or decoded f16/bf16) values the kernels see.
export type F = Float64Array;

export function relu(x: number): number {
  return x > 0 ? x : 0;
}
export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}
export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
}
export function act(x: number, a: string): number {
  return a === 'relu' ? relu(x) : a === 'silu' ? silu(x) : a === 'gelu-tanh' ? geluTanh(x) : x;
}

export function linear(x: ArrayLike<number>, M: number, K: number, w: ArrayLike<number>, N: number, bias?: ArrayLike<number>, a = 'none'): F {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n] : 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      y[m * N + n] = act(s, a);
    }
  return y;
}

export function conv2d(x: ArrayLike<number>, [B, Cin, H, W]: number[], w: ArrayLike<number>, [Cout, cig, kh, kw]: number[],
  stride: number, pad: number, groups: number, bias?: ArrayLike<number>, a = 'none'): { y: F; shape: number[] } {
  const Ho = Math.floor((H + 2 * pad - kh) / stride) + 1;
  const Wo = Math.floor((W + 2 * pad - kw) / stride) + 1;
  const cog = Cout / groups;
  const y = new Float64Array(B * Cout * Ho * Wo);
  for (let b = 0; b < B; b++)
    for (let co = 0; co < Cout; co++) {
      const g = Math.floor(co / cog);
      for (let oy = 0; oy < Ho; oy++)
        for (let ox = 0; ox < Wo; ox++) {
          let s = bias ? bias[co] : 0;
          for (let ci = 0; ci < cig; ci++)
            for (let ky = 0; ky < kh; ky++)
              for (let kx = 0; kx < kw; kx++) {
                const iy = oy * stride - pad + ky;
                const ix = ox * stride - pad + kx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                s += x[((b * Cin + g * cig + ci) * H + iy) * W + ix] * w[((co * cig + ci) * kh + ky) * kw + kx];
              }
          y[((b * Cout + co) * Ho + oy) * Wo + ox] = act(s, a);
        }
    }
  return { y, shape: [B, Cout, Ho, Wo] };
}

export interface V4 {
  data: ArrayLike<number>;
  offset: number;
  strides: number[];
}
function at(v: V4, b: number, n: number, h: number, d: number): number {
  return v.data[v.offset + b * v.strides[0] + n * v.strides[1] + h * v.strides[2] + d * v.strides[3]];
}

/** out[b, n, h, :] = Σ_m v_m (relu(k_m)·relu(q_n)) / (Σ_m relu(k_m)·relu(q_n) + eps), contiguous [B, N, H, D]. */
export function linearAttention(q: V4, k: V4, v: V4, [B, N, H, D]: number[], eps: number): F {
  const out = new Float64Array(B * N * H * D);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let n = 0; n < N; n++) {
        let den = 0;
        const num = new Float64Array(D);
        for (let m = 0; m < N; m++) {
          let s = 0;
          for (let j = 0; j < D; j++) s += relu(at(k, b, m, h, j)) * relu(at(q, b, n, h, j));
          den += s;
          for (let i = 0; i < D; i++) num[i] += at(v, b, m, h, i) * s;
        }
        for (let i = 0; i < D; i++) out[((b * N + n) * H + h) * D + i] = num[i] / (den + eps);
      }
  return out;
}

export function attention(q: V4, k: V4, v: V4, p: { B: number; Lq: number; Lk: number; Hq: number; Hkv: number; D: number; Dv: number;
  scale: number; softcap: number; causal: boolean; window: number; keyBias?: ArrayLike<number> }): F {
  const out = new Float64Array(p.B * p.Lq * p.Hq * p.Dv);
  const group = p.Hq / p.Hkv;
  for (let b = 0; b < p.B; b++)
    for (let h = 0; h < p.Hq; h++)
      for (let i = 0; i < p.Lq; i++) {
        const logits: number[] = [];
        for (let j = 0; j < p.Lk; j++) {
          if ((p.causal && j > i) || (p.window > 0 && i - j >= p.window)) {
            logits.push(-Infinity);
            continue;
          }
          let s = 0;
          for (let e = 0; e < p.D; e++) s += at(q, b, i, h, e) * at(k, b, j, Math.floor(h / group), e);
          s *= p.scale;
          if (p.softcap > 0) s = p.softcap * Math.tanh(s / p.softcap);
          if (p.keyBias) s += p.keyBias[b * p.Lk + j];
          logits.push(s);
        }
        const mx = Math.max(...logits);
        // fp32 saturation: a visible key with a −FLT_MAX bias has logit exactly −FLT_MAX; if all do, the row is
        // uniform over every key (what additive −FLT_MAX masks give in fp32)
        const saturated = logits.every((l, j) => l === -Infinity || (p.keyBias !== undefined && p.keyBias[b * p.Lk + j] <= -3.4028234663852886e38));
        const ex = logits.map((l) => (saturated ? 1 : l === -Infinity ? 0 : Math.exp(l - mx)));
        const sum = ex.reduce((a, c) => a + c, 0);
        for (let e = 0; e < p.Dv; e++) {
          let s = 0;
          for (let j = 0; j < p.Lk; j++) s += ex[j] * at(v, b, j, Math.floor(h / group), e);
          out[((b * p.Lq + i) * p.Hq + h) * p.Dv + e] = s / sum;
        }
      }
  return out;
}

/** GLUMBConv on tokens [B, H·W, C] (spec §2.5.3). */
export function glumbconv(x: ArrayLike<number>, B: number, H: number, W: number, C: number, wi: ArrayLike<number>, bi: ArrayLike<number> | undefined,
  wd: ArrayLike<number>, bd: ArrayLike<number> | undefined, wp: ArrayLike<number>, F: number, Cout: number): F {
  const P = H * W;
  const y = new Float64Array(B * P * Cout);
  for (let b = 0; b < B; b++) {
    const t = linear(Array.from({ length: P * C }, (_, i) => x[b * P * C + i]), P, C, wi, 2 * F, bi, 'silu'); // [P, 2F]
    const u = new Float64Array(P * F);
    for (let i = 0; i < H; i++)
      for (let j = 0; j < W; j++)
        for (let c = 0; c < F; c++) {
          let a = bd ? bd[c] : 0;
          let g = bd ? bd[c + F] : 0;
          for (let dy = -1; dy <= 1; dy++)
            for (let dx = -1; dx <= 1; dx++) {
              const yy = i + dy;
              const xx = j + dx;
              if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
              const tap = (dy + 1) * 3 + dx + 1;
              a += t[(yy * W + xx) * 2 * F + c] * wd[c * 9 + tap];
              g += t[(yy * W + xx) * 2 * F + c + F] * wd[(c + F) * 9 + tap];
            }
          u[(i * W + j) * F + c] = a * silu(g);
        }
    y.set(linear(u, P, F, wp, Cout), b * P * Cout);
  }
  return y;
}

export function layerNorm(x: ArrayLike<number>, rows: number, D: number, eps: number, scale?: ArrayLike<number>, shift?: ArrayLike<number>, rpb = rows): F {
  const y = new Float64Array(rows * D);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let i = 0; i < D; i++) mean += x[r * D + i];
    mean /= D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (x[r * D + i] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / D + eps);
    const b = Math.floor(r / rpb);
    for (let i = 0; i < D; i++) {
      let o = (x[r * D + i] - mean) * inv;
      if (scale && shift) o = o * (1 + scale[b * D + i]) + shift[b * D + i];
      y[r * D + i] = o;
    }
  }
  return y;
}

export function rmsNorm(x: ArrayLike<number>, rows: number, D: number, eps: number, w?: ArrayLike<number>, bias?: ArrayLike<number>, onePlus = false): F {
  const y = new Float64Array(rows * D);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < D; i++) ss += x[r * D + i] ** 2;
    const inv = 1 / Math.sqrt(ss / D + eps);
    for (let i = 0; i < D; i++) {
      let o = x[r * D + i] * inv;
      if (w) o *= onePlus ? 1 + w[i] : w[i];
      if (bias) o += bias[i];
      y[r * D + i] = o;
    }
  }
  return y;
}

export function rmsNormChannels(x: ArrayLike<number>, B: number, C: number, HW: number, eps: number, w?: ArrayLike<number>, bias?: ArrayLike<number>): F {
  const y = new Float64Array(B * C * HW);
  for (let b = 0; b < B; b++)
    for (let p = 0; p < HW; p++) {
      let ss = 0;
      for (let c = 0; c < C; c++) ss += x[(b * C + c) * HW + p] ** 2;
      const inv = 1 / Math.sqrt(ss / C + eps);
      for (let c = 0; c < C; c++) {
        let o = x[(b * C + c) * HW + p] * inv;
        if (w) o *= w[c];
        if (bias) o += bias[c];
        y[(b * C + c) * HW + p] = o;
      }
    }
  return y;
}

/** torch.repeat_interleave(x, rep, dim=1) on [B, C, ...rest] (rest = elements per channel). */
export function repeatInterleave(x: ArrayLike<number>, B: number, C: number, rest: number, rep: number): F {
  const y = new Float64Array(B * C * rep * rest);
  for (let b = 0; b < B; b++)
    for (let k = 0; k < C * rep; k++)
      for (let p = 0; p < rest; p++) y[(b * C * rep + k) * rest + p] = x[(b * C + Math.floor(k / rep)) * rest + p];
  return y;
}

/** torch.nn.functional.pixel_shuffle: [B, C·r², H, W] → [B, C, H·r, W·r]. */
export function pixelShuffle(x: ArrayLike<number>, B: number, C: number, H: number, W: number, r: number): F {
  const y = new Float64Array(B * C * r * r * H * W);
  for (let b = 0; b < B; b++)
    for (let c = 0; c < C; c++)
      for (let i = 0; i < r; i++)
        for (let j = 0; j < r; j++)
          for (let h = 0; h < H; h++)
            for (let w = 0; w < W; w++)
              y[((b * C + c) * H * r + h * r + i) * W * r + w * r + j] = x[((b * C * r * r + c * r * r + i * r + j) * H + h) * W + w];
  return y;
}

export function pixelUnshuffle(x: ArrayLike<number>, B: number, C: number, H: number, W: number, r: number): F {
  const Ho = H / r;
  const Wo = W / r;
  const y = new Float64Array(B * C * H * W);
  for (let b = 0; b < B; b++)
    for (let c = 0; c < C; c++)
      for (let i = 0; i < r; i++)
        for (let j = 0; j < r; j++)
          for (let h = 0; h < Ho; h++)
            for (let w = 0; w < Wo; w++)
              y[((b * C * r * r + c * r * r + i * r + j) * Ho + h) * Wo + w] = x[((b * C + c) * H + h * r + i) * W + w * r + j];
  return y;
}

export function upsampleNearest2x(x: ArrayLike<number>, BC: number, H: number, W: number): F {
  const y = new Float64Array(BC * 4 * H * W);
  for (let p = 0; p < BC; p++)
    for (let i = 0; i < 2 * H; i++)
      for (let j = 0; j < 2 * W; j++) y[(p * 2 * H + i) * 2 * W + j] = x[(p * H + (i >> 1)) * W + (j >> 1)];
  return y;
}

/** Rotate-half RoPE on contiguous [B, L, H, D]; angles from fp32 inv_freq as transformers computes them. */
export function rope(x: ArrayLike<number>, [B, L, H, D]: number[], positions: ArrayLike<number> | undefined, theta: number): F {
  const y = new Float64Array(B * L * H * D);
  const half = D / 2;
  for (let b = 0; b < B; b++)
    for (let l = 0; l < L; l++) {
      const pos = positions ? positions[l] : l;
      for (let h = 0; h < H; h++)
        for (let i = 0; i < half; i++) {
          const invFreq = Math.fround(1 / Math.fround(Math.pow(theta, Math.fround((2 * i) / D))));
          const ang = Math.fround(pos * invFreq);
          const base = ((b * L + l) * H + h) * D;
          const x1 = x[base + i];
          const x2 = x[base + i + half];
          y[base + i] = x1 * Math.cos(ang) - x2 * Math.sin(ang);
          y[base + i + half] = x2 * Math.cos(ang) + x1 * Math.sin(ang);
        }
    }
  return y;
}
