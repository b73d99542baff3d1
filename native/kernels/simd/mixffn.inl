// The fused Mix-FFN (GLUMBConv): expand + SiLU, 3×3 depth-wise on the token grid, GLU gate, project, in row bands.
// Included by ops.inl inside the variant's namespace.

// The Mix-FFN's 3×3 depth-wise convolution and GLU gate on channels [c, c + n) (n ≤ VW) of grid rows
// [r0, r1): u[pixel][c] = a · silu(g), a and g the value (channels < F) and gate halves of the [rows][W][2F]
// expanded band t, whose row 0 is grid row `first`; wd holds [9][2F] tap weights, then the [2F] bias.
template <bool Full>
void depthwise_glu(const float* t, const float* wd, ptrdiff_t F, ptrdiff_t H, ptrdiff_t W, ptrdiff_t r0, ptrdiff_t r1,
                   ptrdiff_t first, ptrdiff_t c, ptrdiff_t n, float* u) {
  auto ld = [n](const float* p) { return Full ? vload(p) : vload_n(p, n); };
  ptrdiff_t F2 = 2 * F;
  vf wa[9], wg[9];
  for (int tap = 0; tap < 9; ++tap) wa[tap] = ld(wd + tap * F2 + c), wg[tap] = ld(wd + tap * F2 + F + c);
  vf ba = ld(wd + 9 * F2 + c), bg = ld(wd + 9 * F2 + F + c);
  for (ptrdiff_t r = r0; r < r1; ++r)
    for (ptrdiff_t x = 0; x < W; ++x) {
      vf a = ba, g = bg;
#pragma GCC unroll 3
      for (int dy = 0; dy < 3; ++dy) {
        ptrdiff_t rr = r + dy - 1;
        if (rr < 0 || rr >= H) continue;
        const float* p = t + ((rr - first) * W + x) * F2 + c;
        if (x > 0) a += ld(p - F2) * wa[dy * 3], g += ld(p - F2 + F) * wg[dy * 3];
        a += ld(p) * wa[dy * 3 + 1], g += ld(p + F) * wg[dy * 3 + 1];
        if (x + 1 < W) a += ld(p + F2) * wa[dy * 3 + 2], g += ld(p + F2 + F) * wg[dy * 3 + 2];
      }
      vf res = a * vsilu(g);
      float* o = u + ((r - r0) * W + x) * F + c;
      if (Full) vstore(o, res);
      else vstore_n(o, res, n);
    }
}

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
      // tasks are chunks of VW channels over the whole band: each line of t is fetched once and its nine uses
      // hit L1 (a loop over pixels read nine neighbours' whole channel rows, 9 × 23 KB at the DiT's width, from
      // L3 for every pixel: 10 ms of a 117 ms Mix-FFN on a Zen 5, 3.6 ms after)
      ptrdiff_t chunks = (F + VW - 1) / VW;
      parallel_claim(ctx, chunks, [&](ptrdiff_t chunk, int) {
        ptrdiff_t c = chunk * VW, n = mn<ptrdiff_t>(VW, F - c);
        if (n == VW) depthwise_glu<true>(t, wd, F, H, W, r0, r1, first, c, n, u);
        else depthwise_glu<false>(t, wd, F, H, W, r0, r1, first, c, n, u);
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
