// linear and the weight repacking, on the GEMM of gemm.cuh.
#include "gemm.cuh"
#include "ops.h"

namespace sana {
namespace cuda {

int linear(sana_ctx* ctx, const float* x, ptrdiff_t M, ptrdiff_t K, const void* w, int dt, ptrdiff_t N, const float* bias,
           int act, int flags, float* y) {
  bool packed = flags & SANA_GEMM_PACKED_WEIGHT, bf16 = (flags & SANA_GEMM_FAST_BF16) && dt == SANA_BF16;
  return run_gemm(ctx, "linear", GemmShape{M, N, K, 1}, RowsA{x, K}, WeightB{w, dt, packed, K}, RowsOut{y, N, bias, act}, bf16);
}

__global__ void pack_weight_kernel(const float* w, ptrdiff_t N, ptrdiff_t K, float* packed, ptrdiff_t total) {
  for (ptrdiff_t i = blockIdx.x * (ptrdiff_t)blockDim.x + threadIdx.x; i < total; i += (ptrdiff_t)gridDim.x * blockDim.x) {
    ptrdiff_t j = i % 32, k = i / 32 % K, p = i / 32 / K, n = p * 32 + j;
    packed[i] = n < N ? w[n * K + k] : 0.0f;
  }
}

int pack_weight(sana_ctx* ctx, const float* w, ptrdiff_t N, ptrdiff_t K, float* packed) {
  ptrdiff_t total = sana_packed_weight_size(N, K);
  pack_weight_kernel<<<grid_for(total), kThreads, 0, stream(ctx)>>>(w, N, K, packed, total);
  return launched(ctx, "pack_weight");
}

}  // namespace cuda
}  // namespace sana
