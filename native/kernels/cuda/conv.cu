// conv2d: implicit GEMM per (image, group) — A = the weights [Cout/g, Cin/g·kh·kw], B = the input patches
// gathered on the fly (no im2col buffer) — and a direct kernel for depth-wise convolutions (one input and one
// output channel per group), where a GEMM of one row would waste the tile.
#include "gemm.cuh"
#include "ops.h"

namespace sana {
namespace cuda {
namespace {

struct ConvGeom {
  const float* x;
  const void* w;
  int dt;
  ptrdiff_t Cin, H, W, Cout, kh, kw, stride, pad, groups, Ho, Wo;
  ptrdiff_t up;  // H, W: the upsampled map the kernel slides over; x holds [H/up, W/up]
};

// A(z, m, k): weight row m of group z % groups.
struct ConvWeightA {
  ConvGeom g;
  __device__ float operator()(int z, ptrdiff_t m, ptrdiff_t k) const {
    ptrdiff_t cog = g.Cout / g.groups, K = g.Cin / g.groups * g.kh * g.kw;
    return wload(g.w, g.dt, (z % g.groups * cog + m) * K + k);
  }
};
// B(z, k, n): input value under tap k of output pixel n (0 in the padding).
struct ConvPatchB {
  ConvGeom g;
  __device__ float operator()(int z, ptrdiff_t k, ptrdiff_t n) const {
    ptrdiff_t taps = g.kh * g.kw, ci = k / taps, r = k % taps, ky = r / g.kw, kx = r % g.kw;
    ptrdiff_t iy = n / g.Wo * g.stride - g.pad + ky, ix = n % g.Wo * g.stride - g.pad + kx;
    if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) return 0.0f;
    ptrdiff_t b = z / g.groups, c = z % g.groups * (g.Cin / g.groups) + ci;
    return g.x[((b * g.Cin + c) * (g.H / g.up) + iy / g.up) * (g.W / g.up) + ix / g.up];
  }
};
struct ConvOut {
  ConvGeom g;
  float* y;
  const float* bias;
  int act;
  __device__ void operator()(int z, ptrdiff_t m, ptrdiff_t n, float v) const {
    ptrdiff_t co = z % g.groups * (g.Cout / g.groups) + m, b = z / g.groups;
    y[(b * g.Cout + co) * g.Ho * g.Wo + n] = act_fn(v + (bias ? bias[co] : 0.0f), act);
  }
};

__global__ void depthwise_kernel(ConvGeom g, ptrdiff_t B, const float* bias, int act, float* y) {
  ptrdiff_t total = B * g.Cout * g.Ho * g.Wo;
  for (ptrdiff_t i = blockIdx.x * (ptrdiff_t)blockDim.x + threadIdx.x; i < total; i += (ptrdiff_t)gridDim.x * blockDim.x) {
    ptrdiff_t ox = i % g.Wo, oy = i / g.Wo % g.Ho, bc = i / (g.Wo * g.Ho), c = bc % g.Cout;
    const float* xc = g.x + bc * g.H * g.W;
    float s = 0;
    for (ptrdiff_t ky = 0; ky < g.kh; ++ky) {
      ptrdiff_t iy = oy * g.stride - g.pad + ky;
      if (iy < 0 || iy >= g.H) continue;
      for (ptrdiff_t kx = 0; kx < g.kw; ++kx) {
        ptrdiff_t ix = ox * g.stride - g.pad + kx;
        if (ix < 0 || ix >= g.W) continue;
        s += xc[iy * g.W + ix] * wload(g.w, g.dt, (c * g.kh + ky) * g.kw + kx);
      }
    }
    y[i] = act_fn(s + (bias ? bias[c] : 0.0f), act);
  }
}

}  // namespace

int conv2d(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t Cin, ptrdiff_t H, ptrdiff_t W, const void* w, int dt,
           ptrdiff_t Cout, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t stride, ptrdiff_t pad, ptrdiff_t groups, ptrdiff_t up,
           const float* bias, int act, float* y) {
  H *= up, W *= up;
  ConvGeom g{x, w, dt, Cin, H, W, Cout, kh, kw, stride, pad, groups, (H + 2 * pad - kh) / stride + 1, (W + 2 * pad - kw) / stride + 1, up};
  if (Cin == groups && Cout == groups && up == 1) {  // the depth-wise kernel reads x as is
    depthwise_kernel<<<grid_for(B * Cout * g.Ho * g.Wo), kThreads, 0, stream(ctx)>>>(g, B, bias, act, y);
    return launched(ctx, "conv2d");
  }
  GemmShape s{Cout / groups, g.Ho * g.Wo, Cin / groups * kh * kw, B * groups};
  return run_gemm(ctx, "conv2d", s, ConvWeightA{g}, ConvPatchB{g}, ConvOut{g, y, bias, act}, false);
}

}  // namespace cuda
}  // namespace sana
