// linear and conv2d on the GEMM (conv2d as implicit GEMM over im2col panels; depth-wise convs direct).
// Included by ops.inl inside the variant's namespace.

// ---- ops ----------------------------------------------------------------------------------------------

int linear(sana_ctx* ctx, const float* x, ptrdiff_t M, ptrdiff_t K, const void* w, int dt, ptrdiff_t N,
           const float* bias, int act, int flags, float* y) {
  Gemm g{};
  g.M = M, g.N = N, g.K = K;
  g.A = Operand{x, SANA_F32, K, 1};
  g.B = Operand{w, dt, 1, K};  // B(k, n) = w[n, k]
  if (flags & SANA_GEMM_PACKED_WEIGHT) g.b_packed = w;
  g.C = y, g.ldc = N, g.bias_col = bias, g.act = act;
#if defined(SANA_BF16DOT)
  g.fast_bf16 = (flags & SANA_GEMM_FAST_BF16) && dt == SANA_BF16;
#endif
  return gemm(ctx, g);
}

struct Im2col {
  const float* x;  // first input channel of the group, one batch item
  ptrdiff_t H, W, Wo, kh, kw, stride, pad;
  ptrdiff_t up;  // H, W: the upsampled map the kernel slides over; x holds [H/up, W/up] per channel
};

void pack_im2col(const void* arg, ptrdiff_t k0, ptrdiff_t kc, ptrdiff_t j0, ptrdiff_t nc, float* dst) {
  const Im2col& s = *static_cast<const Im2col*>(arg);
  ptrdiff_t khw = s.kh * s.kw;
  for (ptrdiff_t jp = 0; jp < nc; jp += NR) {
    float* d = dst + jp * kc;
    ptrdiff_t nr = mn<ptrdiff_t>(NR, nc - jp), p0 = j0 + jp, oy0 = p0 / s.Wo, ox0 = p0 % s.Wo;
    bool one_row = s.stride == 1 && s.up == 1 && ox0 + nr <= s.Wo;
    // (ci, ky, kx) of row k, stepped instead of divided: the packing runs once per k and panel
    ptrdiff_t ci = k0 / khw, ky = k0 % khw / s.kw, kx = k0 % s.kw;
    for (ptrdiff_t k = 0; k < kc; ++k, ++kx) {
      if (kx == s.kw) {
        kx = 0;
        if (++ky == s.kh) ky = 0, ++ci;
      }
      float* dk = d + k * NR;
      if (one_row) {
        ptrdiff_t iy = oy0 - s.pad + ky, ix0 = ox0 - s.pad + kx;
        if (iy < 0 || iy >= s.H) {
          for (int j = 0; j < NR; ++j) dk[j] = 0.0f;
          continue;
        }
        const float* row = s.x + (ci * s.H + iy) * s.W;
        if (ix0 >= 0 && ix0 + nr <= s.W) {
          if (nr == NR)
            for (int v = 0; v < NV; ++v) vstore(dk + v * VW, vload(row + ix0 + v * VW));
          else
            std::memcpy(dk, row + ix0, sizeof(float) * nr);
        } else {
          for (ptrdiff_t j = 0; j < nr; ++j) {
            ptrdiff_t ix = ix0 + j;
            dk[j] = ix >= 0 && ix < s.W ? row[ix] : 0.0f;
          }
        }
        for (ptrdiff_t j = nr; j < NR; ++j) dk[j] = 0.0f;
      } else {
        for (ptrdiff_t j = 0; j < NR; ++j) {
          float v = 0.0f;
          if (j < nr) {
            ptrdiff_t p = p0 + j, iy = p / s.Wo * s.stride - s.pad + ky, ix = p % s.Wo * s.stride - s.pad + kx;
            if (iy >= 0 && iy < s.H && ix >= 0 && ix < s.W) v = s.x[(ci * (s.H / s.up) + iy / s.up) * (s.W / s.up) + ix / s.up];
          }
          dk[j] = v;
        }
      }
    }
  }
}

// Depth-wise conv, stride 1: each channel's plane is copied once into a zero-bordered buffer, so every output
// column runs the vector body (the border columns were scalar, most of the time on the DC-AE's 32- and 64-wide
// maps). Taps are summed in the same order as the strided path below.
int conv2d_depthwise_s1(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                        const void* w, int dt, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t pad, const float* bias, int act,
                        float* y) {
  ptrdiff_t Ho = H + 2 * pad - kh + 1, Wo = W + 2 * pad - kw + 1, Hp = H + 2 * pad, Wp = W + 2 * pad;
  size_t plane = (size_t)(Hp * Wp + VW + kw) * sizeof(float);  // slack: the last vector may read past the plane
  int T = ctx_threads(ctx);
  float* buf = static_cast<float*>(scratch_alloc(plane * (size_t)T));
  if (!buf) return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "conv2d: out of memory for %zu bytes of padded planes", plane * T);
  parallel_for(ctx, B * C, [&](ptrdiff_t b0, ptrdiff_t e0, int slot) {
    float wt[15 * 15];
    float* pp = buf + plane / sizeof(float) * slot;
    std::memset(pp, 0, plane);  // borders and slack stay zero: only the interior is rewritten per channel
    for (ptrdiff_t bc = b0; bc < e0; ++bc) {
      ptrdiff_t c = bc % C;
      const float* src = load_run(w, dt, c * kh * kw, kh * kw, wt);
      if (src != wt) std::memcpy(wt, src, sizeof(float) * kh * kw);
      const float* xp = x + bc * H * W;
      for (ptrdiff_t iy = 0; iy < H; ++iy) std::memcpy(pp + (iy + pad) * Wp + pad, xp + iy * W, sizeof(float) * W);
      float* yp = y + bc * Ho * Wo;
      vf b = vset(bias ? bias[c] : 0.0f);
      for (ptrdiff_t oy = 0; oy < Ho; ++oy) {
        float* yr = yp + oy * Wo;
        for (ptrdiff_t ox = 0; ox < Wo; ox += VW) {
          vf s = b;
          for (ptrdiff_t ky = 0; ky < kh; ++ky) {
            const float* xr = pp + (oy + ky) * Wp + ox;
            for (ptrdiff_t kx = 0; kx < kw; ++kx) s += vload(xr + kx) * wt[ky * kw + kx];
          }
          s = vact(s, act);
          if (ox + VW <= Wo) vstore(yr + ox, s);
          else vstore_n(yr + ox, s, Wo - ox);
        }
      }
    }
  });
  scratch_free(buf);
  return SANA_OK;
}

// Depth-wise conv (one input and one output channel per group), any stride: stride 1 runs vectorised above;
// larger strides (no model uses one on a depth-wise conv) sum each output directly.
int conv2d_depthwise(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                     const void* w, int dt, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t stride, ptrdiff_t pad,
                     const float* bias, int act, float* y) {
  if (stride == 1) return conv2d_depthwise_s1(ctx, x, B, C, H, W, w, dt, kh, kw, pad, bias, act, y);
  ptrdiff_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
  parallel_for(ctx, B * C, [&](ptrdiff_t b0, ptrdiff_t e0) {
    float wt[15 * 15];
    for (ptrdiff_t bc = b0; bc < e0; ++bc) {
      ptrdiff_t c = bc % C;
      const float* src = load_run(w, dt, c * kh * kw, kh * kw, wt);
      if (src != wt) std::memcpy(wt, src, sizeof(float) * kh * kw);
      const float* xp = x + bc * H * W;
      float* yp = y + bc * Ho * Wo;
      for (ptrdiff_t oy = 0; oy < Ho; ++oy)
        for (ptrdiff_t ox = 0; ox < Wo; ++ox) {
          float s = bias ? bias[c] : 0.0f;
          for (ptrdiff_t ky = 0; ky < kh; ++ky) {
            ptrdiff_t iy = oy * stride - pad + ky;
            if (iy < 0 || iy >= H) continue;
            for (ptrdiff_t kx = 0; kx < kw; ++kx) {
              ptrdiff_t ix = ox * stride - pad + kx;
              if (ix >= 0 && ix < W) s += xp[iy * W + ix] * wt[ky * kw + kx];
            }
          }
          yp[oy * Wo + ox] = vact(vset(s), act)[0];
        }
    }
  });
  return SANA_OK;
}

// Stride-1 convolutions with at most NARROW_COUT output channels (the DC-AE's conv_out to RGB): the GEMM's
// 14-row tiles would compute mostly padding rows (3 of 14 used: the 512² conv_out took 51 ms, now 21), so each
// output vector sums the Cin·kh·kw taps of zero-padded input rows directly, for all output channels at once.
// Tasks are bands of NARROW_ROWS output rows; the taps are summed in the order (ci, ky, kx), as the GEMM does.
constexpr ptrdiff_t NARROW_COUT = 4, NARROW_ROWS = 8;

// H, W: the (upsampled) map the kernel slides over; x holds [H/up, W/up] per channel
template <int NC>
void narrow_band(const float* x, ptrdiff_t Cin, ptrdiff_t H, ptrdiff_t W, ptrdiff_t up, const float* wf, ptrdiff_t kh,
                 ptrdiff_t kw, ptrdiff_t pad, ptrdiff_t oy0, ptrdiff_t rows, ptrdiff_t Wp, ptrdiff_t Wr, float* pbuf,
                 float* acc) {
  ptrdiff_t prow = rows + kh - 1, khw = kh * kw;
  std::memset(pbuf, 0, sizeof(float) * (size_t)(prow * Wp));  // pad columns and rows outside the map stay zero
  for (ptrdiff_t ci = 0; ci < Cin; ++ci) {
    for (ptrdiff_t j = 0; j < prow; ++j) {
      ptrdiff_t iy = oy0 - pad + j;
      if (iy < 0 || iy >= H) continue;
      const float* src = x + (ci * (H / up) + iy / up) * (W / up);
      if (up == 1) std::memcpy(pbuf + j * Wp + pad, src, sizeof(float) * (size_t)W);
      else
        for (ptrdiff_t ix = 0; ix < W; ++ix) pbuf[j * Wp + pad + ix] = src[ix / up];
    }
    const float* wc = wf + ci * khw;  // wf: [Cout][Cin][kh·kw]
    for (ptrdiff_t r = 0; r < rows; ++r)
      for (ptrdiff_t ox = 0; ox < Wr; ox += VW) {
        vf a[NC];
        for (int co = 0; co < NC; ++co) a[co] = vload(acc + (co * rows + r) * Wr + ox);
        for (ptrdiff_t ky = 0; ky < kh; ++ky)
          for (ptrdiff_t kx = 0; kx < kw; ++kx) {
            vf v = vload(pbuf + (r + ky) * Wp + ox + kx);
            for (int co = 0; co < NC; ++co) a[co] += v * wc[co * Cin * khw + ky * kw + kx];
          }
        for (int co = 0; co < NC; ++co) vstore(acc + (co * rows + r) * Wr + ox, a[co]);
      }
  }
}

int conv2d_narrow(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t Cin, ptrdiff_t H, ptrdiff_t W, ptrdiff_t up,
                  const void* w, int dt, ptrdiff_t Cout, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t pad, const float* bias,
                  int act, float* y) {
  ptrdiff_t Ho = H + 2 * pad - kh + 1, Wo = W + 2 * pad - kw + 1, Wr = round_up(Wo, VW), Wp = Wr + kw - 1;
  ptrdiff_t bands = (Ho + NARROW_ROWS - 1) / NARROW_ROWS, n = Cout * Cin * kh * kw;
  size_t per = sizeof(float) * (size_t)((NARROW_ROWS + kh - 1) * Wp + Cout * NARROW_ROWS * Wr);
  int T = ctx_threads(ctx);
  float* wf = static_cast<float*>(scratch_alloc(sizeof(float) * (size_t)n + per * (size_t)T));
  if (!wf) return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "conv2d: out of memory for %td-row bands", NARROW_ROWS);
  {
    const float* src = load_run(w, dt, 0, n, wf);
    if (src != wf) std::memcpy(wf, src, sizeof(float) * (size_t)n);
  }
  float* scratch = wf + n;
  parallel_claim(ctx, B * bands, [&](ptrdiff_t task, int slot) {
    ptrdiff_t b = task / bands, oy0 = task % bands * NARROW_ROWS, rows = mn(NARROW_ROWS, Ho - oy0);
    float* pbuf = scratch + per / sizeof(float) * slot;
    float* acc = pbuf + (NARROW_ROWS + kh - 1) * Wp;
    for (ptrdiff_t co = 0; co < Cout; ++co)
      for (ptrdiff_t i = 0; i < rows * Wr; ++i) acc[co * rows * Wr + i] = bias ? bias[co] : 0.0f;
    const float* xb = x + b * Cin * (H / up) * (W / up);
    switch (Cout) {
      case 1: narrow_band<1>(xb, Cin, H, W, up, wf, kh, kw, pad, oy0, rows, Wp, Wr, pbuf, acc); break;
      case 2: narrow_band<2>(xb, Cin, H, W, up, wf, kh, kw, pad, oy0, rows, Wp, Wr, pbuf, acc); break;
      case 3: narrow_band<3>(xb, Cin, H, W, up, wf, kh, kw, pad, oy0, rows, Wp, Wr, pbuf, acc); break;
      default: narrow_band<4>(xb, Cin, H, W, up, wf, kh, kw, pad, oy0, rows, Wp, Wr, pbuf, acc); break;
    }
    for (ptrdiff_t co = 0; co < Cout; ++co)
      for (ptrdiff_t r = 0; r < rows; ++r) {
        const float* a = acc + (co * rows + r) * Wr;
        float* yr = y + ((b * Cout + co) * Ho + oy0 + r) * Wo;
        ptrdiff_t ox = 0;
        for (; ox + VW <= Wo; ox += VW) vstore(yr + ox, vact(vload(a + ox), act));
        if (ox < Wo) vstore_n(yr + ox, vact(vload(a + ox), act), Wo - ox);
      }
  });
  scratch_free(wf);
  return SANA_OK;
}

// up = 2 (validation: with groups = 1) slides the kernel over x's nearest-neighbour upsampling, read from x
// where each path gathers its input (the Winograd tile rows, the narrow path's padded rows, the im2col panels).
int conv2d(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t Cin, ptrdiff_t H, ptrdiff_t W, const void* w, int dt,
           ptrdiff_t Cout, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t stride, ptrdiff_t pad, ptrdiff_t groups, ptrdiff_t up,
           const float* bias, int act, float* y) {
  ptrdiff_t cig = Cin / groups, cog = Cout / groups, Hs = H, Ws = W;  // Hs, Ws: x's own size
  if (cig == 1 && cog == 1 && up == 1) return conv2d_depthwise(ctx, x, B, Cin, H, W, w, dt, kh, kw, stride, pad, bias, act, y);
  H *= up, W *= up;
  if (winograd_applies(Cin, Cout, H, W, kh, kw, stride, pad, groups))
    return conv2d_winograd(ctx, x, B, Cin, H, W, up, w, dt, Cout, bias, act, y);
  if (groups == 1 && stride == 1 && Cout <= NARROW_COUT)
    return conv2d_narrow(ctx, x, B, Cin, H, W, up, w, dt, Cout, kh, kw, pad, bias, act, y);
  ptrdiff_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1, P = Ho * Wo;
  ptrdiff_t K = cig * kh * kw;
  bool pointwise = kh == 1 && kw == 1 && stride == 1 && pad == 0 && up == 1;
  for (ptrdiff_t b = 0; b < B; ++b)
    for (ptrdiff_t gi = 0; gi < groups; ++gi) {
      const float* xg = x + (b * Cin + gi * cig) * Hs * Ws;
      Im2col im{xg, H, W, Wo, kh, kw, stride, pad, up};
      Gemm g{};
      g.M = cog, g.N = P, g.K = K;
      g.A = Operand{static_cast<const char*>(w) + gi * cog * K * (dt == SANA_F32 ? 4 : 2), dt, K, 1};
      if (pointwise) {
        g.B = Operand{xg, SANA_F32, P, 1};
      } else {
        g.pack_b_custom = pack_im2col;
        g.pack_b_arg = &im;
      }
      g.C = y + (b * Cout + gi * cog) * P, g.ldc = P;
      g.bias_row = bias ? bias + gi * cog : nullptr, g.act = act;
      int st = gemm(ctx, g);
      if (st != SANA_OK) return st;
    }
  return SANA_OK;
}
