// Elementwise ops and the glue arithmetic between the big ops (residual, products, activations, the
// schedulers' axpby, CFG, the non-finite count, the adaLN chunks). axpby and cfg_combine round every
// product and sum to fp32 (__fmul_rn/__fadd_rn never contract into FMAs), as torch evaluates them.
#include "common.cuh"
#include "ops.h"

namespace sana {
namespace cuda {

int residual(sana_ctx* ctx, const float* x, const float* y, ptrdiff_t rows, ptrdiff_t dim, const float* gate, ptrdiff_t rpb,
             float* out) {
  return each(ctx, "residual", rows * dim, [=] __device__(ptrdiff_t i) {
    ptrdiff_t r = i / dim, c = i % dim;
    out[i] = x[i] + (gate ? gate[r / rpb * dim + c] : 1.0f) * y[i];
  });
}

int mul(sana_ctx* ctx, const float* x, const float* y, ptrdiff_t n, float* out) {
  return each(ctx, "mul", n, [=] __device__(ptrdiff_t i) { out[i] = x[i] * y[i]; });
}

int activation(sana_ctx* ctx, const float* x, ptrdiff_t n, int act, float* y) {
  return each(ctx, "activation", n, [=] __device__(ptrdiff_t i) { y[i] = act_fn(x[i], act); });
}

int axpby(sana_ctx* ctx, float a, const float* x, float b, const float* y, ptrdiff_t n, float* out) {
  return each(ctx, "axpby", n, [=] __device__(ptrdiff_t i) {
    float ax = __fmul_rn(a, x[i]);
    out[i] = y ? __fadd_rn(ax, __fmul_rn(b, y[i])) : ax;
  });
}

int cfg_combine(sana_ctx* ctx, const float* u, const float* c, ptrdiff_t n, float scale, float* out) {
  return each(ctx, "cfg_combine", n, [=] __device__(ptrdiff_t i) { out[i] = __fadd_rn(u[i], __fmul_rn(scale, __fsub_rn(c[i], u[i]))); });
}

namespace {
__global__ void count_nonfinite_kernel(const float* x, ptrdiff_t n, unsigned long long* bad) {
  unsigned long long mine = 0;
  for (ptrdiff_t i = blockIdx.x * (ptrdiff_t)blockDim.x + threadIdx.x; i < n; i += (ptrdiff_t)gridDim.x * blockDim.x)
    mine += !isfinite(x[i]);
  for (int o = 16; o > 0; o >>= 1) mine += __shfl_xor_sync(0xffffffffu, mine, o);
  if ((threadIdx.x & 31) == 0 && mine) atomicAdd(bad, mine);
}
}  // namespace

int count_nonfinite(sana_ctx* ctx, const float* x, ptrdiff_t n, float* count) {
  unsigned long long* bad = state(ctx)->counter_dev;
  cudaMemsetAsync(bad, 0, sizeof *bad, stream(ctx));
  count_nonfinite_kernel<<<grid_for(n), kThreads, 0, stream(ctx)>>>(x, n, bad);
  int st = launched(ctx, "count_nonfinite");
  if (st != SANA_OK) return st;
  return each(ctx, "count_nonfinite", 1, [=] __device__(ptrdiff_t) {
    count[0] = *bad > (1ull << 24) ? (float)(1 << 24) : (float)*bad;
  });
}

int adaln_modulation(sana_ctx* ctx, const float* table, const float* emb, ptrdiff_t B, ptrdiff_t K, ptrdiff_t D,
                     ptrdiff_t row, ptrdiff_t chunk, float* out) {
  return each(ctx, "adaln_modulation", K * B * D, [=] __device__(ptrdiff_t i) {
    ptrdiff_t d = i % D, b = i / D % B, k = i / (D * B);
    out[i] = table[k * D + d] + emb[b * row + k * chunk + d];
  });
}

}  // namespace cuda
}  // namespace sana
