// Normalisations and channel reductions: LayerNorm (+ fused adaLN) and RMSNorm per row on a block each (two
// passes as the reference: the mean, then the centred variance), the DC-AE's channel RMSNorm, group means and
// the EfficientViT division per pixel (a thread each: consecutive pixels, coalesced channel loops).
#include "common.cuh"
#include "ops.h"

namespace sana {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kThreads) layer_norm_kernel(const float* x, ptrdiff_t dim, float eps, const float* scale,
                                                             const float* shift, ptrdiff_t rpb, float* y) {
  __shared__ float red[kThreads / 32];
  ptrdiff_t r = blockIdx.x;
  const float* xr = x + r * dim;
  float s = 0;
  for (ptrdiff_t i = threadIdx.x; i < dim; i += kThreads) s += xr[i];
  float mean = block_sum(s, red) / (float)dim;
  float v = 0;
  for (ptrdiff_t i = threadIdx.x; i < dim; i += kThreads) v += (xr[i] - mean) * (xr[i] - mean);
  float inv = 1.0f / sqrtf(block_sum(v, red) / (float)dim + eps);
  ptrdiff_t b = r / rpb;
  for (ptrdiff_t i = threadIdx.x; i < dim; i += kThreads) {
    float o = (xr[i] - mean) * inv;
    if (scale) o = o * (1.0f + scale[b * dim + i]) + shift[b * dim + i];
    y[r * dim + i] = o;
  }
}

__global__ void __launch_bounds__(kThreads) rms_norm_kernel(const float* x, ptrdiff_t dim, const float* weight, const float* bias,
                                                           float eps, int mode, float* y) {
  __shared__ float red[kThreads / 32];
  ptrdiff_t r = blockIdx.x;
  const float* xr = x + r * dim;
  float s = 0;
  for (ptrdiff_t i = threadIdx.x; i < dim; i += kThreads) s += xr[i] * xr[i];
  float inv = 1.0f / sqrtf(block_sum(s, red) / (float)dim + eps);
  for (ptrdiff_t i = threadIdx.x; i < dim; i += kThreads) {
    float o = xr[i] * inv;
    if (weight) o *= mode == SANA_RMS_ONE_PLUS_WEIGHT ? 1.0f + weight[i] : weight[i];
    if (bias) o += bias[i];
    y[r * dim + i] = o;
  }
}

int rows_grid(sana_ctx* ctx, const char* op, ptrdiff_t rows) {
  return rows > 0x7fffffff ? fail(ctx, SANA_ERR_UNSUPPORTED, "%s: %td rows exceed the CUDA grid", op, rows) : SANA_OK;
}

}  // namespace

int layer_norm(sana_ctx* ctx, const float* x, ptrdiff_t rows, ptrdiff_t dim, float eps, const float* scale,
               const float* shift, ptrdiff_t rpb, float* y) {
  int st = rows_grid(ctx, "layer_norm", rows);
  if (st != SANA_OK) return st;
  layer_norm_kernel<<<(unsigned)rows, kThreads, 0, stream(ctx)>>>(x, dim, eps, scale, shift, rpb > 0 ? rpb : 1, y);
  return launched(ctx, "layer_norm");
}

int rms_norm(sana_ctx* ctx, const float* x, ptrdiff_t rows, ptrdiff_t dim, const float* weight, const float* bias,
             float eps, int mode, float* y) {
  int st = rows_grid(ctx, "rms_norm", rows);
  if (st != SANA_OK) return st;
  rms_norm_kernel<<<(unsigned)rows, kThreads, 0, stream(ctx)>>>(x, dim, weight, bias, eps, mode, y);
  return launched(ctx, "rms_norm");
}

int rms_norm_channels(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, const float* weight,
                      const float* bias, float eps, float* y) {
  return each(ctx, "rms_norm_channels", B * HW, [=] __device__(ptrdiff_t i) {
    ptrdiff_t b = i / HW, p = i % HW;
    const float* xp = x + b * C * HW + p;
    float ss = 0;
    for (ptrdiff_t c = 0; c < C; ++c) ss += xp[c * HW] * xp[c * HW];
    float inv = 1.0f / sqrtf(ss / (float)C + eps);
    for (ptrdiff_t c = 0; c < C; ++c) {
      float v = xp[c * HW] * inv;
      if (weight) v *= weight[c];
      if (bias) v += bias[c];
      y[(b * C + c) * HW + p] = v;
    }
  });
}

int group_mean(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, ptrdiff_t groups, float* y) {
  ptrdiff_t g = C / groups;
  return each(ctx, "group_mean", B * groups * HW, [=] __device__(ptrdiff_t i) {
    ptrdiff_t p = i % HW, bk = i / HW;  // bk = b·groups + k, whose channels start at bk·g
    float s = 0;
    for (ptrdiff_t j = 0; j < g; ++j) s += x[(bk * g + j) * HW + p];
    y[i] = s / (float)g;
  });
}

int evit_normalize(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t heads, ptrdiff_t D, ptrdiff_t HW, float eps, float* y) {
  return each(ctx, "evit_normalize", B * heads * D * HW, [=] __device__(ptrdiff_t i) {
    ptrdiff_t p = i % HW, d = i / HW % D, bh = i / (HW * D);
    y[i] = x[(bh * (D + 1) + d) * HW + p] / (x[(bh * (D + 1) + D) * HW + p] + eps);
  });
}

}  // namespace cuda
}  // namespace sana
