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

// One thread per packed element, each reading its source through the layout's index (SANA_PACKED_*_INDEX).
template <class T>
__global__ void pack_weight_kernel(const T* w, ptrdiff_t N, ptrdiff_t K, T* packed, ptrdiff_t total) {
  for (ptrdiff_t i = blockIdx.x * (ptrdiff_t)blockDim.x + threadIdx.x; i < total; i += (ptrdiff_t)gridDim.x * blockDim.x) {
    ptrdiff_t n, k;
    if (sizeof(T) == 4) {  // f32: [N/32][K][32]
      n = i / 32 / K * 32 + i % 32, k = i / 32 % K;
    } else {  // bf16: [N/32][Kp/2][32][2]
      ptrdiff_t Kp = SANA_PACKED_BF16_KP(K);
      n = i / (32 * Kp) * 32 + i % 64 / 2, k = i % (32 * Kp) / 64 * 2 + i % 2;
    }
    packed[i] = n < N && k < K ? w[n * K + k] : T(0.0f);
  }
}

int pack_weight(sana_ctx* ctx, const void* w, int dt, ptrdiff_t N, ptrdiff_t K, void* packed) {
  ptrdiff_t total = sana_packed_weight_size(N, K, dt);
  if (dt == SANA_F32)
    pack_weight_kernel<<<grid_for(total), kThreads, 0, stream(ctx)>>>(static_cast<const float*>(w), N, K, static_cast<float*>(packed), total);
  else
    pack_weight_kernel<<<grid_for(total), kThreads, 0, stream(ctx)>>>(static_cast<const __nv_bfloat16*>(w), N, K, static_cast<__nv_bfloat16*>(packed), total);
  return launched(ctx, "pack_weight");
}

}  // namespace cuda
}  // namespace sana
