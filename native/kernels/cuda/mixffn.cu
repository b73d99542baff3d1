// The Mix-FFN (GLUMBConv): expand GEMM with bias and SiLU fused into its epilogue, one kernel for the 3×3
// depth-wise convolution on the token grid fused with the GLU gate, project GEMM. The [B·H·W, 2F] expansion
// lives in stream-ordered scratch for the op's duration (device memory is not the CPU's cache).
#include "gemm.cuh"
#include "ops.h"

namespace sana {
namespace cuda {
namespace {

struct SiluOut {
  float* t;
  ptrdiff_t ld;
  const float* bias;
  __device__ void operator()(int, ptrdiff_t m, ptrdiff_t n, float v) const { t[m * ld + n] = silu(v + (bias ? bias[n] : 0.0f)); }
};

// u[b, p, c] = dw(t)[c] · silu(dw(t)[c + F]) with dw the 3×3 depth-wise convolution (zero padding) plus bias.
__global__ void depthwise_glu(const float* t, ptrdiff_t B, ptrdiff_t H, ptrdiff_t W, ptrdiff_t F, const void* w_dw, int dt,
                              const float* b_dw, float* u) {
  ptrdiff_t total = B * H * W * F, F2 = 2 * F;
  for (ptrdiff_t idx = blockIdx.x * (ptrdiff_t)blockDim.x + threadIdx.x; idx < total; idx += (ptrdiff_t)gridDim.x * blockDim.x) {
    ptrdiff_t c = idx % F, pix = idx / F, j = pix % W, i = pix / W % H, b = pix / (W * H);
    const float* tb = t + b * H * W * F2;
    float a = b_dw ? b_dw[c] : 0.0f, g = b_dw ? b_dw[c + F] : 0.0f;
    for (int dy = -1; dy <= 1; ++dy) {
      ptrdiff_t yy = i + dy;
      if (yy < 0 || yy >= H) continue;
      for (int dx = -1; dx <= 1; ++dx) {
        ptrdiff_t xx = j + dx;
        if (xx < 0 || xx >= W) continue;
        int tap = (dy + 1) * 3 + dx + 1;
        const float* tp = tb + (yy * W + xx) * F2;
        a += tp[c] * wload(w_dw, dt, c * 9 + tap);
        g += tp[c + F] * wload(w_dw, dt, (c + F) * 9 + tap);
      }
    }
    u[idx] = a * silu(g);
  }
}

}  // namespace

int glumbconv(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, const void* w_inv,
              const float* b_inv, const void* w_dw, const float* b_dw, const void* w_point, int dt, ptrdiff_t F,
              ptrdiff_t Cout, int flags, float* y) {
  bool packed = flags & SANA_GEMM_PACKED_WEIGHT, bf16 = (flags & SANA_GEMM_FAST_BF16) && dt == SANA_BF16;
  ptrdiff_t rows = B * H * W;
  float *t = nullptr, *u = nullptr;
  int st = scratch(ctx, "glumbconv", sizeof(float) * (size_t)(rows * 2 * F), &t);
  if (st == SANA_OK) st = scratch(ctx, "glumbconv", sizeof(float) * (size_t)(rows * F), &u);
  if (st == SANA_OK)
    st = run_gemm(ctx, "glumbconv", GemmShape{rows, 2 * F, C, 1}, RowsA{x, C}, WeightB{w_inv, dt, packed, C}, SiluOut{t, 2 * F, b_inv}, bf16);
  if (st == SANA_OK) {
    depthwise_glu<<<grid_for(rows * F), kThreads, 0, stream(ctx)>>>(t, B, H, W, F, w_dw, dt, b_dw, u);
    st = launched(ctx, "glumbconv");
  }
  if (st == SANA_OK)
    st = run_gemm(ctx, "glumbconv", GemmShape{rows, Cout, F, 1}, RowsA{u, F}, WeightB{w_point, dt, packed, F}, RowsOut{y, Cout, nullptr, SANA_ACT_NONE}, bf16);
  release(ctx, t);
  release(ctx, u);
  return st;
}

}  // namespace cuda
}  // namespace sana
