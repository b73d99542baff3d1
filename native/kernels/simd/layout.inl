// Pixel (un)shuffle, elementwise activation, RoPE.
// Included by ops.inl inside the variant's namespace.

// For r = 2 an output row zips its two source rows with lane shuffles (a strided store per element ran at
// ~5 GB/s on the DC-AE's 512² maps).
int pixel_shuffle(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t r,
                  ptrdiff_t repeat, int accumulate, float* y) {
  ptrdiff_t Wr = W * r, Cx = C * r * r / repeat;
  parallel_for(ctx, B * C * H, [&](ptrdiff_t t0, ptrdiff_t t1) {
    for (ptrdiff_t t = t0; t < t1; ++t) {
      ptrdiff_t b = t / (C * H), c = t / H % C, h = t % H;
      for (ptrdiff_t i = 0; i < r; ++i) {
        float* yr = y + ((b * C + c) * H * r + h * r + i) * Wr;
        auto source = [&](ptrdiff_t j) { return x + ((b * Cx + (c * r * r + i * r + j) / repeat) * H + h) * W; };
        ptrdiff_t w = 0;
        if (r == 2) {
          const float *x0 = source(0), *x1 = source(1);
          for (; w + VW <= W; w += VW) {
            vf a = vload(x0 + w), b1 = vload(x1 + w), lo = vzip_lo(a, b1), hi = vzip_hi(a, b1);
            if (accumulate) lo += vload(yr + 2 * w), hi += vload(yr + 2 * w + VW);
            vstore(yr + 2 * w, lo);
            vstore(yr + 2 * w + VW, hi);
          }
        }
        for (ptrdiff_t j = 0; j < r; ++j) {
          const float* xr = source(j);
          for (ptrdiff_t k = w; k < W; ++k) yr[k * r + j] = accumulate ? yr[k * r + j] + xr[k] : xr[k];
        }
      }
    }
  });
  return SANA_OK;
}

int pixel_unshuffle(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t r,
                    float* y) {
  ptrdiff_t Ho = H / r, Wo = W / r;
  parallel_for(ctx, B * C * Ho, [&](ptrdiff_t t0, ptrdiff_t t1) {
    for (ptrdiff_t t = t0; t < t1; ++t) {
      ptrdiff_t bc = t / Ho, h = t % Ho;
      for (ptrdiff_t i = 0; i < r; ++i) {
        const float* xr = x + (bc * H + h * r + i) * W;
        for (ptrdiff_t j = 0; j < r; ++j) {
          float* yr = y + ((bc * r * r + i * r + j) * Ho + h) * Wo;
          for (ptrdiff_t w = 0; w < Wo; ++w) yr[w] = xr[w * r + j];
        }
      }
    }
  });
  return SANA_OK;
}

int activation(sana_ctx* ctx, const float* x, ptrdiff_t n, int act, float* y) {
  chunked(ctx, n, [&](ptrdiff_t i, ptrdiff_t e) {
    for (; i + VW <= e; i += VW) vstore(y + i, vact(vload(x + i), act));
    if (i < e) vstore_n(y + i, vact(vload_n(x + i, e - i), act), e - i);
  });
  return SANA_OK;
}

int rope(sana_ctx* ctx, const sana_view4* x, ptrdiff_t B, ptrdiff_t L, ptrdiff_t heads, ptrdiff_t dim,
         const int32_t* positions, float theta, const sana_view4* out) {
  ptrdiff_t half = dim / 2;
  float* cs = static_cast<float*>(scratch_alloc(sizeof(float) * (size_t)(2 * L * half)));
  if (!cs) return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "rope: out of memory");
  // cos/sin tables exactly as the reference computes them (fp32 inv_freq, fp32 angle)
  for (ptrdiff_t l = 0; l < L; ++l) {
    float pos = positions ? (float)positions[l] : (float)l;
    for (ptrdiff_t i = 0; i < half; ++i) {
      float ang = pos * (1.0f / std::pow(theta, (float)(2 * i) / (float)dim));
      cs[(2 * l) * half + i] = std::cos(ang);
      cs[(2 * l + 1) * half + i] = std::sin(ang);
    }
  }
  parallel_for(ctx, B * L * heads, [&](ptrdiff_t t0, ptrdiff_t t1) {
    for (ptrdiff_t t = t0; t < t1; ++t) {
      ptrdiff_t b = t / (L * heads), l = t / heads % L, h = t % heads;
      const float* xs = x->data + b * x->sb + l * x->sn + h * x->sh;
      float* os = out->data + b * out->sb + l * out->sn + h * out->sh;
      const float* c = cs + 2 * l * half;
      const float* s = c + half;
      for (ptrdiff_t i = 0; i < half; ++i) {
        float x1 = xs[i * x->sd], x2 = xs[(i + half) * x->sd];
        os[i * out->sd] = x1 * c[i] - x2 * s[i];
        os[(i + half) * out->sd] = x2 * c[i] + x1 * s[i];
      }
    }
  });
  scratch_free(cs);
  return SANA_OK;
}
