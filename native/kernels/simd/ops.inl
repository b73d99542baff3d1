// Fast implementation of every op, written once with GCC/Clang vector extensions and compiled once per
// variant with that variant's ISA flags (native/kernels/cpu/variant-*.cpp, wasm/variant-wasm-simd128.cpp):
//   SANA_VW      vector width in floats: 4 (SSE2 baseline, WASM SIMD128), 8 (AVX2), 16 (AVX-512)
//   SANA_NS      namespace of the variant
//   SANA_F16C    F16C conversions available (x86 AVX2/AVX-512 variants)
//   SANA_BF16DOT vdpbf16ps available: the SANA_GEMM_FAST_BF16 path of linear/glumbconv
// GEMM: packed panels (A: MR rows × KC, B: KC × NR cols, converted to fp32 or to bf16 pairs while packing,
// so weights are never converted as a whole), an MR×NR register-tile microkernel, KC/MC/NC cache blocking
// and a 1-D split of M or N across the context's threads. Benchmark: npm run bench:kernels.
#include <cfloat>
#include <cmath>
#include <cstring>

#include "../../core/internal.h"
#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
#else
#include <immintrin.h>
#endif

namespace sana {
namespace SANA_NS {
namespace {

constexpr int VW = SANA_VW;
typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));
typedef uint32_t vu __attribute__((vector_size(VW * 4)));
typedef uint16_t vh __attribute__((vector_size(VW * 2)));

template <class T>
inline T mn(T a, T b) { return a < b ? a : b; }
template <class T>
inline T mx(T a, T b) { return a > b ? a : b; }
inline ptrdiff_t round_up(ptrdiff_t a, ptrdiff_t m) { return (a + m - 1) / m * m; }

inline vf vload(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void vstore(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
// Broadcast through the ISA's own splat: GCC lowers generic splats poorly (`vf{} + s` costs an add,
// lane-wise fills become insert sequences), and this sits in the GEMM inner loop.
#if SANA_VW == 16
inline vf vset(float s) { return (vf)_mm512_set1_ps(s); }
#elif SANA_VW == 8
inline vf vset(float s) { return (vf)_mm256_set1_ps(s); }
#elif defined(__wasm_simd128__)
inline vf vset(float s) { return (vf)wasm_f32x4_splat(s); }
#else
inline vf vset(float s) { return (vf)_mm_set1_ps(s); }
#endif
inline vf vselect(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
inline vf vmax(vf a, vf b) { return vselect(a > b, a, b); }
inline vf vmin(vf a, vf b) { return vselect(a < b, a, b); }
inline float hsum(vf v) {
  float s = 0;
  for (int i = 0; i < VW; ++i) s += v[i];
  return s;
}
inline float hmax(vf v) {
  float s = v[0];
  for (int i = 1; i < VW; ++i) s = v[i] > s ? v[i] : s;
  return s;
}
// Partial load/store of the first n (< VW) lanes; the other lanes read as 0.
inline vf vload_n(const float* p, ptrdiff_t n) { vf v = {}; std::memcpy(&v, p, sizeof(float) * n); return v; }
inline void vstore_n(float* p, vf v, ptrdiff_t n) { std::memcpy(p, &v, sizeof(float) * n); }

// exp with Cody-Waite range reduction and a degree-6 polynomial (max rel. error ~2 ulp on [-87, 88]).
// Inputs are clamped, so exp(-inf) reads as ~1e-38: callers that need exact zeros mask explicitly.
inline vf vexp(vf x) {
  x = vmin(vmax(x, vset(-87.33654f)), vset(88.0f));
  vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = vset(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  return p * (vf)e;
}
inline vf vsilu(vf x) { return x / (vexp(-x) + 1.0f); }
inline vf vtanh(vf x) {
  // tanh(x) = sign(x)·(1 − 2/(e^{2|x|} + 1)), accurate near 0 through the expm1-free form for |x| < 0.02
  vf ax = vmax(x, -x);
  vf big = 1.0f - 2.0f / (vexp(ax * 2.0f) + 1.0f);
  vf x2 = ax * ax;
  vf small = ax * (1.0f - x2 * (1.0f / 3.0f) + x2 * x2 * (2.0f / 15.0f));
  vf t = vselect(ax < 0.02f, small, big);
  return vselect(x < 0.0f, -t, t);
}
inline vf vgelu_tanh(vf x) { return 0.5f * x * (1.0f + vtanh(0.7978845608028654f * (x + 0.044715f * x * x * x))); }
inline vf vact(vf x, int act) {
  switch (act) {
    case SANA_ACT_RELU: return vmax(x, vf{});
    case SANA_ACT_SILU: return vsilu(x);
    case SANA_ACT_GELU_TANH: return vgelu_tanh(x);
    default: return x;
  }
}

// ---- dtype runs -------------------------------------------------------------------------------------
// Converts n contiguous weights starting at element i into fp32 (returns a pointer into w for fp32).
const float* load_run(const void* w, int dt, ptrdiff_t i, ptrdiff_t n, float* tmp) {
  if (dt == SANA_F32) return static_cast<const float*>(w) + i;
  const uint16_t* h = static_cast<const uint16_t*>(w) + i;
  ptrdiff_t j = 0;
  if (dt == SANA_BF16) {
    for (; j + VW <= n; j += VW) {
      vh v;
      std::memcpy(&v, h + j, sizeof v);
      vstore(tmp + j, (vf)(__builtin_convertvector(v, vu) << 16));
    }
    for (; j < n; ++j) tmp[j] = bf16_to_f32(h[j]);
  } else {
#if defined(SANA_F16C)
    for (; j + 8 <= n; j += 8)
      _mm256_storeu_ps(tmp + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + j))));
#endif
    for (; j < n; ++j) tmp[j] = f16_to_f32(h[j]);
  }
  return tmp;
}

// ---- GEMM ---------------------------------------------------------------------------------------------
#if SANA_VW == 16
constexpr int MR = 14;
#else
constexpr int MR = 6;
#endif
constexpr int NV = 2;
constexpr int NR = NV * VW;
constexpr ptrdiff_t KC = 256;
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
  const float* b_packed;  // B from sana_pack_weight (32-column k-major panels): read in place, never packed
};

float elem(const Operand& o, ptrdiff_t r, ptrdiff_t c) {
  ptrdiff_t i = r * o.rs + c * o.cs;
  if (o.dt == SANA_F32) return static_cast<const float*>(o.p)[i];
  uint16_t h = static_cast<const uint16_t*>(o.p)[i];
  return o.dt == SANA_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// A panels: for each group of MR rows, kc × MR floats (row index fastest); rows past mc are zero.
void pack_a(const Operand& A, ptrdiff_t i0, ptrdiff_t mc, ptrdiff_t k0, ptrdiff_t kc, float* dst) {
  alignas(64) float tmp[KC];
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
  vf acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = vf{};
  for (ptrdiff_t k = 0; k < kc; ++k) {
    vf b[NV];
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
  alignas(64) uint16_t row[KC + 32];
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

void micro_bf16(ptrdiff_t kc, const uint32_t* __restrict pa, const uint32_t* __restrict pb, const TileOut& o) {
  __m512 acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  ptrdiff_t kp = (kc + 1) / 2;
  for (ptrdiff_t p = 0; p < kp; ++p) {
    __m512bh b0 = (__m512bh)_mm512_loadu_si512(pb), b1 = (__m512bh)_mm512_loadu_si512(pb + 16);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      __m512bh a = (__m512bh)_mm512_set1_epi32((int)pa[i]);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
    }
    pa += MR;
    pb += NR;
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
  for (ptrdiff_t jc = n0; jc < n1; jc += AMX_NC) {
    ptrdiff_t nc = mn(AMX_NC, n1 - jc);
    for (ptrdiff_t pc = 0; pc < g.K; pc += AMX_KC) {
      ptrdiff_t kc = mn(AMX_KC, g.K - pc), steps = (kc + AMX_T - 1) / AMX_T;
      pack_b_amx(g.B, pc, kc, jc, nc, pb);
      for (ptrdiff_t ic = m0; ic < m1; ic += AMX_MC) {
        ptrdiff_t mc = mn(AMX_MC, m1 - ic);
        pack_a_amx(g.A, ic, mc, pc, kc, pa);
        for (ptrdiff_t jr = 0; jr < nc; jr += AMX_T)
          for (ptrdiff_t ir = 0; ir < mc; ir += AMX_T) {
            ptrdiff_t row = ic + ir, col = jc + jr;
            TileOut o{g.C + row * g.ldc + col, g.ldc, (int)mn(AMX_T, mc - ir), (int)mn(AMX_T, nc - jr), pc > 0,
                      pc + kc >= g.K, g.bias_col ? g.bias_col + col : nullptr, g.bias_row ? g.bias_row + row : nullptr,
                      g.act};
            micro_amx(steps, pa + ir * steps * AMX_T, pb + jr * steps * 16, o);
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
    ptrdiff_t kblock = round_up((g.K + (g.K + KC - 1) / KC - 1) / ((g.K + KC - 1) / KC), 8);
    for (ptrdiff_t pc = 0; pc < g.K; pc += kblock) {
      ptrdiff_t kc = mn(kblock, g.K - pc);
      [[maybe_unused]] bool bf16 = false;
#if defined(SANA_BF16DOT)
      bf16 = g.fast_bf16;
      if (bf16)
        pack_b_bf16(g.B, pc, kc, jc, nc, reinterpret_cast<uint32_t*>(pb));
      else
#endif
      if (g.b_packed)
        ;  // prepacked weights are read in place
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
              micro_bf16(kc, reinterpret_cast<uint32_t*>(pa) + ir * kp, reinterpret_cast<uint32_t*>(pb) + jr * kp, o);
              continue;
            }
#endif
            if (g.b_packed)
              micro_f32(kc, pa + ir * kc, g.b_packed + (col / 32 * g.K + pc) * 32 + col % 32, 32, o);
            else
              micro_f32(kc, pa + ir * kc, pb + jr * kc, NR, o);
          }
      }
    }
  }
}

// Runs one GEMM on the context's threads, one contiguous range of rows or columns per thread.
int gemm(sana_ctx* ctx, const Gemm& g) {
  int T = ctx_threads(ctx);
  bool amx = false;
#if defined(SANA_AMX)
  amx = g.fast_bf16;
#endif
  ptrdiff_t gm = amx ? 32 : MR, gn = amx ? 32 : NR, nc = amx ? 1024 : NC;
  // Each thread packs its own panels: split the dimension that makes the least packing per thread
  // (M-split repacks all of B per thread, N-split repacks all of A once per NC block of its columns).
  auto blocks = [](ptrdiff_t n, ptrdiff_t b) { return (n + b - 1) / b; };
  double pack_m = (double)g.M / T * g.K * blocks(g.N, nc) + (double)g.N * g.K;
  double pack_n = (double)g.M * g.K * blocks((g.N + T - 1) / T, nc) + (double)g.N / T * g.K;
  bool split_m = (pack_m <= pack_n && g.M >= (ptrdiff_t)T * gm) || g.N < (ptrdiff_t)T * gn;
  ptrdiff_t parts = split_m ? mn<ptrdiff_t>(T, blocks(g.M, gm)) : mn<ptrdiff_t>(T, blocks(g.N, gn));
  // packing buffers sized by the problem (a small GEMM must not touch megabytes) and kept in the context's
  // arena, so repeated calls reuse warm pages instead of mapping fresh ones
  ptrdiff_t n_part = split_m ? g.N : (g.N + parts - 1) / parts;
  size_t a_bytes = (size_t)(mn<ptrdiff_t>(MC, round_up(g.M, MR)) * KC) * sizeof(float);
  size_t b_bytes = g.b_packed ? 0 : (size_t)(KC * mn<ptrdiff_t>(NC, round_up(n_part, NR) + NR)) * sizeof(float);
#if defined(SANA_AMX)
  if (amx) a_bytes = (size_t)(AMX_MC * AMX_KC) * 2, b_bytes = (size_t)(AMX_KC * mn<ptrdiff_t>(AMX_NC, round_up(n_part, 32) + 32)) * 2;
#endif
  size_t per = round_up((ptrdiff_t)(a_bytes + b_bytes), 64);
  char* buf = static_cast<char*>(gemm_arena(ctx, per * (size_t)parts));
  if (!buf) return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "gemm: out of memory for %td packing buffers", parts);
  parallel_for(ctx, parts, [&](ptrdiff_t b, ptrdiff_t e, int) {
    for (ptrdiff_t t = b; t < e; ++t) {
      GemmRange r{0, g.M, 0, g.N};
      if (split_m) {
        ptrdiff_t blocks = (g.M + gm - 1) / gm;
        r.m0 = mn(g.M, blocks * t / parts * gm);
        r.m1 = mn(g.M, blocks * (t + 1) / parts * gm);
      } else {
        ptrdiff_t blocks = (g.N + gn - 1) / gn;
        r.n0 = mn(g.N, blocks * t / parts * gn);
        r.n1 = mn(g.N, blocks * (t + 1) / parts * gn);
      }
      char* mine = buf + per * (size_t)t;
      if (r.m0 >= r.m1 || r.n0 >= r.n1) continue;
#if defined(SANA_AMX)
      if (amx) {
        gemm_range_amx(g, r.m0, r.m1, r.n0, r.n1, reinterpret_cast<uint16_t*>(mine), reinterpret_cast<uint32_t*>(mine + a_bytes));
        continue;
      }
#endif
      gemm_range(g, r, reinterpret_cast<float*>(mine), reinterpret_cast<float*>(mine + a_bytes));
    }
  });
  return SANA_OK;
}

// ---- ops ----------------------------------------------------------------------------------------------

int linear(sana_ctx* ctx, const float* x, ptrdiff_t M, ptrdiff_t K, const void* w, int dt, ptrdiff_t N,
           const float* bias, int act, int flags, float* y) {
  Gemm g{};
  g.M = M, g.N = N, g.K = K;
  g.A = Operand{x, SANA_F32, K, 1};
  g.B = Operand{w, dt, 1, K};  // B(k, n) = w[n, k]
  if (flags & SANA_GEMM_PACKED_WEIGHT) g.b_packed = static_cast<const float*>(w);
  g.C = y, g.ldc = N, g.bias_col = bias, g.act = act;
#if defined(SANA_BF16DOT)
  g.fast_bf16 = (flags & SANA_GEMM_FAST_BF16) && dt == SANA_BF16;
#endif
  return gemm(ctx, g);
}

struct Im2col {
  const float* x;  // first input channel of the group, one batch item
  ptrdiff_t H, W, Wo, kh, kw, stride, pad;
};

void pack_im2col(const void* arg, ptrdiff_t k0, ptrdiff_t kc, ptrdiff_t j0, ptrdiff_t nc, float* dst) {
  const Im2col& s = *static_cast<const Im2col*>(arg);
  ptrdiff_t khw = s.kh * s.kw;
  for (ptrdiff_t jp = 0; jp < nc; jp += NR) {
    float* d = dst + jp * kc;
    ptrdiff_t nr = mn<ptrdiff_t>(NR, nc - jp), p0 = j0 + jp, oy0 = p0 / s.Wo, ox0 = p0 % s.Wo;
    bool one_row = s.stride == 1 && ox0 + nr <= s.Wo;
    for (ptrdiff_t k = 0; k < kc; ++k) {
      ptrdiff_t kk = k0 + k, ci = kk / khw, ky = kk % khw / s.kw, kx = kk % s.kw;
      float* dk = d + k * NR;
      if (one_row) {
        ptrdiff_t iy = oy0 - s.pad + ky, ix0 = ox0 - s.pad + kx;
        if (iy < 0 || iy >= s.H) {
          for (int j = 0; j < NR; ++j) dk[j] = 0.0f;
          continue;
        }
        const float* row = s.x + (ci * s.H + iy) * s.W;
        if (ix0 >= 0 && ix0 + nr <= s.W) {
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
            if (iy >= 0 && iy < s.H && ix >= 0 && ix < s.W) v = s.x[(ci * s.H + iy) * s.W + ix];
          }
          dk[j] = v;
        }
      }
    }
  }
}

// Depth-wise conv (one input and one output channel per group): direct, vectorised along output columns.
int conv2d_depthwise(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                     const void* w, int dt, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t stride, ptrdiff_t pad,
                     const float* bias, int act, float* y) {
  ptrdiff_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
  parallel_for(ctx, B * C, [&](ptrdiff_t b0, ptrdiff_t e0) {
    float wt[15 * 15];
    for (ptrdiff_t bc = b0; bc < e0; ++bc) {
      ptrdiff_t c = bc % C;
      const float* src = load_run(w, dt, c * kh * kw, kh * kw, wt);
      if (src != wt) std::memcpy(wt, src, sizeof(float) * kh * kw);
      const float* xp = x + bc * H * W;
      float* yp = y + bc * Ho * Wo;
      float b = bias ? bias[c] : 0.0f;
      for (ptrdiff_t oy = 0; oy < Ho; ++oy) {
        float* yr = yp + oy * Wo;
        // columns whose taps are all inside the row (stride 1): vector body
        ptrdiff_t lo = stride == 1 ? mn(Wo, pad) : Wo, hi = stride == 1 ? mx(lo, W - kw + pad + 1) : Wo;
        if (hi > Wo) hi = Wo;
        ptrdiff_t ox = 0;
        auto scalar_col = [&](ptrdiff_t o) {
          float s = b;
          for (ptrdiff_t ky = 0; ky < kh; ++ky) {
            ptrdiff_t iy = oy * stride - pad + ky;
            if (iy < 0 || iy >= H) continue;
            for (ptrdiff_t kx = 0; kx < kw; ++kx) {
              ptrdiff_t ix = o * stride - pad + kx;
              if (ix >= 0 && ix < W) s += xp[iy * W + ix] * wt[ky * kw + kx];
            }
          }
          return s;
        };
        for (; ox < lo; ++ox) yr[ox] = scalar_col(ox);
        for (; ox + VW <= hi; ox += VW) {
          vf s = vset(b);
          for (ptrdiff_t ky = 0; ky < kh; ++ky) {
            ptrdiff_t iy = oy - pad + ky;
            if (iy < 0 || iy >= H) continue;
            const float* xr = xp + iy * W + ox - pad;
            for (ptrdiff_t kx = 0; kx < kw; ++kx) s += vload(xr + kx) * wt[ky * kw + kx];
          }
          vstore(yr + ox, s);
        }
        for (; ox < Wo; ++ox) yr[ox] = scalar_col(ox);
        if (act != SANA_ACT_NONE) {
          ptrdiff_t i = 0;
          for (; i + VW <= Wo; i += VW) vstore(yr + i, vact(vload(yr + i), act));
          if (i < Wo) vstore_n(yr + i, vact(vload_n(yr + i, Wo - i), act), Wo - i);
        }
      }
    }
  });
  return SANA_OK;
}

int conv2d(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t Cin, ptrdiff_t H, ptrdiff_t W, const void* w, int dt,
           ptrdiff_t Cout, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t stride, ptrdiff_t pad, ptrdiff_t groups,
           const float* bias, int act, float* y) {
  ptrdiff_t cig = Cin / groups, cog = Cout / groups;
  if (cig == 1 && cog == 1) return conv2d_depthwise(ctx, x, B, Cin, H, W, w, dt, kh, kw, stride, pad, bias, act, y);
  ptrdiff_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1, P = Ho * Wo;
  ptrdiff_t K = cig * kh * kw;
  bool pointwise = kh == 1 && kw == 1 && stride == 1 && pad == 0;
  for (ptrdiff_t b = 0; b < B; ++b)
    for (ptrdiff_t gi = 0; gi < groups; ++gi) {
      const float* xg = x + (b * Cin + gi * cig) * H * W;
      Im2col im{xg, H, W, Wo, kh, kw, stride, pad};
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

// Linear attention: per (batch, head) the state kvt[j][i] = Σ_n relu(k_nj)·v_ni and ksum[j] = Σ_n relu(k_nj),
// then out_n = (Σ_j relu(q_nj)·kvt[j]) / (ksum·relu(q_n) + eps). Tokens are gathered in blocks so any
// strides (fused qkv slices, NCHW channel groups) read efficiently.
constexpr ptrdiff_t TB = 32;

void gather_block(const sana_view4* t, ptrdiff_t b, ptrdiff_t n0, ptrdiff_t nb, ptrdiff_t h, ptrdiff_t d,
                  ptrdiff_t ld, bool relu, float* dst) {
  const float* base = t->data + b * t->sb + n0 * t->sn + h * t->sh;
  if (t->sd == 1) {
    for (ptrdiff_t n = 0; n < nb; ++n) std::memcpy(dst + n * ld, base + n * t->sn, sizeof(float) * d);
  } else {
    for (ptrdiff_t j = 0; j < d; ++j)
      for (ptrdiff_t n = 0; n < nb; ++n) dst[n * ld + j] = base[n * t->sn + j * t->sd];
  }
  if (relu)
    for (ptrdiff_t n = 0; n < nb; ++n)
      for (ptrdiff_t j = 0; j < d; ++j) dst[n * ld + j] = dst[n * ld + j] > 0 ? dst[n * ld + j] : 0.0f;
  for (ptrdiff_t n = 0; n < nb; ++n)
    for (ptrdiff_t j = d; j < ld; ++j) dst[n * ld + j] = 0.0f;
}

int linear_attention(sana_ctx* ctx, const sana_view4* q, const sana_view4* k, const sana_view4* v,
                     const sana_view4* out, ptrdiff_t B, ptrdiff_t N, ptrdiff_t heads, ptrdiff_t d, float eps) {
  ptrdiff_t dp = round_up(d, VW);
  size_t per = sizeof(float) * (size_t)(d * dp + dp + 3 * TB * dp);
  int T = ctx_threads(ctx);
  char* buf = static_cast<char*>(scratch_alloc(per * (size_t)T));
  if (!buf) return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "linear_attention: out of memory");
  parallel_for(ctx, B * heads, [&](ptrdiff_t t0, ptrdiff_t t1, int slot) {
    float* kvt = reinterpret_cast<float*>(buf + per * (size_t)slot);
    float* ksum = kvt + d * dp;
    float* kb = ksum + dp;
    float* vb = kb + TB * dp;
    float* qb = vb + TB * dp;
    for (ptrdiff_t task = t0; task < t1; ++task) {
      ptrdiff_t b = task / heads, h = task % heads;
      std::memset(kvt, 0, sizeof(float) * (d * dp + dp));
      for (ptrdiff_t n0 = 0; n0 < N; n0 += TB) {
        ptrdiff_t nb = mn(TB, N - n0);
        gather_block(k, b, n0, nb, h, d, dp, true, kb);
        gather_block(v, b, n0, nb, h, d, dp, false, vb);
        for (ptrdiff_t n = 0; n < nb; ++n) {
          const float* kr = kb + n * dp;
          const float* vr = vb + n * dp;
          for (ptrdiff_t i = 0; i < dp; i += VW) vstore(ksum + i, vload(ksum + i) + vload(kr + i));
          for (ptrdiff_t j = 0; j < d; ++j) {
            float kj = kr[j];
            float* row = kvt + j * dp;
            for (ptrdiff_t i = 0; i < dp; i += VW) vstore(row + i, vload(row + i) + vload(vr + i) * kj);
          }
        }
      }
      for (ptrdiff_t n0 = 0; n0 < N; n0 += TB) {
        ptrdiff_t nb = mn(TB, N - n0);
        gather_block(q, b, n0, nb, h, d, dp, true, qb);
        for (ptrdiff_t n = 0; n < nb; ++n) {
          float* qr = qb + n * dp;
          vf den = vf{};
          for (ptrdiff_t i = 0; i < dp; i += VW) den += vload(ksum + i) * vload(qr + i);
          float inv_den = hsum(den) + eps;
          float* o = vb + n * dp;  // reuse the v block as output staging
          for (ptrdiff_t i = 0; i < dp; i += VW) {
            vf acc = vf{};
            for (ptrdiff_t j = 0; j < d; ++j) acc += vload(kvt + j * dp + i) * qr[j];
            vstore(o + i, acc / inv_den);
          }
        }
        float* base = out->data + b * out->sb + n0 * out->sn + h * out->sh;
        for (ptrdiff_t n = 0; n < nb; ++n)
          for (ptrdiff_t i = 0; i < d; ++i) base[n * out->sn + i * out->sd] = vb[n * dp + i];
      }
    }
  });
  scratch_free(buf);
  return SANA_OK;
}

// Softmax attention as two GEMMs per (batch, query head): S = Q·Kᵀ [Lq, Lk] on the GEMM driver (strided
// operands, no copies of q/k/v), a row-parallel softmax in place (scale, soft-cap, key bias, causal and
// window masks), then O = P·V straight into the output view.
int attention(sana_ctx* ctx, const sana_view4* q, const sana_view4* k, const sana_view4* v, const float* key_bias,
              const sana_attention_params* p, const sana_view4* out) {
  ptrdiff_t Lq = p->len_q, Lk = p->len_kv, group = p->heads_q / p->heads_kv;
  bool direct = out->sd == 1;  // otherwise O goes through a [Lq, Dv] staging buffer
  float* S = static_cast<float*>(scratch_alloc(sizeof(float) * (size_t)(Lq * Lk)));
  float* O = direct ? nullptr : static_cast<float*>(scratch_alloc(sizeof(float) * (size_t)(Lq * p->head_dim_v)));
  if (!S || (!direct && !O)) {
    scratch_free(S);
    scratch_free(O);
    return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "attention: out of memory for %td x %td scores", Lq, Lk);
  }
  int st = SANA_OK;
  for (ptrdiff_t b = 0; b < p->batch && st == SANA_OK; ++b)
    for (ptrdiff_t h = 0; h < p->heads_q && st == SANA_OK; ++h) {
      ptrdiff_t hk = h / group;
      Gemm g{};
      g.M = Lq, g.N = Lk, g.K = p->head_dim;
      g.A = Operand{q->data + b * q->sb + h * q->sh, SANA_F32, q->sn, q->sd};
      g.B = Operand{k->data + b * k->sb + hk * k->sh, SANA_F32, k->sd, k->sn};  // B(d, j) = k[j, d]
      g.C = S, g.ldc = Lk, g.act = SANA_ACT_NONE;
      st = gemm(ctx, g);
      if (st != SANA_OK) break;
      const float* bias = key_bias ? key_bias + b * Lk : nullptr;
      parallel_for(ctx, Lq, [&](ptrdiff_t i0, ptrdiff_t i1) {
        for (ptrdiff_t i = i0; i < i1; ++i) {
          float* row = S + i * Lk;
          ptrdiff_t lo = p->window > 0 ? mx<ptrdiff_t>(0, i - p->window + 1) : 0;
          ptrdiff_t hi = p->causal ? mn(Lk, i + 1) : Lk;
          for (ptrdiff_t m = 0; m < Lk; m += VW) {
            ptrdiff_t n = mn<ptrdiff_t>(VW, Lk - m);
            vf s = (n == VW ? vload(row + m) : vload_n(row + m, n)) * p->scale;
            if (p->softcap > 0) s = vtanh(s / p->softcap) * p->softcap;
            if (bias) s += n == VW ? vload(bias + m) : vload_n(bias + m, n);
            if (n == VW) vstore(row + m, s);
            else vstore_n(row + m, s, n);
          }
          float mval = -INFINITY;
          for (ptrdiff_t m = lo; m < hi; ++m) mval = row[m] > mval ? row[m] : mval;
          if (hi > lo && mval <= -FLT_MAX) {  // every visible key masked by a −FLT_MAX bias: uniform over all keys
            lo = 0, hi = Lk;
            for (ptrdiff_t m = 0; m < Lk; ++m) row[m] = 0.0f;
            mval = 0.0f;
          }
          float sum = 0.0f;
          for (ptrdiff_t m = 0; m < Lk; m += VW) {
            ptrdiff_t n = mn<ptrdiff_t>(VW, Lk - m);
            vf d = (n == VW ? vload(row + m) : vload_n(row + m, n)) - mval;
            vf e = vexp(d);
            vi idx;
            for (int l = 0; l < VW; ++l) idx[l] = (int32_t)(m + l);
            // exp underflows to exactly 0 below −87 (as in torch): the clamped ~1e-38 would feed denormals
            // into the P·V GEMM (a masked text key costs 100× then) and differ from the reference
            e = vselect((idx >= (int32_t)lo) & (idx < (int32_t)hi) & (d > -87.0f), e, vf{});
            sum += hsum(e);
            if (n == VW) vstore(row + m, e);
            else vstore_n(row + m, e, n);
          }
          float inv = sum > 0 ? 1.0f / sum : 0.0f;
          for (ptrdiff_t m = 0; m < Lk; m += VW) {
            ptrdiff_t n = mn<ptrdiff_t>(VW, Lk - m);
            vf e = (n == VW ? vload(row + m) : vload_n(row + m, n)) * inv;
            if (n == VW) vstore(row + m, e);
            else vstore_n(row + m, e, n);
          }
        }
      });
      Gemm o{};
      o.M = Lq, o.N = p->head_dim_v, o.K = Lk;
      o.A = Operand{S, SANA_F32, Lk, 1};
      o.B = Operand{v->data + b * v->sb + hk * v->sh, SANA_F32, v->sn, v->sd};  // B(j, e) = v[j, e]
      float* obase = out->data + b * out->sb + h * out->sh;
      o.C = direct ? obase : O, o.ldc = direct ? out->sn : p->head_dim_v, o.act = SANA_ACT_NONE;
      st = gemm(ctx, o);
      if (st == SANA_OK && !direct)
        for (ptrdiff_t i = 0; i < Lq; ++i)
          for (ptrdiff_t e = 0; e < p->head_dim_v; ++e) obase[i * out->sn + e * out->sd] = O[i * p->head_dim_v + e];
    }
  scratch_free(S);
  scratch_free(O);
  return st;
}

// Mix-FFN in row bands of the token grid: the expansion of rows [r0−1, r1] lives in a band buffer (the two
// rows shared with the previous band are carried over, never recomputed), the depth-wise conv + GLU of
// rows [r0, r1) goes to u, and u is projected straight into y.
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
        if (flags & SANA_GEMM_PACKED_WEIGHT) g.b_packed = static_cast<const float*>(w_inv);
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
      if (flags & SANA_GEMM_PACKED_WEIGHT) g.b_packed = static_cast<const float*>(w_point);
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
  constexpr ptrdiff_t CH = 4096;
  parallel_for(ctx, (n + CH - 1) / CH, [&](ptrdiff_t c0, ptrdiff_t c1) {
    ptrdiff_t i = c0 * CH, e = mn(n, c1 * CH);
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
  constexpr ptrdiff_t PB = 64;  // pixels per task: 64 floats × C channels stay in L1/L2
  ptrdiff_t blocks = (HW + PB - 1) / PB;
  parallel_for(ctx, B * blocks, [&](ptrdiff_t t0, ptrdiff_t t1) {
    for (ptrdiff_t t = t0; t < t1; ++t) {
      ptrdiff_t b = t / blocks, p0 = t % blocks * PB, np = mn(PB, HW - p0);
      const float* xb = x + b * C * HW + p0;
      float* yb = y + b * C * HW + p0;
      alignas(64) float inv[PB];
      for (ptrdiff_t p = 0; p < np; p += VW) {
        ptrdiff_t n = mn<ptrdiff_t>(VW, np - p);
        vf q = vf{};
        for (ptrdiff_t c = 0; c < C; ++c) {
          vf v = n == VW ? vload(xb + c * HW + p) : vload_n(xb + c * HW + p, n);
          q += v * v;
        }
        vf r = q * (1.0f / (float)C) + eps;
        for (int l = 0; l < VW; ++l) r[l] = 1.0f / std::sqrt(r[l]);
        vstore(inv + p, r);
      }
      for (ptrdiff_t c = 0; c < C; ++c) {
        float w = weight ? weight[c] : 1.0f, bb = bias ? bias[c] : 0.0f;
        for (ptrdiff_t p = 0; p < np; p += VW) {
          ptrdiff_t n = mn<ptrdiff_t>(VW, np - p);
          vf v = (n == VW ? vload(xb + c * HW + p) : vload_n(xb + c * HW + p, n)) * vload(inv + p);
          v = weight ? v * w : v;
          if (bias) v += bb;
          if (n == VW) vstore(yb + c * HW + p, v);
          else vstore_n(yb + c * HW + p, v, n);
        }
      }
    }
  });
  return SANA_OK;
}

int pixel_shuffle(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t r,
                  float* y) {
  ptrdiff_t Wr = W * r;
  parallel_for(ctx, B * C * H, [&](ptrdiff_t t0, ptrdiff_t t1) {
    for (ptrdiff_t t = t0; t < t1; ++t) {
      ptrdiff_t bc = t / H, h = t % H;  // bc = b·C + c; input channels bc·r² + i·r + j
      for (ptrdiff_t i = 0; i < r; ++i) {
        float* yr = y + (bc * H * r + h * r + i) * Wr;
        for (ptrdiff_t j = 0; j < r; ++j) {
          const float* xr = x + ((bc * r * r + i * r + j) * H + h) * W;
          for (ptrdiff_t w = 0; w < W; ++w) yr[w * r + j] = xr[w];
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

int upsample_nearest2x(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, float* y) {
  parallel_for(ctx, B * C * H, [&](ptrdiff_t t0, ptrdiff_t t1) {
    for (ptrdiff_t t = t0; t < t1; ++t) {
      const float* xr = x + t * W;
      float* y0 = y + (t / H * 2 * H + t % H * 2) * 2 * W;
      for (ptrdiff_t w = 0; w < W; ++w) y0[2 * w] = y0[2 * w + 1] = xr[w];
      std::memcpy(y0 + 2 * W, y0, sizeof(float) * 2 * W);
    }
  });
  return SANA_OK;
}

int activation(sana_ctx* ctx, const float* x, ptrdiff_t n, int act, float* y) {
  constexpr ptrdiff_t CH = 4096;
  parallel_for(ctx, (n + CH - 1) / CH, [&](ptrdiff_t c0, ptrdiff_t c1) {
    ptrdiff_t i = c0 * CH, e = mn(n, c1 * CH);
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

#include "glue.inl"

}  // namespace

extern const KernelTable table;
const KernelTable table = {SANA_VARIANT_NAME, SANA_KERNEL_OPS(SANA_TABLE_ROW)};

}  // namespace SANA_NS
}  // namespace sana
