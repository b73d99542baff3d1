// LayerNorm (+ fused adaLN), gated residual, mul, RMSNorm over rows and over channels.
// Included by ops.inl inside the variant's namespace.

int layer_norm(sana_ctx* ctx, const float* x, ptrdiff_t rows, ptrdiff_t dim, float eps, const float* scale,
               const float* shift, ptrdiff_t rpb, float* y) {
  parallel_for(ctx, rows, [&](ptrdiff_t r0, ptrdiff_t r1) {
    for (ptrdiff_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      ptrdiff_t body = dim / VW * VW, tail = dim - body;
      vf s = vf{};
      for (ptrdiff_t i = 0; i < body; i += VW) s += vload(xr + i);
      if (tail) s += vload_n(xr + body, tail);
      float mean = hsum(s) / (float)dim;
      vf q = vf{};
      for (ptrdiff_t i = 0; i < body; i += VW) {
        vf c = vload(xr + i) - mean;
        q += c * c;
      }
      if (tail) {
        vf c = vload_n(xr + body, tail) - mean;
        vi idx;
        for (int l = 0; l < VW; ++l) idx[l] = l;
        c = vselect(idx < (int32_t)tail, c, vf{});
        q += c * c;
      }
      float inv = 1.0f / std::sqrt(hsum(q) / (float)dim + eps);
      const float* sc = scale ? scale + r / rpb * dim : nullptr;
      const float* sh = shift ? shift + r / rpb * dim : nullptr;
      for (ptrdiff_t i = 0; i < dim; i += VW) {
        ptrdiff_t n = mn<ptrdiff_t>(VW, dim - i);
        vf v = ((n == VW ? vload(xr + i) : vload_n(xr + i, n)) - mean) * inv;
        if (sc) v = v * ((n == VW ? vload(sc + i) : vload_n(sc + i, n)) + 1.0f) + (n == VW ? vload(sh + i) : vload_n(sh + i, n));
        if (n == VW) vstore(yr + i, v);
        else vstore_n(yr + i, v, n);
      }
    }
  });
  return SANA_OK;
}

int residual(sana_ctx* ctx, const float* x, const float* y, ptrdiff_t rows, ptrdiff_t dim, const float* gate, ptrdiff_t rpb,
             float* out) {
  parallel_for(ctx, rows, [&](ptrdiff_t r0, ptrdiff_t r1) {
    for (ptrdiff_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      const float* yr = y + r * dim;
      const float* gr = gate ? gate + r / rpb * dim : nullptr;
      float* o = out + r * dim;
      for (ptrdiff_t i = 0; i < dim; i += VW) {
        ptrdiff_t n = mn<ptrdiff_t>(VW, dim - i);
        vf yv = n == VW ? vload(yr + i) : vload_n(yr + i, n);
        if (gr) yv *= n == VW ? vload(gr + i) : vload_n(gr + i, n);
        vf v = (n == VW ? vload(xr + i) : vload_n(xr + i, n)) + yv;
        if (n == VW) vstore(o + i, v);
        else vstore_n(o + i, v, n);
      }
    }
  });
  return SANA_OK;
}

int mul(sana_ctx* ctx, const float* x, const float* y, ptrdiff_t n, float* out) {
  chunked(ctx, n, [&](ptrdiff_t i, ptrdiff_t e) {
    for (; i + VW <= e; i += VW) vstore(out + i, vload(x + i) * vload(y + i));
    if (i < e) vstore_n(out + i, vload_n(x + i, e - i) * vload_n(y + i, e - i), e - i);
  });
  return SANA_OK;
}

int rms_norm(sana_ctx* ctx, const float* x, ptrdiff_t rows, ptrdiff_t dim, const float* weight, const float* bias,
             float eps, int mode, float* y) {
  parallel_for(ctx, rows, [&](ptrdiff_t r0, ptrdiff_t r1) {
    for (ptrdiff_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      vf q = vf{};
      for (ptrdiff_t i = 0; i < dim; i += VW) {
        ptrdiff_t n = mn<ptrdiff_t>(VW, dim - i);
        vf v = n == VW ? vload(xr + i) : vload_n(xr + i, n);
        q += v * v;
      }
      float inv = 1.0f / std::sqrt(hsum(q) / (float)dim + eps);
      for (ptrdiff_t i = 0; i < dim; i += VW) {
        ptrdiff_t n = mn<ptrdiff_t>(VW, dim - i);
        vf v = (n == VW ? vload(xr + i) : vload_n(xr + i, n)) * inv;
        if (weight) {
          vf w = n == VW ? vload(weight + i) : vload_n(weight + i, n);
          v *= mode == SANA_RMS_ONE_PLUS_WEIGHT ? w + 1.0f : w;
        }
        if (bias) v += n == VW ? vload(bias + i) : vload_n(bias + i, n);
        if (n == VW) vstore(yr + i, v);
        else vstore_n(yr + i, v, n);
      }
    }
  });
  return SANA_OK;
}

// NCHW channel RMSNorm: vectorised over pixels, channels walked with unit-stride rows.
int rms_norm_channels(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, const float* weight,
                      const float* bias, float eps, float* y) {
  // Tasks of PB pixels: each channel's run of them is one contiguous 8 KB read (and write), the sums stay in
  // L1. Blocks of a few cache lines per channel, one map plane (1 MB at 512²) apart, met the caches' set
  // conflicts and a TLB miss per line (a [1, 128, 512, 512] map: 29.6 → 11.5 ms on a Zen 5, 2 threads).
  constexpr ptrdiff_t PB = 2048;
  ptrdiff_t blocks = (HW + PB - 1) / PB;
  parallel_claim(ctx, B * blocks, [&](ptrdiff_t t, int) {
    ptrdiff_t b = t / blocks, p0 = t % blocks * PB, np = mn(PB, HW - p0), full = np / VW * VW;
    const float* xb = x + b * C * HW + p0;
    float* yb = y + b * C * HW + p0;
    alignas(64) float inv[PB];
    std::memset(inv, 0, sizeof(float) * (size_t)round_up(np, VW));
    for (ptrdiff_t c = 0; c < C; ++c) {
      const float* xc = xb + c * HW;
      ptrdiff_t p = 0;
      for (; p < full; p += VW) {
        vf v = vload(xc + p);
        vstore(inv + p, vload(inv + p) + v * v);
      }
      if (p < np) {
        vf v = vload_n(xc + p, np - p);
        vstore(inv + p, vload(inv + p) + v * v);
      }
    }
    for (ptrdiff_t p = 0; p < np; p += VW) {
      vf r = vload(inv + p) * (1.0f / (float)C) + eps;
      for (int l = 0; l < VW; ++l) r[l] = 1.0f / std::sqrt(r[l]);
      vstore(inv + p, r);
    }
    for (ptrdiff_t c = 0; c < C; ++c) {
      float w = weight ? weight[c] : 1.0f, bb = bias ? bias[c] : 0.0f;
      const float* xc = xb + c * HW;
      float* yc = yb + c * HW;
      for (ptrdiff_t p = 0; p < np; p += VW) {
        ptrdiff_t n = mn<ptrdiff_t>(VW, np - p);
        vf v = (n == VW ? vload(xc + p) : vload_n(xc + p, n)) * vload(inv + p);
        v = weight ? v * w : v;
        if (bias) v += bb;
        if (n == VW) vstore(yc + p, v);
        else vstore_n(yc + p, v, n);
      }
    }
  });
  return SANA_OK;
}
