// The fused Mix-FFN (GLUMBConv): expand + SiLU, 3×3 depth-wise on the token grid, GLU gate, project, in row bands.
// Included by ops.inl inside the variant's namespace.

int glumbconv(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, const void* w_inv,
              const float* b_inv, const void* w_dw, const float* b_dw, const void* w_point, int dt, ptrdiff_t F,
              ptrdiff_t Cout, int flags, float* y) {
  ptrdiff_t F2 = 2 * F, rb = mx<ptrdiff_t>(1, mn<ptrdiff_t>(H, 512 / W));
  size_t band = sizeof(float) * (size_t)((rb + 2) * W * F2), ub = sizeof(float) * (size_t)(rb * W * F);
  float* t = static_cast<float*>(scratch_alloc(band));
  float* u = static_cast<float*>(scratch_alloc(ub));
  float* wd = static_cast<float*>(scratch_alloc(sizeof(float) * (size_t)(9 * F2 + F2)));  // [9][2F] + bias
  if (!t || !u || !wd) {
    scratch_free(t);
    scratch_free(u);
    scratch_free(wd);
    return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "glumbconv: out of memory for a band of %td rows", rb);
  }
  {
    float tmp[9];
    for (ptrdiff_t c = 0; c < F2; ++c) {
      const float* src = load_run(w_dw, dt, c * 9, 9, tmp);
      for (int tap = 0; tap < 9; ++tap) wd[tap * F2 + c] = src[tap];
      wd[9 * F2 + c] = b_dw ? b_dw[c] : 0.0f;
    }
  }
  int st = SANA_OK;
  for (ptrdiff_t b = 0; b < B && st == SANA_OK; ++b) {
    const float* xb = x + b * H * W * C;
    float* yb = y + b * H * W * Cout;
    ptrdiff_t have = -1;  // last expanded row present in t (rows are stored from r0 − 1)
    for (ptrdiff_t r0 = 0; r0 < H && st == SANA_OK; r0 += rb) {
      ptrdiff_t r1 = mn(H, r0 + rb), first = r0 - 1;
      // t row index of grid row r is r − first; carry rows r0−1 and r0 from the previous band
      if (r0 > 0) std::memmove(t, t + (rb) * W * F2, sizeof(float) * (size_t)(2 * W * F2));
      ptrdiff_t from = r0 == 0 ? 0 : have + 1, to = mn(H - 1, r1);
      if (to >= from) {
        Gemm g{};
        g.M = (to - from + 1) * W, g.N = F2, g.K = C;
        g.A = Operand{xb + from * W * C, SANA_F32, C, 1};
        g.B = Operand{w_inv, dt, 1, C};
        if (flags & SANA_GEMM_PACKED_WEIGHT) g.b_packed = w_inv;
        g.C = t + (from - first) * W * F2, g.ldc = F2, g.bias_col = b_inv, g.act = SANA_ACT_SILU;
#if defined(SANA_BF16DOT)
        g.fast_bf16 = (flags & SANA_GEMM_FAST_BF16) && dt == SANA_BF16;
#endif
        st = gemm(ctx, g);
        if (st != SANA_OK) break;
        have = to;
      }
      parallel_for(ctx, (r1 - r0) * W, [&](ptrdiff_t p0, ptrdiff_t p1) {
        for (ptrdiff_t pix = p0; pix < p1; ++pix) {
          ptrdiff_t r = r0 + pix / W, cx = pix % W;
          float* ur = u + pix * F;
          for (ptrdiff_t c = 0; c < F; c += VW) {
            ptrdiff_t n = mn<ptrdiff_t>(VW, F - c);
            vf a = n == VW ? vload(wd + 9 * F2 + c) : vload_n(wd + 9 * F2 + c, n);
            vf g = n == VW ? vload(wd + 9 * F2 + F + c) : vload_n(wd + 9 * F2 + F + c, n);
            for (ptrdiff_t dy = -1; dy <= 1; ++dy) {
              ptrdiff_t rr = r + dy;
              if (rr < 0 || rr >= H) continue;
              for (ptrdiff_t dx = -1; dx <= 1; ++dx) {
                ptrdiff_t cc = cx + dx;
                if (cc < 0 || cc >= W) continue;
                const float* tp = t + ((rr - first) * W + cc) * F2;
                const float* wt = wd + ((dy + 1) * 3 + dx + 1) * F2;
                if (n == VW) {
                  a += vload(tp + c) * vload(wt + c);
                  g += vload(tp + F + c) * vload(wt + F + c);
                } else {
                  a += vload_n(tp + c, n) * vload_n(wt + c, n);
                  g += vload_n(tp + F + c, n) * vload_n(wt + F + c, n);
                }
              }
            }
            vf res = a * vsilu(g);
            if (n == VW) vstore(ur + c, res);
            else vstore_n(ur + c, res, n);
          }
        }
      });
      Gemm g{};
      g.M = (r1 - r0) * W, g.N = Cout, g.K = F;
      g.A = Operand{u, SANA_F32, F, 1};
      g.B = Operand{w_point, dt, 1, F};
      if (flags & SANA_GEMM_PACKED_WEIGHT) g.b_packed = w_point;
      g.C = yb + r0 * W * Cout, g.ldc = Cout, g.act = SANA_ACT_NONE;
#if defined(SANA_BF16DOT)
      g.fast_bf16 = (flags & SANA_GEMM_FAST_BF16) && dt == SANA_BF16;
#endif
      st = gemm(ctx, g);
    }
  }
  scratch_free(t);
  scratch_free(u);
  scratch_free(wd);
  return st;
}

// Row statistics in fp32 with VW partial sums (two passes for LayerNorm: mean, then centred variance).
