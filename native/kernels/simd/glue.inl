// The glue ops (native/include/sana_ops.h, "glue ops"): elementwise updates, layout changes and lookups that
// used to run on host arrays between the big ops. Memory-bound: vectorised over the contiguous dim, split
// across threads in chunks (`chunked`, vector.inl) or in rows. Included by ops.inl inside the variant's namespace.

SANA_EXACT_FP_BEGIN
int axpby(sana_ctx* ctx, float a, const float* x, float b, const float* y, ptrdiff_t n, float* out) {
  chunked(ctx, n, [&](ptrdiff_t i, ptrdiff_t e) {
    if (!y) {
      for (; i + VW <= e; i += VW) vstore(out + i, vload(x + i) * a);
      for (; i < e; ++i) out[i] = a * x[i];
      return;
    }
    for (; i + VW <= e; i += VW) vstore(out + i, vload(x + i) * a + vload(y + i) * b);
    for (; i < e; ++i) out[i] = a * x[i] + b * y[i];
  });
  return SANA_OK;
}

int cfg_combine(sana_ctx* ctx, const float* u, const float* c, ptrdiff_t n, float scale, float* out) {
  chunked(ctx, n, [&](ptrdiff_t i, ptrdiff_t e) {
    for (; i + VW <= e; i += VW) {
      vf uv = vload(u + i);
      vstore(out + i, uv + (vload(c + i) - uv) * scale);
    }
    for (; i < e; ++i) out[i] = u[i] + scale * (c[i] - u[i]);
  });
  return SANA_OK;
}
SANA_EXACT_FP_END

int count_nonfinite(sana_ctx* ctx, const float* x, ptrdiff_t n, float* count) {
  // one partial count per chunk (chunks never overlap), summed after the parallel pass
  ptrdiff_t chunks = (n + kChunk - 1) / kChunk;
  ptrdiff_t* partial = static_cast<ptrdiff_t*>(scratch_alloc(sizeof(ptrdiff_t) * chunks));
  if (!partial) return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "count_nonfinite: out of memory");
  parallel_for(ctx, chunks, [&](ptrdiff_t c0, ptrdiff_t c1) {
    for (ptrdiff_t c = c0; c < c1; ++c) {
      ptrdiff_t i = c * kChunk, e = mn(n, i + kChunk), bad = 0;
      vi acc = vi{};
      for (; i + VW <= e; i += VW) {
        vu bits;
        std::memcpy(&bits, x + i, sizeof bits);
        acc -= (vi)((bits & 0x7f800000u) == 0x7f800000u);  // lanes of a true comparison are −1
      }
      for (int l = 0; l < VW; ++l) bad += acc[l];
      for (; i < e; ++i) bad += !std::isfinite(x[i]);
      partial[c] = bad;
    }
  });
  ptrdiff_t bad = 0;
  for (ptrdiff_t c = 0; c < chunks; ++c) bad += partial[c];
  scratch_free(partial);
  count[0] = bad > (1 << 24) ? (float)(1 << 24) : (float)bad;
  return SANA_OK;
}

int adaln_modulation(sana_ctx* ctx, const float* table, const float* emb, ptrdiff_t B, ptrdiff_t K, ptrdiff_t D,
                     ptrdiff_t row, ptrdiff_t chunk, float* out) {
  parallel_for(ctx, K * B, [&](ptrdiff_t r0, ptrdiff_t r1) {
    for (ptrdiff_t r = r0; r < r1; ++r) {
      ptrdiff_t k = r / B, b = r % B;
      const float* t = table + k * D;
      const float* e = emb + b * row + k * chunk;
      float* o = out + r * D;
      ptrdiff_t d = 0;
      for (; d + VW <= D; d += VW) vstore(o + d, vload(t + d) + vload(e + d));
      for (; d < D; ++d) o[d] = t[d] + e[d];
    }
  });
  return SANA_OK;
}

// y[b, j, i] = x[b, i, j] for x [B, R, S], in 32 × 32 tiles (both sides stay in cache lines).
void transpose(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t R, ptrdiff_t S, float* y) {
  constexpr ptrdiff_t T = 32;
  ptrdiff_t tr = (R + T - 1) / T, ts = (S + T - 1) / T;
  parallel_for(ctx, B * tr * ts, [&](ptrdiff_t t0, ptrdiff_t t1) {
    for (ptrdiff_t t = t0; t < t1; ++t) {
      ptrdiff_t b = t / (tr * ts), i0 = t / ts % tr * T, j0 = t % ts * T;
      const float* xb = x + b * R * S;
      float* yb = y + b * R * S;
      for (ptrdiff_t i = i0; i < mn(R, i0 + T); ++i)
        for (ptrdiff_t j = j0; j < mn(S, j0 + T); ++j) yb[j * R + i] = xb[i * S + j];
    }
  });
}

// Calls f(pixels, tokens) per patch position (b, i, j, r, s): the C elements at pixel (b, ·, i·p + r, j·p + s) of
// the NCHW map (stride H·W) and at channels (r·p + s)·C + · of token (b, i·w + j) (stride 1). Rows split over threads.
template <class F>
void each_patch(sana_ctx* ctx, ptrdiff_t B, ptrdiff_t C, ptrdiff_t h, ptrdiff_t w, ptrdiff_t p, F f) {
  ptrdiff_t H = h * p, W = w * p;
  parallel_for(ctx, B * h, [&](ptrdiff_t r0, ptrdiff_t r1) {
    for (ptrdiff_t row = r0; row < r1; ++row) {
      ptrdiff_t b = row / h, i = row % h;
      for (ptrdiff_t j = 0; j < w; ++j)
        for (ptrdiff_t r = 0; r < p; ++r)
          for (ptrdiff_t s = 0; s < p; ++s) f((b * C * H + i * p + r) * W + j * p + s, ((row * w + j) * p * p + r * p + s) * C);
    }
  });
}

int patchify(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t p, float* y) {
  if (p == 1) {
    transpose(ctx, x, B, C, H * W, y);
    return SANA_OK;
  }
  each_patch(ctx, B, C, H / p, W / p, p, [&](ptrdiff_t pixels, ptrdiff_t tokens) {
    for (ptrdiff_t c = 0; c < C; ++c) y[tokens + c] = x[pixels + c * H * W];
  });
  return SANA_OK;
}

int unpatchify(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t h, ptrdiff_t w, ptrdiff_t p, ptrdiff_t C, float* y) {
  if (p == 1) {
    transpose(ctx, x, B, h * w, C, y);
    return SANA_OK;
  }
  ptrdiff_t HW = h * p * w * p;
  each_patch(ctx, B, C, h, w, p, [&](ptrdiff_t pixels, ptrdiff_t tokens) {
    for (ptrdiff_t c = 0; c < C; ++c) y[pixels + c * HW] = x[tokens + c];
  });
  return SANA_OK;
}

int copy4(sana_ctx* ctx, const sana_view4* src, const sana_view4* dst, ptrdiff_t B, ptrdiff_t N, ptrdiff_t H, ptrdiff_t D) {
  bool rows = src->sd == 1 && dst->sd == 1;
  parallel_for(ctx, B * N * H, [&](ptrdiff_t r0, ptrdiff_t r1) {
    for (ptrdiff_t r = r0; r < r1; ++r) {
      ptrdiff_t b = r / (N * H), n = r / H % N, h = r % H;
      const float* s = src->data + b * src->sb + n * src->sn + h * src->sh;
      float* o = dst->data + b * dst->sb + n * dst->sn + h * dst->sh;
      if (rows) {
        std::memcpy(o, s, sizeof(float) * D);
      } else {
        for (ptrdiff_t d = 0; d < D; ++d) o[d * dst->sd] = s[d * src->sd];
      }
    }
  });
  return SANA_OK;
}

int embedding(sana_ctx* ctx, const void* table, int dt, ptrdiff_t V, ptrdiff_t D, const int32_t* ids, ptrdiff_t n,
              float scale, float* out) {
  parallel_for(ctx, n, [&](ptrdiff_t r0, ptrdiff_t r1) {
    for (ptrdiff_t r = r0; r < r1; ++r) {
      float* o = out + r * D;
      ptrdiff_t base = (ptrdiff_t)ids[r] * D;
      if (dt == SANA_F32) {
        const float* t = static_cast<const float*>(table) + base;
        for (ptrdiff_t d = 0; d < D; ++d) o[d] = t[d] * scale;
      } else {
        const uint16_t* t = static_cast<const uint16_t*>(table) + base;
        for (ptrdiff_t d = 0; d < D; ++d) o[d] = (dt == SANA_BF16 ? bf16_to_f32(t[d]) : f16_to_f32(t[d])) * scale;
      }
    }
  });
  return SANA_OK;
}

int group_mean(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, ptrdiff_t groups, float* y) {
  ptrdiff_t g = C / groups;
  float inv = (float)g;
  parallel_for(ctx, B * groups, [&](ptrdiff_t r0, ptrdiff_t r1) {
    for (ptrdiff_t r = r0; r < r1; ++r) {
      const float* s = x + r * g * HW;  // (b·groups + k)·g = b·C + k·g
      float* o = y + r * HW;
      ptrdiff_t p = 0;
      for (; p + VW <= HW; p += VW) {
        vf acc = vload(s + p);
        for (ptrdiff_t j = 1; j < g; ++j) acc += vload(s + j * HW + p);
        vstore(o + p, acc / inv);
      }
      for (; p < HW; ++p) {
        float acc = s[p];
        for (ptrdiff_t j = 1; j < g; ++j) acc += s[j * HW + p];
        o[p] = acc / inv;
      }
    }
  });
  return SANA_OK;
}

int evit_normalize(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t heads, ptrdiff_t D, ptrdiff_t HW, float eps, float* y) {
  parallel_for(ctx, B * heads * D, [&](ptrdiff_t r0, ptrdiff_t r1) {
    for (ptrdiff_t r = r0; r < r1; ++r) {
      ptrdiff_t bh = r / D, d = r % D;
      const float* num = x + (bh * (D + 1) + d) * HW;
      const float* den = x + (bh * (D + 1) + D) * HW;
      float* o = y + r * HW;
      ptrdiff_t p = 0;
      for (; p + VW <= HW; p += VW) vstore(o + p, vload(num + p) / (vload(den + p) + eps));
      for (; p < HW; ++p) o[p] = num[p] / (den[p] + eps);
    }
  });
  return SANA_OK;
}
