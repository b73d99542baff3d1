// Dense 3×3 stride-1 pad-1 convolutions by Winograd's minimal filtering F(4×4, 3×3): each 4×4 output tile
// is Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A over a 6×6 input tile d, so the GEMM does 36 multiply-adds per tile and channel
// pair instead of 144 (4× fewer). The 36 products summed over input channels are 36 GEMMs
// M_ξ[Cout × tiles] = U_ξ[Cout × Cin] · V_ξ[Cin × tiles], with U and V written straight into the GEMM's
// panel layouts. Why the interpolation points {0, 1, −1, ½, −2, ∞} and not the usual {0, ±1, ±2, ∞}, and the
// error this costs against the direct sum: docs/kernels.md. Included by ops.inl inside the variant's namespace.

constexpr int WA = 6;   // input tile side
constexpr int WM = 4;   // output tile side
constexpr int WX = WA * WA;  // products per tile

// Toom-Cook matrices from the points (the last point is ∞): Aᵀ[i][j] = a_jⁱ, G[j][k] = a_jᵏ / Π_{l≠j}(a_j − a_l),
// row j of Bᵀ = coefficients of Π_{l≠j}(x − a_l) (row 5: of Π_l (x − a_l)). Every entry of Aᵀ and Bᵀ is a
// dyadic rational, exact in fp32.
struct WinogradMatrices {
  float at[WM][WA], bt[WA][WA];
  double g[WA][3];  // applied to the weights in fp32 (rounded once)
};
constexpr WinogradMatrices winograd_matrices() {
  const double a[WA - 1] = {0.0, 1.0, -1.0, 0.5, -2.0};
  WinogradMatrices m{};
  for (int j = 0; j < WA; ++j) {
    double p = 1.0;
    for (int i = 0; i < WM; ++i, p *= (j < WA - 1 ? a[j] : 0.0)) m.at[i][j] = (float)(j < WA - 1 ? p : i == WM - 1);
    double f = 1.0;
    for (int l = 0; l < WA - 1; ++l)
      if (l != j && j < WA - 1) f *= a[j] - a[l];
    p = 1.0;
    for (int k = 0; k < 3; ++k, p *= (j < WA - 1 ? a[j] : 0.0)) m.g[j][k] = j < WA - 1 ? p / f : k == 2;
    double c[WA] = {1.0};  // polynomial coefficients, lowest power first
    int deg = 0;
    for (int l = 0; l < WA - 1; ++l) {
      if (l == j) continue;
      for (int d = deg + 1; d >= 1; --d) c[d] = c[d - 1] - a[l] * c[d];
      c[0] = -a[l] * c[0];
      ++deg;
    }
    for (int q = 0; q < WA; ++q) m.bt[j][q] = (float)c[q];
  }
  return m;
}
constexpr WinogradMatrices kWino = winograd_matrices();

// out[i] = Σ_j m[i][j]·in[j] with the zero coefficients skipped (the loops unroll, so the tests fold away)
template <int R, int C>
__attribute__((always_inline)) inline void wino_apply(const float (&m)[R][C], const vf* in, vf* out) {
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    vf s = {};
    bool any = false;
#pragma GCC unroll 8
    for (int j = 0; j < C; ++j) {
      if (m[i][j] == 0.0f) continue;
      vf t = m[i][j] == 1.0f ? in[j] : m[i][j] == -1.0f ? -in[j] : in[j] * m[i][j];
      s = any ? s + t : t;
      any = true;
    }
    out[i] = s;
  }
}

// Lane shuffles between a row of pixels and tile-major vectors (lane l = tile l): deinterleave splits 4·VW
// consecutive floats into the 4 phases p[l] = src[4l + p]; interleave is its inverse.
inline void deinterleave4(const float* src, vf* p) {
  vf a0 = vload(src), a1 = vload(src + VW), a2 = vload(src + 2 * VW), a3 = vload(src + 3 * VW);
  vf e01 = __builtin_shufflevector(a0, a1, SANA_EVEN), o01 = __builtin_shufflevector(a0, a1, SANA_ODD);
  vf e23 = __builtin_shufflevector(a2, a3, SANA_EVEN), o23 = __builtin_shufflevector(a2, a3, SANA_ODD);
  p[0] = __builtin_shufflevector(e01, e23, SANA_EVEN), p[2] = __builtin_shufflevector(e01, e23, SANA_ODD);
  p[1] = __builtin_shufflevector(o01, o23, SANA_EVEN), p[3] = __builtin_shufflevector(o01, o23, SANA_ODD);
}
inline void interleave4(const vf* p, float* dst) {
  vf lo02 = __builtin_shufflevector(p[0], p[2], SANA_ZIPLO), hi02 = __builtin_shufflevector(p[0], p[2], SANA_ZIPHI);
  vf lo13 = __builtin_shufflevector(p[1], p[3], SANA_ZIPLO), hi13 = __builtin_shufflevector(p[1], p[3], SANA_ZIPHI);
  vstore(dst, __builtin_shufflevector(lo02, lo13, SANA_ZIPLO));
  vstore(dst + VW, __builtin_shufflevector(lo02, lo13, SANA_ZIPHI));
  vstore(dst + 2 * VW, __builtin_shufflevector(hi02, hi13, SANA_ZIPLO));
  vstore(dst + 3 * VW, __builtin_shufflevector(hi02, hi13, SANA_ZIPHI));
}

// Where the Winograd convolution pays and its operands stay bounded: wide enough channels that the tile
// transforms are small next to the GEMM, a map of at least 32×32, and transformed weights of at most 160 MB
// (1024 × 1024 channels: the DC-AE's widest; they live in the context's arena between calls).
bool winograd_applies(ptrdiff_t Cin, ptrdiff_t Cout, ptrdiff_t H, ptrdiff_t W, ptrdiff_t kh, ptrdiff_t kw,
                      ptrdiff_t stride, ptrdiff_t pad, ptrdiff_t groups) {
  return kh == 3 && kw == 3 && stride == 1 && pad == 1 && groups == 1 && Cin >= 32 && Cout >= 32 &&
         H * W >= 1024 && (double)WX * round_up(Cout, MR) * Cin * 4 <= 160.0 * (1 << 20);
}

struct WinogradShape {
  ptrdiff_t Cin, Cout, H, W, tw;  // H, W: the (upsampled) map; tw: tiles per tile row (numbered row by row)
  ptrdiff_t up;                   // the input holds [H/up, W/up] per channel (nearest-neighbour upsampling)
  ptrdiff_t t0, N;                // this chunk: tiles t0..t0+N
  ptrdiff_t panels;               // 32-tile panels of V
};

// Calls f(ty, tx0, n, t) for each run of n ≤ VW tiles of the chunk inside one tile row, t = its first tile's
// index in the chunk.
template <class F>
inline void for_tile_groups(const WinogradShape& s, F&& f) {
  for (ptrdiff_t t = 0; t < s.N;) {
    ptrdiff_t ty = (s.t0 + t) / s.tw, tx0 = (s.t0 + t) % s.tw, n = mn<ptrdiff_t>(mn<ptrdiff_t>(VW, s.tw - tx0), s.N - t);
    f(ty, tx0, n, t);
    t += n;
  }
}

// U_ξ in the GEMM's A panels: u[((ξ·(Cout/MR) + co/MR)·Cin + ci)·MR + co%MR] = (G g[co][ci] Gᵀ)_ξ, computed for
// the MR rows of a panel at once (one lane each).
typedef float WeightLanes __attribute__((vector_size(64)));  // 16 lanes ≥ MR
void winograd_weights(sana_ctx* ctx, const void* w, int dt, ptrdiff_t Cin, ptrdiff_t Cout, float* u) {
  static_assert(MR <= 16, "a weight block is one row per lane");
  ptrdiff_t mb = round_up(Cout, MR) / MR;
  parallel_for(ctx, mb, [&](ptrdiff_t b0, ptrdiff_t b1) {
    float buf[9];
    for (ptrdiff_t b = b0; b < b1; ++b)
      for (ptrdiff_t ci = 0; ci < Cin; ++ci) {
        WeightLanes g[9] = {};
        for (ptrdiff_t r = 0; r < MR && b * MR + r < Cout; ++r) {
          const float* src = load_run(w, dt, ((b * MR + r) * Cin + ci) * 9, 9, buf);
          for (int k = 0; k < 9; ++k) g[k][r] = src[k];
        }
        WeightLanes t[WA][3];
        for (int i = 0; i < WA; ++i)
          for (int k = 0; k < 3; ++k)
            t[i][k] = (float)kWino.g[i][0] * g[k] + (float)kWino.g[i][1] * g[3 + k] + (float)kWino.g[i][2] * g[6 + k];
        for (int i = 0; i < WA; ++i)
          for (int j = 0; j < WA; ++j) {
            WeightLanes e = t[i][0] * (float)kWino.g[j][0] + t[i][1] * (float)kWino.g[j][1] + t[i][2] * (float)kWino.g[j][2];
            std::memcpy(u + (((i * WA + j) * mb + b) * Cin + ci) * MR, &e, sizeof(float) * MR);
          }
      }
  });
}

// V_ξ of one chunk in the GEMM's B panels: v[((ξ·panels + t/32)·Cin + ci)·32 + t%32] = (Bᵀ d_t B)_ξ.
void winograd_input(const float* x, const WinogradShape& s, float* v) {
  alignas(64) float row[4 * VW + 4];
  alignas(64) float zipped[6 * VW];
  alignas(64) float lanes[VW];
  ptrdiff_t Ws = s.W / s.up, plane = s.H / s.up * Ws;
  for (ptrdiff_t ci = 0; ci < s.Cin; ++ci) {
    const float* xc = x + ci * plane;
    for_tile_groups(s, [&](ptrdiff_t ty, ptrdiff_t tx0, ptrdiff_t n, ptrdiff_t t) {
      ptrdiff_t x0 = 4 * tx0 - 1, len = 4 * VW + 4;  // padded columns x0..x0+len of the group
      vf h[WA][WA];  // h[r][σ]: input row r of each tile, transformed along x
      for (int r = 0; r < WA; ++r) {
        ptrdiff_t iy = 4 * ty - 1 + r;
        const float* src = row;
        if (iy < 0 || iy >= s.H) {
          std::memset(row, 0, sizeof row);
        } else if (s.up > 1) {
          // the upsampled row: column c is source column c / up. x0 is odd, so for up = 2 the row is the zip
          // of source columns s0 = (x0 − 1) / 2 onwards with themselves, from its second lane
          const float* sr = xc + iy / s.up * Ws;
          ptrdiff_t s0 = (x0 - 1) / 2;
          if (s.up == 2 && x0 > 0 && s0 + 3 * VW <= Ws) {
            for (int q = 0; q < 3; ++q) {
              vf a = vload(sr + s0 + q * VW);
              vstore(zipped + 2 * q * VW, vzip_lo(a, a));
              vstore(zipped + (2 * q + 1) * VW, vzip_hi(a, a));
            }
            src = zipped + 1;
          } else {
            for (ptrdiff_t k = 0; k < len; ++k) {
              ptrdiff_t c = x0 + k;
              row[k] = c >= 0 && c < s.W ? sr[c / s.up] : 0.0f;
            }
          }
        } else if (x0 >= 0 && x0 + len <= s.W) {
          src = xc + iy * s.W + x0;  // interior: straight from the map
        } else {
          ptrdiff_t lo = mx<ptrdiff_t>(0, -x0), hi = mn<ptrdiff_t>(len, s.W - x0);
          std::memset(row, 0, sizeof row);
          std::memcpy(row + lo, xc + iy * s.W + x0 + lo, sizeof(float) * (hi - lo));
        }
        vf d[WA + 2];
        deinterleave4(src, d);
        deinterleave4(src + 4, d + 4);  // columns 4 and 5 of tile l are columns 0 and 1 of tile l + 1
        wino_apply(kWino.bt, d, h[r]);
      }
      ptrdiff_t first = mn<ptrdiff_t>(n, 32 - t % 32);
      for (int sg = 0; sg < WA; ++sg) {
        vf col[WA], out[WA];
        for (int r = 0; r < WA; ++r) col[r] = h[r][sg];
        wino_apply(kWino.bt, col, out);
        for (int rh = 0; rh < WA; ++rh) {
          float* vx = v + (rh * WA + sg) * s.panels * s.Cin * 32;
          float* p0 = vx + ((t / 32) * s.Cin + ci) * 32 + t % 32;
          if (first == VW) {
            vstore(p0, out[rh]);
          } else {
            vstore(lanes, out[rh]);
            std::memcpy(p0, lanes, sizeof(float) * first);
            if (n > first) std::memcpy(vx + ((t / 32 + 1) * s.Cin + ci) * 32, lanes + first, sizeof(float) * (n - first));
          }
        }
      }
    });
    // the last panel's columns past N feed GEMM columns that are never stored: keep them finite
    if (s.N % 32)
      for (int xi = 0; xi < WX; ++xi)
        std::memset(v + ((xi * s.panels + s.panels - 1) * s.Cin + ci) * 32 + s.N % 32, 0, sizeof(float) * (32 - s.N % 32));
  }
}

// y of one chunk from M_ξ[co][t] (row-major, N columns): Aᵀ M A per tile, then bias and activation.
void winograd_output(const float* m, const WinogradShape& s, const float* bias, int act, float* y) {
  alignas(64) float row[4 * VW];
  for (ptrdiff_t co = 0; co < s.Cout; ++co) {
    float* yc = y + co * s.H * s.W;
    vf b = vset(bias ? bias[co] : 0.0f);
    for_tile_groups(s, [&](ptrdiff_t ty, ptrdiff_t tx0, ptrdiff_t n, ptrdiff_t t) {
      vf q[WM][WA];  // q[i][σ]: output row i of each tile before the transform along x
      for (int sg = 0; sg < WA; ++sg) {
        vf col[WA], out[WM];
        for (int rh = 0; rh < WA; ++rh) {
          const float* p = m + ((rh * WA + sg) * s.Cout + co) * s.N + t;
          col[rh] = n == VW ? vload(p) : vload_n(p, n);
        }
        wino_apply(kWino.at, col, out);
        for (int i = 0; i < WM; ++i) q[i][sg] = out[i];
      }
      ptrdiff_t x0 = 4 * tx0, len = mn<ptrdiff_t>(4 * n, s.W - x0);
      for (int i = 0; i < WM && 4 * ty + i < s.H; ++i) {
        vf o[WM];
        wino_apply(kWino.at, q[i], o);
        for (int j = 0; j < WM; ++j) o[j] = vact(o[j] + b, act);
        float* dst = yc + (4 * ty + i) * s.W + x0;
        if (len == 4 * VW) {
          interleave4(o, dst);
        } else {
          interleave4(o, row);
          std::memcpy(dst, row, sizeof(float) * len);
        }
      }
    });
  }
}

// Weights transformed once per call; then each thread claims chunks of tiles (V and M of a chunk kept near
// its core's caches) and takes each through input transform, 36 single-threaded GEMMs and output transform,
// so the 36 products meet no barrier.
int conv2d_winograd(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t Cin, ptrdiff_t H, ptrdiff_t W, ptrdiff_t up,
                    const void* w, int dt, ptrdiff_t Cout, const float* bias, int act, float* y) {
  ptrdiff_t tw = (W + WM - 1) / WM, tiles = tw * ((H + WM - 1) / WM);
  int T = ctx_threads(ctx);
  // tiles per chunk: V and M within ~8 MB (measured flat between 64 and 256 tiles on this machine's 2 MB L2s),
  // and at least one chunk per thread
  ptrdiff_t chunk = mx<ptrdiff_t>(64, mn<ptrdiff_t>(256, (ptrdiff_t)(8 << 20) / (WX * 4 * (Cin + Cout)) / 32 * 32));
  chunk = mn<ptrdiff_t>(chunk, round_up((tiles + T - 1) / T, 32));
  ptrdiff_t chunks = (tiles + chunk - 1) / chunk, mb = round_up(Cout, MR) / MR;
  size_t u_bytes = (size_t)WX * mb * MR * Cin * 4;
  size_t v_bytes = (size_t)WX * chunk * Cin * 4, m_bytes = (size_t)WX * Cout * chunk * 4, per = v_bytes + m_bytes;
  char* arena = static_cast<char*>(ctx_arena(ctx, ARENA_WINOGRAD, u_bytes + per * (size_t)T));
  if (!arena) return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "conv2d: out of memory for %zu bytes of Winograd operands", u_bytes + per * T);
  float* u = reinterpret_cast<float*>(arena);
  winograd_weights(ctx, w, dt, Cin, Cout, u);
  // chunks are claimed one at a time, so a thread whose core another process takes does less of the work
  // (each chunk is computed the same way by whichever thread takes it: the result does not change)
  parallel_claim(ctx, B * chunks, [&](ptrdiff_t c, int slot) {
    float* v = reinterpret_cast<float*>(arena + u_bytes + per * slot);
    float* m = reinterpret_cast<float*>(arena + u_bytes + per * slot + v_bytes);
    ptrdiff_t b = c / chunks, t0 = c % chunks * chunk;
    WinogradShape s{Cin, Cout, H, W, tw, up, t0, mn(chunk, tiles - t0), 0};
    s.panels = (s.N + 31) / 32;
    winograd_input(x + b * Cin * (H / up) * (W / up), s, v);
    for (int xi = 0; xi < WX; ++xi) {
      Gemm g{};
      g.M = Cout, g.N = s.N, g.K = Cin;
      g.a_packed = u + xi * mb * Cin * MR;
      g.b_packed = v + xi * s.panels * Cin * 32;
      g.C = m + xi * Cout * s.N, g.ldc = s.N;
      gemm_range(g, GemmRange{0, Cout, 0, s.N}, nullptr, nullptr);
    }
    winograd_output(m, s, bias, act, y + b * Cout * H * W);
  });
  return SANA_OK;
}
