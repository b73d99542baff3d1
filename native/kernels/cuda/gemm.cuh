// The one GEMM of the CUDA backend, on operand functors: a(z, m, k), b(z, k, n) give elements (fp32), and
// the epilogue e(z, m, n, sum) stores. z is blockIdx.z (independent GEMMs: a convolution's images × groups).
// fp32: SIMT FMA tiles, fp32 products (the fp32 compute mode is bit-compatible with the golden tolerances,
// which TF32's 10-bit mantissa would not be). bf16 (the fast_bf16 flag): operands rounded to bf16 as they are
// staged, tensor-core MMA with fp32 accumulation, the same rounding as the CPU's bf16 engine.
#pragma once
#include <mma.h>

#include "common.cuh"

namespace sana {
namespace cuda {

// C[m, n] = Σ_k A(m, k)·B(k, n) for `batches` independent GEMMs (blockIdx.z).
struct GemmShape {
  ptrdiff_t M, N, K, batches;
};

constexpr int TM = 64, TN = 64, TK = 16;  // fp32 tile; 256 threads, 4 × 4 outputs each

template <class A, class B, class E>
__global__ void __launch_bounds__(256) gemm_f32_kernel(GemmShape s, A a, B b, E e) {
  __shared__ float As[TK][TM + 4];
  __shared__ float Bs[TK][TN + 4];
  const int z = blockIdx.z, tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const ptrdiff_t m0 = (ptrdiff_t)blockIdx.y * TM, n0 = (ptrdiff_t)blockIdx.x * TN;
  float acc[4][4] = {};
  for (ptrdiff_t k0 = 0; k0 < s.K; k0 += TK) {
    for (int i = threadIdx.x; i < TK * TM; i += 256) {
      int kk = i % TK, r = i / TK;
      ptrdiff_t m = m0 + r, n = n0 + r, k = k0 + kk;
      As[kk][r] = m < s.M && k < s.K ? a(z, m, k) : 0.0f;
      Bs[kk][r] = n < s.N && k < s.K ? b(z, k, n) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < TK; ++kk) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[kk][ty + 16 * i], bv[i] = Bs[kk][tx + 16 * i];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      ptrdiff_t m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
      if (m < s.M && n < s.N) e(z, m, n, acc[i][j]);
    }
}

// bf16 tensor cores: a 64 × 64 tile per block of 4 warps (each 32 × 32: 2 × 2 WMMA fragments), K in steps of 32.
constexpr int BK = 32, BLD = BK + 8;  // staged row length (a multiple of 8 elements, rows 32-byte aligned)

template <class A, class B, class E>
__global__ void __launch_bounds__(128) gemm_bf16_kernel(GemmShape s, A a, B b, E e) {
  using namespace nvcuda;
  __shared__ __align__(32) __nv_bfloat16 As[TM][BLD];  // [m][k]
  __shared__ __align__(32) __nv_bfloat16 Bs[TN][BLD];  // [n][k]: B column-major
  __shared__ __align__(32) float Cs[TM][TN + 4];
  const int z = blockIdx.z, warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
  const ptrdiff_t m0 = (ptrdiff_t)blockIdx.y * TM, n0 = (ptrdiff_t)blockIdx.x * TN;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  for (ptrdiff_t k0 = 0; k0 < s.K; k0 += BK) {
    for (int i = threadIdx.x; i < BK * TM; i += 128) {
      int kk = i % BK, r = i / BK;
      ptrdiff_t m = m0 + r, n = n0 + r, k = k0 + kk;
      As[r][kk] = __float2bfloat16_rn(m < s.M && k < s.K ? a(z, m, k) : 0.0f);
      Bs[r][kk] = __float2bfloat16_rn(n < s.N && k < s.K ? b(z, k, n) : 0.0f);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb[2];
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &As[wm * 32 + i * 16][kk], BLD);
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], &Bs[wn * 32 + j * 16][kk], BLD);
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&Cs[wm * 32 + i * 16][wn * 32 + j * 16], acc[i][j], TN + 4, wmma::mem_row_major);
  __syncthreads();
  for (int i = threadIdx.x; i < TM * TN; i += 128) {
    int r = i / TN, c = i % TN;
    ptrdiff_t m = m0 + r, n = n0 + c;
    if (m < s.M && n < s.N) e(z, m, n, Cs[r][c]);
  }
}

template <class A, class B, class E>
int run_gemm(sana_ctx* ctx, const char* op, GemmShape s, A a, B b, E e, bool bf16) {
  if (s.M <= 0 || s.N <= 0 || s.batches <= 0) return SANA_OK;
  if ((s.M + TM - 1) / TM > 65535 || s.batches > 65535)
    return fail(ctx, SANA_ERR_UNSUPPORTED, "%s: a GEMM of %td rows in %td batches exceeds the CUDA grid", op, s.M, s.batches);
  dim3 grid((unsigned)((s.N + TN - 1) / TN), (unsigned)((s.M + TM - 1) / TM), (unsigned)s.batches);
  if (bf16) gemm_bf16_kernel<<<grid, 128, 0, stream(ctx)>>>(s, a, b, e);
  else gemm_f32_kernel<<<grid, 256, 0, stream(ctx)>>>(s, a, b, e);
  return launched(ctx, op);
}

// ---- operands shared by the matrix ops ----
// Row-major activations [M, K] (ld = row stride).
struct RowsA {
  const float* x;
  ptrdiff_t ld;
  __device__ float operator()(int, ptrdiff_t m, ptrdiff_t k) const { return x[m * ld + k]; }
};
// A linear weight [N, K] in its stored dtype (dense) or the sana_pack_weight layout, as B(k, n) = w[n, k].
struct WeightB {
  const void* w;
  int dt;
  bool packed;
  ptrdiff_t K;
  __device__ float operator()(int, ptrdiff_t k, ptrdiff_t n) const { return lw(w, dt, packed, K, n, k); }
};
// y[m, n] = act(sum + bias[n]).
struct RowsOut {
  float* y;
  ptrdiff_t ld;
  const float* bias;
  int act;
  __device__ void operator()(int, ptrdiff_t m, ptrdiff_t n, float v) const {
    y[m * ld + n] = act_fn(v + (bias ? bias[n] : 0.0f), act);
  }
};

}  // namespace cuda
}  // namespace sana
