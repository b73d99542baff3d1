// Data movement: pixel (un)shuffle, patchify/unpatchify, strided 4-D copies, RoPE and the
// embedding gather (one thread per output element, indices as in native/kernels/ref).
#include <climits>

#include "common.cuh"
#include "ops.h"

namespace sana {
namespace cuda {

int pixel_shuffle(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t r,
                  ptrdiff_t repeat, int accumulate, float* y) {
  ptrdiff_t Hr = H * r, Wr = W * r, Cx = C * r * r / repeat;
  return each(ctx, "pixel_shuffle", B * C * Hr * Wr, [=] __device__(ptrdiff_t o) {
    ptrdiff_t j = o % Wr, i = o / Wr % Hr, c = o / (Wr * Hr) % C, b = o / (Wr * Hr * C);
    float v = x[((b * Cx + (c * r * r + (i % r) * r + j % r) / repeat) * H + i / r) * W + j / r];
    y[o] = accumulate ? y[o] + v : v;
  });
}

int pixel_unshuffle(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t r, float* y) {
  ptrdiff_t Ho = H / r, Wo = W / r;
  return each(ctx, "pixel_unshuffle", B * C * H * W, [=] __device__(ptrdiff_t s) {
    ptrdiff_t j = s % W, i = s / W % H, bc = s / (W * H);
    y[((bc * r * r + (i % r) * r + j % r) * Ho + i / r) * Wo + j / r] = x[s];
  });
}

// pixel (b, c, i·p + r, j·p + s) of the NCHW map ↔ channel (r·p + s)·C + c of token (b, i·w + j), by token index.
struct PatchIndex {
  ptrdiff_t C, h, w, p;
  __device__ ptrdiff_t pixel(ptrdiff_t t) const {
    ptrdiff_t c = t % C, rs = t / C % (p * p), tok = t / (C * p * p), j = tok % w, i = tok / w % h, b = tok / (w * h);
    ptrdiff_t r = rs / p, s = rs % p;
    return ((b * C + c) * h * p + i * p + r) * w * p + j * p + s;
  }
};

int patchify(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t p, float* y) {
  PatchIndex ix{C, H / p, W / p, p};
  return each(ctx, "patchify", B * C * H * W, [=] __device__(ptrdiff_t t) { y[t] = x[ix.pixel(t)]; });
}

int unpatchify(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t h, ptrdiff_t w, ptrdiff_t p, ptrdiff_t C, float* y) {
  PatchIndex ix{C, h, w, p};
  return each(ctx, "unpatchify", B * h * w * p * p * C, [=] __device__(ptrdiff_t t) { y[ix.pixel(t)] = x[t]; });
}

int copy4(sana_ctx* ctx, const sana_view4* src, const sana_view4* dst, ptrdiff_t B, ptrdiff_t N, ptrdiff_t H, ptrdiff_t D) {
  sana_view4 s = *src, d = *dst;
  return each(ctx, "copy4", B * N * H * D, [=] __device__(ptrdiff_t i) {
    ptrdiff_t e = i % D, h = i / D % H, n = i / (D * H) % N, b = i / (D * H * N);
    at(d, b, n, h, e) = at(s, b, n, h, e);
  });
}

// inv_freq, cos and sin in double, rounded to fp32: the reference's powf/cosf/sinf are correctly rounded in
// nearly every case, and the CUDA fp32 ones may be an ulp off, which at angles of hundreds of radians is 1e-5.
int rope(sana_ctx* ctx, const sana_view4* x, ptrdiff_t B, ptrdiff_t L, ptrdiff_t heads, ptrdiff_t dim,
         const int32_t* positions, float theta, const sana_view4* out) {
  sana_view4 xv = *x, ov = *out;
  ptrdiff_t half = dim / 2;
  return each(ctx, "rope", B * L * heads * half, [=] __device__(ptrdiff_t t) {
    ptrdiff_t i = t % half, h = t / half % heads, l = t / (half * heads) % L, b = t / (half * heads * L);
    float pos = positions ? (float)positions[l] : (float)l;
    float inv_freq = 1.0f / (float)pow((double)theta, (double)((float)(2 * i) / (float)dim));
    float ang = pos * inv_freq, c = (float)cos((double)ang), s = (float)sin((double)ang);
    float x1 = at(xv, b, l, h, i), x2 = at(xv, b, l, h, i + half);
    at(ov, b, l, h, i) = x1 * c - x2 * s;
    at(ov, b, l, h, i + half) = x2 * c + x1 * s;
  });
}

// The ids live on the device: the first out-of-range position is found there and reported back (one small
// synchronous read, once per text encode), with the message the validation layer gives host backends.
int embedding(sana_ctx* ctx, const void* table, int dt, ptrdiff_t V, ptrdiff_t D, const int32_t* ids, ptrdiff_t n,
              float scale, float* out) {
  State* s = state(ctx);
  int* report = s->report_dev;
  cudaMemsetAsync(report, 0x7f, 2 * sizeof(int), stream(ctx));  // 0x7f7f7f7f: no bad position
  int st = each(ctx, "embedding", n, [=] __device__(ptrdiff_t i) {
    if (ids[i] < 0 || ids[i] >= V) atomicMin(report, (int)(i < INT_MAX ? i : INT_MAX - 1));
  });
  if (st != SANA_OK) return st;
  each_kernel<<<1, 1, 0, stream(ctx)>>>(1, [=] __device__(ptrdiff_t) {
    if (report[0] != 0x7f7f7f7f) report[1] = ids[report[0]];
  });
  cudaMemcpyAsync(s->report_host, report, 2 * sizeof(int), cudaMemcpyDeviceToHost, stream(ctx));
  cudaError_t e = cudaStreamSynchronize(stream(ctx));
  if (e != cudaSuccess) return fail(ctx, SANA_ERR_INTERNAL, "embedding: CUDA error: %s", cudaGetErrorString(e));
  if (s->report_host[0] != 0x7f7f7f7f)
    return fail(ctx, SANA_ERR_INVALID_ARGUMENT, "embedding: Expected token ids in [0, %td) for ids but received %d at position %d",
                V, s->report_host[1], s->report_host[0]);
  return each(ctx, "embedding", n * D, [=] __device__(ptrdiff_t i) {
    ptrdiff_t r = i / D, d = i % D;
    out[i] = wload(table, dt, (ptrdiff_t)ids[r] * D + d) * scale;
  });
}

}  // namespace cuda
}  // namespace sana
