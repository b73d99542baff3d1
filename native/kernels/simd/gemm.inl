// The GEMM: packed panels (A: MR rows × KC, B: KC × NR cols, converted to fp32 or to bf16 pairs while
// packing, so weights are never converted as a whole), an MR×NR register-tile microkernel (AMX tiles in the
// amx-bf16 variant), KC/MC/NC cache blocking and a 1-D split of M or N across the context's threads.
// Included by ops.inl inside the variant's namespace.

// ---- GEMM ---------------------------------------------------------------------------------------------
#if SANA_VW == 16
constexpr int MR = 14;
#else
constexpr int MR = 6;
#endif
constexpr int NV = 2;
constexpr int NR = NV * VW;
constexpr ptrdiff_t KC = 256;
// B read in place (prepacked weights, Winograd tiles) leaves the A block (MC × K block, 1.1 MB at most) as the
// only operand a K block must fit in L2: one pass over C for the DiT's K = 1152 instead of five (measured
// 1.2–1.3× on a [4096 × 1152] × [1152 × 1152] GEMM, neutral on the wide Mix-FFN one)
constexpr ptrdiff_t KC_PREPACKED = 1280;
constexpr ptrdiff_t MC = MR * (SANA_VW == 16 ? 16 : 24);
constexpr ptrdiff_t NC = 4096;  // B block KC×NC (4 MB) lives in L3; a large NC means A is packed once per K block

// Element (r, c) of an operand is p[r·rs + c·cs] in dtype dt.
struct Operand {
  const void* p;
  int dt;
  ptrdiff_t rs, cs;
};
// Custom B packer (implicit im2col): fills panels for rows k0..k0+kc, columns j0..j0+nc.
typedef void (*PackFn)(const void* arg, ptrdiff_t k0, ptrdiff_t kc, ptrdiff_t j0, ptrdiff_t nc, float* dst);

struct Gemm {
  ptrdiff_t M, N, K;
  Operand A, B;
  float* C;
  ptrdiff_t ldc;
  const float* bias_col;  // [N] or null
  const float* bias_row;  // [M] or null
  int act;
  bool fast_bf16;  // B is bf16, A fp32: round A to bf16 and use vdpbf16ps
  PackFn pack_b_custom;
  const void* pack_b_arg;
  // B from sana_pack_weight in B.dt (32-column k-major panels, of k-pairs for bf16): read in place by the
  // microkernel of its dtype, converted panel by panel otherwise (bf16 weights without fast_bf16)
  const void* b_packed;
  const float* a_packed;  // fp32 A already in MR-row panels ([M/MR][K][MR], rows past M zero): read in place
};

inline bool b_in_place(const Gemm& g) { return g.b_packed && (g.B.dt == SANA_F32 || g.fast_bf16); }
inline ptrdiff_t k_block_max(const Gemm& g) { return b_in_place(g) ? KC_PREPACKED : KC; }

float elem(const Operand& o, ptrdiff_t r, ptrdiff_t c) {
  ptrdiff_t i = r * o.rs + c * o.cs;
  if (o.dt == SANA_F32) return static_cast<const float*>(o.p)[i];
  uint16_t h = static_cast<const uint16_t*>(o.p)[i];
  return o.dt == SANA_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// A panels: for each group of MR rows, kc × MR floats (row index fastest); rows past mc are zero.
void pack_a(const Operand& A, ptrdiff_t i0, ptrdiff_t mc, ptrdiff_t k0, ptrdiff_t kc, float* dst) {
  alignas(64) float tmp[KC_PREPACKED];
  for (ptrdiff_t ip = 0; ip < mc; ip += MR) {
    float* d = dst + ip * kc;
    ptrdiff_t mr = mn<ptrdiff_t>(MR, mc - ip);
    if (A.cs == 1) {
      for (ptrdiff_t i = 0; i < mr; ++i) {
        const float* src = load_run(A.p, A.dt, (i0 + ip + i) * A.rs + k0, kc, tmp);
        for (ptrdiff_t k = 0; k < kc; ++k) d[k * MR + i] = src[k];
      }
    } else {
      for (ptrdiff_t k = 0; k < kc; ++k)
        for (ptrdiff_t i = 0; i < mr; ++i) d[k * MR + i] = elem(A, i0 + ip + i, k0 + k);
    }
    for (ptrdiff_t i = mr; i < MR; ++i)
      for (ptrdiff_t k = 0; k < kc; ++k) d[k * MR + i] = 0.0f;
  }
}

// B panels: for each group of NR columns, kc × NR floats (column index fastest); columns past nc are zero.
void pack_b(const Operand& B, ptrdiff_t k0, ptrdiff_t kc, ptrdiff_t j0, ptrdiff_t nc, float* dst) {
  alignas(64) float tmp[KC > NR ? KC : NR];
  for (ptrdiff_t jp = 0; jp < nc; jp += NR) {
    float* d = dst + jp * kc;
    ptrdiff_t nr = mn<ptrdiff_t>(NR, nc - jp);
    if (B.rs == 1) {  // each column contiguous in k (linear weights [N, K])
      for (ptrdiff_t j = 0; j < nr; ++j) {
        const float* src = load_run(B.p, B.dt, (j0 + jp + j) * B.cs + k0, kc, tmp);
        for (ptrdiff_t k = 0; k < kc; ++k) d[k * NR + j] = src[k];
      }
      for (ptrdiff_t j = nr; j < NR; ++j)
        for (ptrdiff_t k = 0; k < kc; ++k) d[k * NR + j] = 0.0f;
    } else if (B.cs == 1) {  // each row contiguous in j (NCHW activations [K, P])
      for (ptrdiff_t k = 0; k < kc; ++k) {
        const float* src = load_run(B.p, B.dt, (k0 + k) * B.rs + j0 + jp, nr, tmp);
        float* dk = d + k * NR;
        std::memcpy(dk, src, sizeof(float) * nr);
        for (ptrdiff_t j = nr; j < NR; ++j) dk[j] = 0.0f;
      }
    } else {
      for (ptrdiff_t k = 0; k < kc; ++k)
        for (ptrdiff_t j = 0; j < NR; ++j) d[k * NR + j] = j < nr ? elem(B, k0 + k, j0 + jp + j) : 0.0f;
    }
  }
}

// B panels (as pack_b) from a bf16 weight packed by sana_pack_weight (NR divides the layout's 32 columns).
// A 32-bit lane of a k-pair row holds one column's (k, k + 1) pair, so each converts to rows k and k + 1 by a
// shift and a mask: no transposition (k0 is even: K blocks are multiples of 8; K is zero-padded to 32).
void pack_b_from_packed_bf16(const Gemm& g, ptrdiff_t k0, ptrdiff_t kc, ptrdiff_t j0, ptrdiff_t nc, float* dst) {
  const uint16_t* w = static_cast<const uint16_t*>(g.b_packed);
  for (ptrdiff_t jp = 0; jp < nc; jp += NR) {
    float* d = dst + jp * kc;
    ptrdiff_t n0 = j0 + jp;  // columns past N are zero in the layout
    for (ptrdiff_t k = 0; k < kc; k += 2) {
      const uint16_t* pairs = w + SANA_PACKED_BF16_INDEX(n0, k0 + k, g.K);
      for (int v = 0; v < NV; ++v) {
        vu u;
        std::memcpy(&u, pairs + 2 * v * VW, sizeof u);
        vu lo = u << 16, hi = u & 0xFFFF0000u;
        std::memcpy(d + k * NR + v * VW, &lo, sizeof lo);
        if (k + 1 < kc) std::memcpy(d + (k + 1) * NR + v * VW, &hi, sizeof hi);
      }
    }
  }
}

struct TileOut {
  float* c;
  ptrdiff_t ldc;
  int mr, nr;
  bool accumulate, last;
  const float* bias_col;  // at this tile's first column, or null
  const float* bias_row;  // at this tile's first row, or null
  int act;
};

// Writes an MR×NR accumulator tile: C (+)= acc, then on the last K block bias and activation.
__attribute__((always_inline)) inline void store_tile(vf (&acc)[MR][NV], const TileOut& o) {
  bool full = o.mr == MR && o.nr == NR;
  alignas(64) float tile[MR * NR];
  alignas(64) float bcol[NR];
  if (o.last && o.bias_col) {
    for (int j = 0; j < NR; ++j) bcol[j] = j < o.nr ? o.bias_col[j] : 0.0f;
  }
  if (!full && o.accumulate) {
    for (int i = 0; i < o.mr; ++i) std::memcpy(tile + i * NR, o.c + i * o.ldc, sizeof(float) * o.nr);
  }
  for (int i = 0; i < MR; ++i) {
    if (!full && i >= o.mr) break;
    for (int v = 0; v < NV; ++v) {
      float* dst = full ? o.c + i * o.ldc + v * VW : tile + i * NR + v * VW;
      vf r = acc[i][v];
      if (o.accumulate) r += vload(dst);
      if (o.last) {
        if (o.bias_col) r += vload(bcol + v * VW);
        if (o.bias_row) r += o.bias_row[i];
        r = vact(r, o.act);
      }
      vstore(dst, r);
    }
  }
  if (!full) {
    for (int i = 0; i < o.mr; ++i) std::memcpy(o.c + i * o.ldc, tile + i * NR, sizeof(float) * o.nr);
  }
}

// ldb: floats between consecutive k rows of the B panel (NR when packed per call, 32 for prepacked weights)
void micro_f32(ptrdiff_t kc, const float* __restrict pa, const float* __restrict pb, ptrdiff_t ldb, const TileOut& o) {
  // the C tile is read (accumulate) and written after the k loop: start fetching its rows now
  for (int i = 0; i < o.mr; ++i) {
    __builtin_prefetch(o.c + i * o.ldc, 1);
    __builtin_prefetch(o.c + i * o.ldc + NR - 1, 1);
  }
  vf acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = vf{};
  for (ptrdiff_t k = 0; k < kc; ++k) {
    vf b[NV];
    // B rows come from L2 (a panel of up to KC_PREPACKED × NR floats outgrows L1): fetch 8 rows ahead
    // (measured 1.1–1.15× on the DiT's GEMMs with prepacked weights; A's stream needs no help)
#pragma GCC unroll 2
    for (int line = 0; line < NR; line += 16) __builtin_prefetch(pb + 8 * ldb + line);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = vload(pb + v * VW);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      vf a = vset(pa[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += a * b[v];
    }
    pa += MR;
    pb += ldb;
  }
  store_tile(acc, o);
}

#if defined(SANA_BF16DOT)
// bf16 pairs: A panels hold (A[i][k], A[i][k+1]) as one uint32 per row, B panels (B[k][j], B[k+1][j]) per column.
void pack_a_bf16(const Operand& A, ptrdiff_t i0, ptrdiff_t mc, ptrdiff_t k0, ptrdiff_t kc, uint32_t* dst) {
  ptrdiff_t kp = (kc + 1) / 2;
  alignas(64) uint16_t row[KC_PREPACKED + 32];
  for (ptrdiff_t ip = 0; ip < mc; ip += MR) {
    uint32_t* d = dst + ip * kp;
    ptrdiff_t mr = mn<ptrdiff_t>(MR, mc - ip);
    for (ptrdiff_t i = 0; i < MR; ++i) {
      if (i < mr) {
        const float* src = static_cast<const float*>(A.p) + (i0 + ip + i) * A.rs + k0;
        ptrdiff_t k = 0;
        for (; k + 16 <= kc; k += 16)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + k), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + k)));
        for (; k < kc; ++k) row[k] = f32_to_bf16(src[k]);
        if (kc & 1) row[kc] = 0;
        for (ptrdiff_t p = 0; p < kp; ++p) std::memcpy(d + p * MR + i, row + 2 * p, 4);
      } else {
        for (ptrdiff_t p = 0; p < kp; ++p) d[p * MR + i] = 0;
      }
    }
  }
}

void pack_b_bf16(const Operand& B, ptrdiff_t k0, ptrdiff_t kc, ptrdiff_t j0, ptrdiff_t nc, uint32_t* dst) {
  ptrdiff_t kp = (kc + 1) / 2;
  const uint16_t* w = static_cast<const uint16_t*>(B.p);
  for (ptrdiff_t jp = 0; jp < nc; jp += NR) {
    uint32_t* d = dst + jp * kp;
    ptrdiff_t nr = mn<ptrdiff_t>(NR, nc - jp);
    for (ptrdiff_t j = 0; j < NR; ++j) {
      if (j < nr) {
        const uint16_t* col = w + (j0 + jp + j) * B.cs + k0;  // B.rs == 1: a weight row, contiguous in k
        ptrdiff_t p = 0;
        for (; 2 * p + 1 < kc; ++p) std::memcpy(d + p * NR + j, col + 2 * p, 4);
        if (kc & 1) d[p * NR + j] = col[2 * p];
      } else {
        for (ptrdiff_t p = 0; p < kp; ++p) d[p * NR + j] = 0;
      }
    }
  }
}

// ldb: pairs between consecutive k-pair rows of the B panel (NR when packed per call, 32 for prepacked weights)
void micro_bf16(ptrdiff_t kc, const uint32_t* __restrict pa, const uint32_t* __restrict pb, ptrdiff_t ldb, const TileOut& o) {
  for (int i = 0; i < o.mr; ++i) {
    __builtin_prefetch(o.c + i * o.ldc, 1);
    __builtin_prefetch(o.c + i * o.ldc + NR - 1, 1);
  }
  __m512 acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  ptrdiff_t kp = (kc + 1) / 2;
  for (ptrdiff_t p = 0; p < kp; ++p) {
    // as in micro_f32: B rows from L2, fetched 8 pair rows ahead
    __builtin_prefetch(pb + 8 * ldb);
    __builtin_prefetch(pb + 8 * ldb + 16);
    __m512bh b0 = (__m512bh)_mm512_loadu_si512(pb), b1 = (__m512bh)_mm512_loadu_si512(pb + 16);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      __m512bh a = (__m512bh)_mm512_set1_epi32((int)pa[i]);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
    }
    pa += MR;
    pb += ldb;
  }
  vf out[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) out[i][v] = (vf)acc[i][v];
  store_tile(out, o);
}
#endif


#if defined(SANA_AMX)
// AMX path of the fast bf16 GEMM: a 32×32 output block is four 16×16 fp32 tiles (tmm0-3) fed by two A tiles
// (16 rows × 32 bf16, tmm4-5) and two B tiles (16 k-pairs × 16 columns, tmm6-7) per 32-deep k step.
// A panels: [k-step][32 rows][32 bf16]; B panels: [k-step][16 pairs][32 columns] of (bf16, bf16) pairs.
constexpr ptrdiff_t AMX_T = 32, AMX_KC = 512, AMX_MC = 256, AMX_NC = 1024;

struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

void amx_configure() {
  TileConfig cfg{};
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
  _tile_loadconfig(&cfg);
}

void pack_a_amx(const Operand& A, ptrdiff_t i0, ptrdiff_t mc, ptrdiff_t k0, ptrdiff_t kc, uint16_t* dst) {
  ptrdiff_t steps = (kc + AMX_T - 1) / AMX_T;
  alignas(64) uint16_t row[AMX_KC];
  for (ptrdiff_t ip = 0; ip < mc; ip += AMX_T) {
    uint16_t* d = dst + ip * steps * AMX_T;
    for (ptrdiff_t i = 0; i < AMX_T; ++i) {
      if (ip + i < mc) {
        const float* src = static_cast<const float*>(A.p) + (i0 + ip + i) * A.rs + k0;
        ptrdiff_t k = 0;
        for (; k + 16 <= kc; k += 16)
          _mm256_store_si256(reinterpret_cast<__m256i*>(row + k), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + k)));
        for (; k < kc; ++k) row[k] = f32_to_bf16(src[k]);
        for (; k < steps * AMX_T; ++k) row[k] = 0;
      } else {
        std::memset(row, 0, sizeof(uint16_t) * steps * AMX_T);
      }
      for (ptrdiff_t s = 0; s < steps; ++s) std::memcpy(d + (s * AMX_T + i) * AMX_T, row + s * AMX_T, 64);
    }
  }
}

void pack_b_amx(const Operand& B, ptrdiff_t k0, ptrdiff_t kc, ptrdiff_t j0, ptrdiff_t nc, uint32_t* dst) {
  ptrdiff_t steps = (kc + AMX_T - 1) / AMX_T, pairs = steps * AMX_T / 2;
  const uint16_t* w = static_cast<const uint16_t*>(B.p);
  for (ptrdiff_t jp = 0; jp < nc; jp += AMX_T) {
    uint32_t* d = dst + jp * pairs;  // panel of 32 columns × pairs
    for (ptrdiff_t j = 0; j < AMX_T; ++j) {
      const uint16_t* col = jp + j < nc ? w + (j0 + jp + j) * B.cs + k0 : nullptr;  // B.rs == 1
      for (ptrdiff_t p = 0; p < pairs; ++p) {
        uint32_t v = 0;
        if (col) {
          if (2 * p + 1 < kc) std::memcpy(&v, col + 2 * p, 4);
          else if (2 * p < kc) v = col[2 * p];
        }
        d[p * AMX_T + j] = v;
      }
    }
  }
}

// Applies C (+)= tile, bias and activation for an mr × nr block held in a 32×32 fp32 buffer.
void store_block(const float* tile, const TileOut& o) {
  for (int i = 0; i < o.mr; ++i) {
    float* c = o.c + i * o.ldc;
    for (int j = 0; j < o.nr; j += VW) {
      ptrdiff_t n = mn<ptrdiff_t>(VW, o.nr - j);
      vf r = vload(tile + i * AMX_T + j);
      if (o.accumulate) r += n == VW ? vload(c + j) : vload_n(c + j, n);
      if (o.last) {
        if (o.bias_col) r += n == VW ? vload(o.bias_col + j) : vload_n(o.bias_col + j, n);
        if (o.bias_row) r += o.bias_row[i];
        r = vact(r, o.act);
      }
      if (n == VW) vstore(c + j, r);
      else vstore_n(c + j, r, n);
    }
  }
}

void micro_amx(ptrdiff_t steps, const uint16_t* pa, const uint32_t* pb, const TileOut& o) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (ptrdiff_t s = 0; s < steps; ++s) {
    _tile_loadd(4, pa + s * AMX_T * AMX_T, 64);
    _tile_loadd(5, pa + s * AMX_T * AMX_T + 16 * AMX_T, 64);
    _tile_loadd(6, pb + s * 16 * AMX_T, 128);
    _tile_loadd(7, pb + s * 16 * AMX_T + 16, 128);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  alignas(64) float tile[AMX_T * AMX_T];
  _tile_stored(0, tile, 128);
  _tile_stored(1, tile + 16, 128);
  _tile_stored(2, tile + 16 * AMX_T, 128);
  _tile_stored(3, tile + 16 * AMX_T + 16, 128);
  store_block(tile, o);
}

void gemm_range_amx(const Gemm& g, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0, ptrdiff_t n1, uint16_t* pa, uint32_t* pb) {
  amx_configure();  // tile configuration is per thread
  // a prepacked weight is already in pack_b_amx's panel layout (pairs × 32 columns, K padded to 32)
  const uint32_t* packed = static_cast<const uint32_t*>(g.b_packed);
  for (ptrdiff_t jc = n0; jc < n1; jc += AMX_NC) {
    ptrdiff_t nc = mn(AMX_NC, n1 - jc);
    for (ptrdiff_t pc = 0; pc < g.K; pc += AMX_KC) {
      ptrdiff_t kc = mn(AMX_KC, g.K - pc), steps = (kc + AMX_T - 1) / AMX_T;
      if (!packed) pack_b_amx(g.B, pc, kc, jc, nc, pb);
      for (ptrdiff_t ic = m0; ic < m1; ic += AMX_MC) {
        ptrdiff_t mc = mn(AMX_MC, m1 - ic);
        pack_a_amx(g.A, ic, mc, pc, kc, pa);
        for (ptrdiff_t jr = 0; jr < nc; jr += AMX_T)
          for (ptrdiff_t ir = 0; ir < mc; ir += AMX_T) {
            ptrdiff_t row = ic + ir, col = jc + jr;
            TileOut o{g.C + row * g.ldc + col, g.ldc, (int)mn(AMX_T, mc - ir), (int)mn(AMX_T, nc - jr), pc > 0,
                      pc + kc >= g.K, g.bias_col ? g.bias_col + col : nullptr, g.bias_row ? g.bias_row + row : nullptr,
                      g.act};
            const uint32_t* b = packed ? packed + SANA_PACKED_BF16_INDEX(col, pc, g.K) / 2 : pb + jr * steps * 16;
            micro_amx(steps, pa + ir * steps * AMX_T, b, o);
          }
      }
    }
  }
  _tile_release();
}
#endif

struct GemmRange {
  ptrdiff_t m0, m1, n0, n1;
};

void gemm_range(const Gemm& g, const GemmRange& r, float* pa, float* pb) {
  for (ptrdiff_t jc = r.n0; jc < r.n1; jc += NC) {
    ptrdiff_t nc = mn(NC, r.n1 - jc);
    // equal K blocks (no short last block: every pass over C costs a load and a store of it)
    ptrdiff_t kmax = k_block_max(g), blocks = (g.K + kmax - 1) / kmax;
    ptrdiff_t kblock = round_up((g.K + blocks - 1) / blocks, 8);
    for (ptrdiff_t pc = 0; pc < g.K; pc += kblock) {
      ptrdiff_t kc = mn(kblock, g.K - pc);
      [[maybe_unused]] bool bf16 = false;
#if defined(SANA_BF16DOT)
      bf16 = g.fast_bf16;
#endif
      if (b_in_place(g))
        ;  // prepacked weights are read in place
#if defined(SANA_BF16DOT)
      else if (bf16)
        pack_b_bf16(g.B, pc, kc, jc, nc, reinterpret_cast<uint32_t*>(pb));
#endif
      else if (g.b_packed)
        pack_b_from_packed_bf16(g, pc, kc, jc, nc, pb);
      else if (g.pack_b_custom)
        g.pack_b_custom(g.pack_b_arg, pc, kc, jc, nc, pb);
      else
        pack_b(g.B, pc, kc, jc, nc, pb);
      for (ptrdiff_t ic = r.m0; ic < r.m1; ic += MC) {
        ptrdiff_t mc = mn(MC, r.m1 - ic);
#if defined(SANA_BF16DOT)
        if (bf16) pack_a_bf16(g.A, ic, mc, pc, kc, reinterpret_cast<uint32_t*>(pa));
        else
#endif
        if (!g.a_packed)
          pack_a(g.A, ic, mc, pc, kc, pa);
        for (ptrdiff_t jr = 0; jr < nc; jr += NR)
          for (ptrdiff_t ir = 0; ir < mc; ir += MR) {
            ptrdiff_t row = ic + ir, col = jc + jr;
            TileOut o{g.C + row * g.ldc + col, g.ldc, (int)mn<ptrdiff_t>(MR, mc - ir), (int)mn<ptrdiff_t>(NR, nc - jr),
                      pc > 0, pc + kc >= g.K, g.bias_col ? g.bias_col + col : nullptr,
                      g.bias_row ? g.bias_row + row : nullptr, g.act};
#if defined(SANA_BF16DOT)
            if (bf16) {
              ptrdiff_t kp = (kc + 1) / 2;
              const uint32_t* a = reinterpret_cast<uint32_t*>(pa) + ir * kp;
              if (g.b_packed)
                micro_bf16(kc, a, static_cast<const uint32_t*>(g.b_packed) + SANA_PACKED_BF16_INDEX(col, pc, g.K) / 2, 32, o);
              else
                micro_bf16(kc, a, reinterpret_cast<uint32_t*>(pb) + jr * kp, NR, o);
              continue;
            }
#endif
            const float* a = g.a_packed ? g.a_packed + (row / MR * g.K + pc) * MR : pa + ir * kc;
            if (b_in_place(g))
              micro_f32(kc, a, static_cast<const float*>(g.b_packed) + SANA_PACKED_F32_INDEX(col, pc, g.K), 32, o);
            else
              micro_f32(kc, a, pb + jr * kc, NR, o);
          }
      }
    }
  }
}

inline bool uses_amx([[maybe_unused]] const Gemm& g) {
#if defined(SANA_AMX)
  return g.fast_bf16;
#else
  return false;
#endif
}

// Bytes of the A and B packing buffers of one range of the GEMM that spans n_part columns.
struct PackBytes {
  size_t a, b;
  size_t total() const { return (size_t)round_up((ptrdiff_t)(a + b), 64); }
};
PackBytes pack_bytes(const Gemm& g, ptrdiff_t n_part) {
#if defined(SANA_AMX)
  if (uses_amx(g)) return {(size_t)(AMX_MC * AMX_KC) * 2, g.b_packed ? 0 : (size_t)(AMX_KC * mn<ptrdiff_t>(AMX_NC, round_up(n_part, 32) + 32)) * 2};
#endif
  return {g.a_packed ? 0 : (size_t)(mn<ptrdiff_t>(MC, round_up(g.M, MR)) * k_block_max(g)) * sizeof(float),
          b_in_place(g) ? 0 : (size_t)(KC * mn<ptrdiff_t>(NC, round_up(n_part, NR) + NR)) * sizeof(float)};
}

// One range on the calling thread, on AMX tiles or the vector microkernels.
void run_range(const Gemm& g, const GemmRange& r, char* buf, const PackBytes& bytes) {
#if defined(SANA_AMX)
  if (uses_amx(g)) return gemm_range_amx(g, r.m0, r.m1, r.n0, r.n1, reinterpret_cast<uint16_t*>(buf), reinterpret_cast<uint32_t*>(buf + bytes.a));
#endif
  gemm_range(g, r, reinterpret_cast<float*>(buf), reinterpret_cast<float*>(buf + bytes.a));
}

// One whole GEMM on the calling thread, for ops that run many small GEMMs as parallel tasks of their own
// (attention heads); buf holds gemm_serial_bytes(g).
size_t gemm_serial_bytes(const Gemm& g) { return pack_bytes(g, g.N).total(); }
void gemm_serial(const Gemm& g, char* buf) { run_range(g, GemmRange{0, g.M, 0, g.N}, buf, pack_bytes(g, g.N)); }

// Runs one GEMM on the context's threads: ranges of rows or columns, one per thread, or claimed tasks.
int gemm(sana_ctx* ctx, const Gemm& g) {
  int T = ctx_threads(ctx);
  bool amx = uses_amx(g);
  ptrdiff_t gm = amx ? 32 : MR, gn = amx ? 32 : NR, nc = amx ? 1024 : NC;
  auto blocks = [](ptrdiff_t n, ptrdiff_t b) { return (n + b - 1) / b; };
  // part i of [0, n) cut into `parts` ranges of whole grains: its start, and its end as cut(i + 1)
  auto cut = [](ptrdiff_t n, ptrdiff_t grain, ptrdiff_t parts, ptrdiff_t i) { return mn(n, (n + grain - 1) / grain * i / parts * grain); };
  if (b_in_place(g) && !amx && T > 1) {
    // Prepacked B costs nothing to share: tasks are row blocks of at most MC (one A block each) times column
    // ranges, at least two per thread and a multiple of the thread count, so shares are equal on free cores
    // and a thread whose core another process takes does fewer. Each task packs its rows of A, so there are
    // as few column ranges as that allows. Results do not change: every element is computed in one task,
    // over the same K blocks.
    ptrdiff_t mtasks = blocks(g.M, MC), panels = blocks(g.N, 32), ntasks = 1;
    while ((mtasks * ntasks < 2 * T || mtasks * ntasks % T) && ntasks < panels) ++ntasks;
    PackBytes bytes = pack_bytes(g, g.N);
    size_t per = bytes.total();
    char* buf = static_cast<char*>(ctx_arena(ctx, ARENA_GEMM, per * (size_t)T));
    if (!buf && per) return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "gemm: out of memory for %d packing buffers", T);
    parallel_claim(ctx, mtasks * ntasks, [&](ptrdiff_t task, int slot) {
      ptrdiff_t i = task / ntasks, j = task % ntasks;
      GemmRange r{cut(g.M, MR, mtasks, i), cut(g.M, MR, mtasks, i + 1), cut(g.N, 32, ntasks, j), cut(g.N, 32, ntasks, j + 1)};
      if (r.m0 < r.m1 && r.n0 < r.n1) run_range(g, r, buf + per * (size_t)slot, bytes);
    });
    return SANA_OK;
  }
  // Each thread packs its own panels: split the dimension that makes the least packing per thread
  // (M-split repacks all of B per thread, N-split repacks all of A once per NC block of its columns).
  double pack_m = (double)g.M / T * g.K * blocks(g.N, nc) + (double)g.N * g.K;
  double pack_n = (double)g.M * g.K * blocks((g.N + T - 1) / T, nc) + (double)g.N / T * g.K;
  bool split_m = (pack_m <= pack_n && g.M >= (ptrdiff_t)T * gm) || g.N < (ptrdiff_t)T * gn;
  ptrdiff_t parts = split_m ? mn<ptrdiff_t>(T, blocks(g.M, gm)) : mn<ptrdiff_t>(T, blocks(g.N, gn));
  // packing buffers sized by the problem (a small GEMM must not touch megabytes) and kept in the context's
  // arena, so repeated calls reuse warm pages instead of mapping fresh ones
  PackBytes bytes = pack_bytes(g, split_m ? g.N : (g.N + parts - 1) / parts);
  size_t per = bytes.total();
  char* buf = static_cast<char*>(ctx_arena(ctx, ARENA_GEMM, per * (size_t)parts));
  if (!buf && per) return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "gemm: out of memory for %td packing buffers", parts);
  parallel_for(ctx, parts, [&](ptrdiff_t b, ptrdiff_t e) {
    for (ptrdiff_t t = b; t < e; ++t) {
      GemmRange r{0, g.M, 0, g.N};
      if (split_m) r.m0 = cut(g.M, gm, parts, t), r.m1 = cut(g.M, gm, parts, t + 1);
      else r.n0 = cut(g.N, gn, parts, t), r.n1 = cut(g.N, gn, parts, t + 1);
      if (r.m0 < r.m1 && r.n0 < r.n1) run_range(g, r, buf + per * (size_t)t, bytes);
    }
  });
  return SANA_OK;
}
