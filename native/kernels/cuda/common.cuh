// Shared by the CUDA kernel files: the device state a cuda context carries, element loads in the weights'
// stored dtype, the activations (the same formulas as native/kernels/ref), launch helpers. The ref variant is
// the specification of every kernel here; test/kernels runs both on the same random inputs.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../../core/internal.h"

namespace sana {
namespace cuda {

// What a cuda context holds besides the common ones (error text, op table): its device and stream, and
// pinned staging for the small values the host reads back itself (embedding's bad-id report).
struct State {
  int device = 0;
  cudaStream_t stream = nullptr;
  int* report_host = nullptr;  // pinned, 2 ints
  int* report_dev = nullptr;
  unsigned long long* counter_dev = nullptr;  // count_nonfinite's running count
};

inline State* state(sana_ctx* ctx) { return static_cast<State*>(ctx_device(ctx)); }
inline cudaStream_t stream(sana_ctx* ctx) { return state(ctx)->stream; }

// A launch that did not start (bad configuration, no kernel image for this GPU) is reported by name.
inline int launched(sana_ctx* ctx, const char* op) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return SANA_OK;
  return fail(ctx, e == cudaErrorMemoryAllocation ? SANA_ERR_OUT_OF_MEMORY : SANA_ERR_INTERNAL,
              "%s: CUDA kernel launch failed: %s", op, cudaGetErrorString(e));
}

// Device scratch for an op's intermediates (stream-ordered: freed after the kernels that use it).
inline int scratch(sana_ctx* ctx, const char* op, size_t bytes, float** out) {
  cudaError_t e = cudaMallocAsync(reinterpret_cast<void**>(out), bytes ? bytes : 4, stream(ctx));
  if (e == cudaSuccess) return SANA_OK;
  cudaGetLastError();
  size_t free_b = 0, total = 0;
  cudaMemGetInfo(&free_b, &total);
  return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "%s: out of device memory for %zu bytes of scratch (%zu bytes free)", op,
              bytes, free_b);
}
inline void release(sana_ctx* ctx, void* p) {
  if (p) cudaFreeAsync(p, stream(ctx));
}

constexpr int kThreads = 256;
// Grid of a grid-stride loop over n elements (capped: the loop covers the rest).
inline unsigned grid_for(ptrdiff_t n, int threads = kThreads) {
  ptrdiff_t g = (n + threads - 1) / threads;
  return (unsigned)(g < 1 ? 1 : g > 65535 * 16 ? 65535 * 16 : g);
}

__device__ __forceinline__ float wload(const void* w, int dt, ptrdiff_t i) {
  if (dt == SANA_F32) return static_cast<const float*>(w)[i];
  if (dt == SANA_F16) return __half2float(static_cast<const __half*>(w)[i]);
  return __bfloat162float(static_cast<const __nv_bfloat16*>(w)[i]);
}

// Element (n, k) of a linear weight [N, K], dense or in the sana_pack_weight layout.
__device__ __forceinline__ float lw(const void* w, int dt, bool packed, ptrdiff_t K, ptrdiff_t n, ptrdiff_t k) {
  if (!packed) return wload(w, dt, n * K + k);
  return dt == SANA_F32 ? static_cast<const float*>(w)[SANA_PACKED_F32_INDEX(n, k, K)]
                        : wload(w, SANA_BF16, SANA_PACKED_BF16_INDEX(n, k, K));
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

__device__ __forceinline__ float act_fn(float x, int act) {
  switch (act) {
    case SANA_ACT_RELU: return x > 0 ? x : 0.0f;
    case SANA_ACT_SILU: return silu(x);
    case SANA_ACT_GELU_TANH: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    default: return x;
  }
}

__device__ __forceinline__ float& at(const sana_view4& v, ptrdiff_t b, ptrdiff_t n, ptrdiff_t h, ptrdiff_t d) {
  return v.data[b * v.sb + n * v.sn + h * v.sh + d * v.sd];
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over a block of kThreads threads (every thread gets it); `red` is kThreads/32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float s = 0;
  for (int i = 0; i < (int)(blockDim.x >> 5); ++i) s += red[i];
  return s;
}

// f(i) for i in [0, n) on a grid-stride loop: the elementwise and gather ops (device lambdas, --extended-lambda).
template <class F>
__global__ void each_kernel(ptrdiff_t n, F f) {
  for (ptrdiff_t i = blockIdx.x * (ptrdiff_t)blockDim.x + threadIdx.x; i < n; i += (ptrdiff_t)gridDim.x * blockDim.x) f(i);
}
template <class F>
int each(sana_ctx* ctx, const char* op, ptrdiff_t n, F f) {
  each_kernel<<<grid_for(n), kThreads, 0, stream(ctx)>>>(n, f);
  return launched(ctx, op);
}

}  // namespace cuda
}  // namespace sana
