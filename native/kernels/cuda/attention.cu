// Sana's ReLU linear attention (per-head state in fp32, two passes: the state, then every token against it)
// and softmax attention, flash-style (one warp per query, keys in chunks of 32 with a running max and sum,
// so the logits are never stored) with key bias, soft-capping, causal and sliding-window masks and GQA.
#include <cfloat>

#include "common.cuh"
#include "ops.h"

namespace sana {
namespace cuda {
namespace {

// state[bh][i][j] = Σ_n vp[n][i]·relu(k[n][j]) with vp = [v | 1] (row i = d: the key sums).
__global__ void linear_attention_state(sana_view4 k, sana_view4 v, ptrdiff_t N, ptrdiff_t heads, ptrdiff_t d, float* state) {
  ptrdiff_t bh = blockIdx.x, b = bh / heads, h = bh % heads;
  ptrdiff_t e = blockIdx.y * (ptrdiff_t)blockDim.x + threadIdx.x;
  if (e >= (d + 1) * d) return;
  ptrdiff_t i = e / d, j = e % d;
  float s = 0;
  for (ptrdiff_t n = 0; n < N; ++n) s += (i < d ? at(v, b, n, h, i) : 1.0f) * fmaxf(at(k, b, n, h, j), 0.0f);
  state[bh * (d + 1) * d + e] = s;
}

__global__ void linear_attention_apply(sana_view4 q, sana_view4 out, ptrdiff_t B, ptrdiff_t N, ptrdiff_t heads, ptrdiff_t d,
                                       float eps, const float* state) {
  ptrdiff_t total = B * N * heads * d;
  for (ptrdiff_t t = blockIdx.x * (ptrdiff_t)blockDim.x + threadIdx.x; t < total; t += (ptrdiff_t)gridDim.x * blockDim.x) {
    ptrdiff_t i = t % d, h = t / d % heads, n = t / (d * heads) % N, b = t / (d * heads * N);
    const float* kv = state + (b * heads + h) * (d + 1) * d;
    float num = 0, den = 0;
    for (ptrdiff_t j = 0; j < d; ++j) {
      float qj = fmaxf(at(q, b, n, h, j), 0.0f);
      den += kv[d * d + j] * qj;
      num += kv[i * d + j] * qj;
    }
    at(out, b, n, h, i) = num / (den + eps);
  }
}

constexpr int kMaxDvPerLane = 16;  // head_dim_v up to 512
constexpr int kWarps = 4;

__global__ void __launch_bounds__(kWarps * 32) attention_kernel(sana_view4 q, sana_view4 k, sana_view4 v, const float* key_bias,
                                                                sana_attention_params p, sana_view4 out) {
  extern __shared__ float qs[];  // kWarps × head_dim
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  ptrdiff_t row = blockIdx.x * (ptrdiff_t)kWarps + warp;  // (b, h, i) flattened
  if (row >= p.batch * p.heads_q * p.len_q) return;
  ptrdiff_t i = row % p.len_q, h = row / p.len_q % p.heads_q, b = row / (p.len_q * p.heads_q), hk = h / (p.heads_q / p.heads_kv);
  float* qr = qs + warp * p.head_dim;
  for (ptrdiff_t e = lane; e < p.head_dim; e += 32) qr[e] = at(q, b, i, h, e);
  __syncwarp();
  float m = -INFINITY, l = 0, o[kMaxDvPerLane] = {};
  for (ptrdiff_t j0 = 0; j0 < p.len_kv; j0 += 32) {
    ptrdiff_t j = j0 + lane;
    float s = -INFINITY;
    bool masked = j >= p.len_kv || (p.causal && j > i) || (p.window > 0 && i - j >= p.window);
    if (!masked) {
      s = 0;
      for (ptrdiff_t e = 0; e < p.head_dim; ++e) s += qr[e] * at(k, b, j, hk, e);
      s *= p.scale;
      if (p.softcap > 0) s = p.softcap * tanhf(s / p.softcap);
      if (key_bias) s += key_bias[b * p.len_kv + j];
    }
    float mn = fmaxf(m, warp_max(s));
    if (mn == -INFINITY) continue;  // nothing visible yet
    float corr = m == -INFINITY ? 0.0f : expf(m - mn), pj = s == -INFINITY ? 0.0f : expf(s - mn);
    l = l * corr + warp_sum(pj);
    for (int t = 0; t < kMaxDvPerLane; ++t) o[t] *= corr;
    ptrdiff_t chunk = p.len_kv - j0 < 32 ? p.len_kv - j0 : 32;
    for (int jj = 0; jj < chunk; ++jj) {
      float pw = __shfl_sync(0xffffffffu, pj, jj);
      if (pw == 0.0f) continue;
      for (int t = 0; t < kMaxDvPerLane; ++t) {
        ptrdiff_t e = lane + 32 * t;
        if (e < p.head_dim_v) o[t] += pw * at(v, b, j0 + jj, hk, e);
      }
    }
    m = mn;
  }
  if (m <= -FLT_MAX) {  // every visible key masked by a −FLT_MAX bias: uniform over all keys (sana_ops.h)
    for (int t = 0; t < kMaxDvPerLane; ++t) o[t] = 0;
    for (ptrdiff_t j = 0; j < p.len_kv; ++j)
      for (int t = 0; t < kMaxDvPerLane; ++t) {
        ptrdiff_t e = lane + 32 * t;
        if (e < p.head_dim_v) o[t] += at(v, b, j, hk, e);
      }
    l = (float)p.len_kv;
  }
  for (int t = 0; t < kMaxDvPerLane; ++t) {
    ptrdiff_t e = lane + 32 * t;
    if (e < p.head_dim_v) at(out, b, i, h, e) = l > 0 ? o[t] / l : 0.0f;
  }
}

}  // namespace

int linear_attention(sana_ctx* ctx, const sana_view4* q, const sana_view4* k, const sana_view4* v, const sana_view4* out,
                     ptrdiff_t B, ptrdiff_t N, ptrdiff_t heads, ptrdiff_t d, float eps) {
  if (B * heads > 0x7fffffff) return fail(ctx, SANA_ERR_UNSUPPORTED, "linear_attention: too many heads for the CUDA grid");
  float* state = nullptr;
  int st = scratch(ctx, "linear_attention", sizeof(float) * (size_t)(B * heads * (d + 1) * d), &state);
  if (st != SANA_OK) return st;
  dim3 grid((unsigned)(B * heads), (unsigned)(((d + 1) * d + kThreads - 1) / kThreads));
  linear_attention_state<<<grid, kThreads, 0, stream(ctx)>>>(*k, *v, N, heads, d, state);
  linear_attention_apply<<<grid_for(B * N * heads * d), kThreads, 0, stream(ctx)>>>(*q, *out, B, N, heads, d, eps, state);
  st = launched(ctx, "linear_attention");
  release(ctx, state);
  return st;
}

int attention(sana_ctx* ctx, const sana_view4* q, const sana_view4* k, const sana_view4* v, const float* key_bias,
              const sana_attention_params* p, const sana_view4* out) {
  if (p->head_dim_v > 32 * kMaxDvPerLane || p->head_dim > 2048)
    return fail(ctx, SANA_ERR_UNSUPPORTED, "attention: the cuda kernel takes head_dim_v <= %d and head_dim <= 2048, not %td and %td",
                32 * kMaxDvPerLane, p->head_dim_v, p->head_dim);
  ptrdiff_t rows = p->batch * p->heads_q * p->len_q, blocks = (rows + kWarps - 1) / kWarps;
  if (blocks > 0x7fffffff) return fail(ctx, SANA_ERR_UNSUPPORTED, "attention: too many query rows for the CUDA grid");
  attention_kernel<<<(unsigned)blocks, kWarps * 32, sizeof(float) * kWarps * p->head_dim, stream(ctx)>>>(*q, *k, *v, key_bias, *p, *out);
  return launched(ctx, "attention");
}

}  // namespace cuda
}  // namespace sana
