// Scalar reference of every op: the executable specification the fast variants are tested against
// (together with the float64 references of test/kernels). Plain loops, float32 arithmetic, one thread.
// Formulas: ../shared/design/sana-spec.md §2.5, §3.2, §6.3 and native/include/sana_ops.h.
#include <cfloat>
#include <cmath>
#include <cstring>

#include "../../core/internal.h"

namespace sana {
namespace ref {
namespace {

float wload(const void* w, int dt, ptrdiff_t i) {
  if (dt == SANA_F32) return static_cast<const float*>(w)[i];
  uint16_t h = static_cast<const uint16_t*>(w)[i];
  return dt == SANA_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// Element (n, k) of a linear weight [N, K], dense or in the sana_pack_weight layout.
float lw(const void* w, int dt, bool packed, ptrdiff_t K, ptrdiff_t n, ptrdiff_t k) {
  if (!packed) return wload(w, dt, n * K + k);
  return dt == SANA_F32 ? static_cast<const float*>(w)[SANA_PACKED_F32_INDEX(n, k, K)]
                        : bf16_to_f32(static_cast<const uint16_t*>(w)[SANA_PACKED_BF16_INDEX(n, k, K)]);
}

float act_fn(float x, int act) {
  switch (act) {
    case SANA_ACT_RELU: return x > 0 ? x : 0.0f;
    case SANA_ACT_SILU: return x / (1.0f + std::exp(-x));
    case SANA_ACT_GELU_TANH: return 0.5f * x * (1.0f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    default: return x;
  }
}

float silu(float x) { return x / (1.0f + std::exp(-x)); }

float& at(const sana_view4* v, ptrdiff_t b, ptrdiff_t n, ptrdiff_t h, ptrdiff_t d) {
  return v->data[b * v->sb + n * v->sn + h * v->sh + d * v->sd];
}

int linear(sana_ctx*, const float* x, ptrdiff_t M, ptrdiff_t K, const void* w, int dt, ptrdiff_t N, const float* bias,
           int act, int flags, float* y) {
  bool packed = flags & SANA_GEMM_PACKED_WEIGHT;
  for (ptrdiff_t m = 0; m < M; ++m)
    for (ptrdiff_t n = 0; n < N; ++n) {
      float s = 0;
      for (ptrdiff_t k = 0; k < K; ++k) s += x[m * K + k] * lw(w, dt, packed, K, n, k);
      y[m * N + n] = act_fn(s + (bias ? bias[n] : 0.0f), act);
    }
  return SANA_OK;
}

int conv2d(sana_ctx*, const float* x, ptrdiff_t B, ptrdiff_t Cin, ptrdiff_t H, ptrdiff_t W, const void* w, int dt,
           ptrdiff_t Cout, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t stride, ptrdiff_t pad, ptrdiff_t groups, ptrdiff_t up,
           const float* bias, int act, float* y) {
  ptrdiff_t Hu = H * up, Wu = W * up;  // the (upsampled) map the kernel slides over
  ptrdiff_t Ho = (Hu + 2 * pad - kh) / stride + 1, Wo = (Wu + 2 * pad - kw) / stride + 1;
  ptrdiff_t cig = Cin / groups, cog = Cout / groups;
  for (ptrdiff_t b = 0; b < B; ++b)
    for (ptrdiff_t co = 0; co < Cout; ++co) {
      ptrdiff_t g = co / cog;
      for (ptrdiff_t oy = 0; oy < Ho; ++oy)
        for (ptrdiff_t ox = 0; ox < Wo; ++ox) {
          float s = 0;
          for (ptrdiff_t ci = 0; ci < cig; ++ci)
            for (ptrdiff_t ky = 0; ky < kh; ++ky)
              for (ptrdiff_t kx = 0; kx < kw; ++kx) {
                ptrdiff_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                if (iy < 0 || iy >= Hu || ix < 0 || ix >= Wu) continue;
                s += x[((b * Cin + g * cig + ci) * H + iy / up) * W + ix / up] * wload(w, dt, ((co * cig + ci) * kh + ky) * kw + kx);
              }
          y[((b * Cout + co) * Ho + oy) * Wo + ox] = act_fn(s + (bias ? bias[co] : 0.0f), act);
        }
    }
  return SANA_OK;
}

int linear_attention(sana_ctx* ctx, const sana_view4* q, const sana_view4* k, const sana_view4* v,
                     const sana_view4* out, ptrdiff_t B, ptrdiff_t N, ptrdiff_t heads, ptrdiff_t d, float eps) {
  float* kv = static_cast<float*>(scratch_alloc(sizeof(float) * (d + 1) * d));
  if (!kv) return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "linear_attention: out of memory");
  for (ptrdiff_t b = 0; b < B; ++b)
    for (ptrdiff_t h = 0; h < heads; ++h) {
      // kv[i][j] = Σ_n vp[n][i]·relu(k[n][j]) with vp = [v | 1]
      std::memset(kv, 0, sizeof(float) * (d + 1) * d);
      for (ptrdiff_t n = 0; n < N; ++n)
        for (ptrdiff_t j = 0; j < d; ++j) {
          float kj = std::fmax(at(k, b, n, h, j), 0.0f);
          for (ptrdiff_t i = 0; i < d; ++i) kv[i * d + j] += at(v, b, n, h, i) * kj;
          kv[d * d + j] += kj;
        }
      for (ptrdiff_t n = 0; n < N; ++n) {
        float den = 0;
        for (ptrdiff_t j = 0; j < d; ++j) den += kv[d * d + j] * std::fmax(at(q, b, n, h, j), 0.0f);
        for (ptrdiff_t i = 0; i < d; ++i) {
          float num = 0;
          for (ptrdiff_t j = 0; j < d; ++j) num += kv[i * d + j] * std::fmax(at(q, b, n, h, j), 0.0f);
          at(out, b, n, h, i) = num / (den + eps);
        }
      }
    }
  scratch_free(kv);
  return SANA_OK;
}

int attention(sana_ctx* ctx, const sana_view4* q, const sana_view4* k, const sana_view4* v, const float* key_bias,
              const sana_attention_params* p, const sana_view4* out) {
  float* logits = static_cast<float*>(scratch_alloc(sizeof(float) * p->len_kv));
  if (!logits) return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "attention: out of memory");
  ptrdiff_t group = p->heads_q / p->heads_kv;
  for (ptrdiff_t b = 0; b < p->batch; ++b)
    for (ptrdiff_t h = 0; h < p->heads_q; ++h)
      for (ptrdiff_t i = 0; i < p->len_q; ++i) {
        float mx = -INFINITY;
        for (ptrdiff_t j = 0; j < p->len_kv; ++j) {
          bool masked = (p->causal && j > i) || (p->window > 0 && i - j >= p->window);
          if (masked) { logits[j] = -INFINITY; continue; }
          float s = 0;
          for (ptrdiff_t e = 0; e < p->head_dim; ++e) s += at(q, b, i, h, e) * at(k, b, j, h / group, e);
          s *= p->scale;
          if (p->softcap > 0) s = p->softcap * std::tanh(s / p->softcap);
          if (key_bias) s += key_bias[b * p->len_kv + j];
          logits[j] = s;
          mx = std::fmax(mx, s);
        }
        float sum = 0;
        bool saturated = mx <= -FLT_MAX;  // every visible key masked by a −FLT_MAX bias: uniform over all keys
        for (ptrdiff_t j = 0; j < p->len_kv; ++j) {
          logits[j] = saturated ? 1.0f : logits[j] == -INFINITY ? 0.0f : std::exp(logits[j] - mx);
          sum += logits[j];
        }
        for (ptrdiff_t e = 0; e < p->head_dim_v; ++e) {
          float s = 0;
          for (ptrdiff_t j = 0; j < p->len_kv; ++j) s += logits[j] * at(v, b, j, h / group, e);
          at(out, b, i, h, e) = sum > 0 ? s / sum : 0.0f;
        }
      }
  scratch_free(logits);
  return SANA_OK;
}

int glumbconv(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, const void* w_inv,
              const float* b_inv, const void* w_dw, const float* b_dw, const void* w_point, int dt, ptrdiff_t F,
              ptrdiff_t Cout, int flags, float* y) {
  ptrdiff_t P = H * W, F2 = 2 * F;
  bool packed = flags & SANA_GEMM_PACKED_WEIGHT;
  float* t = static_cast<float*>(scratch_alloc(sizeof(float) * P * F2));
  float* u = static_cast<float*>(scratch_alloc(sizeof(float) * P * F));
  if (!t || !u) {
    scratch_free(t);
    scratch_free(u);
    return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "glumbconv: out of memory");
  }
  for (ptrdiff_t b = 0; b < B; ++b) {
    const float* xb = x + b * P * C;
    for (ptrdiff_t p = 0; p < P; ++p)  // [P, 2F]
      for (ptrdiff_t c = 0; c < F2; ++c) {
        float s = b_inv ? b_inv[c] : 0.0f;
        for (ptrdiff_t k = 0; k < C; ++k) s += xb[p * C + k] * lw(w_inv, dt, packed, C, c, k);
        t[p * F2 + c] = silu(s);
      }
    for (ptrdiff_t i = 0; i < H; ++i)
      for (ptrdiff_t j = 0; j < W; ++j)
        for (ptrdiff_t c = 0; c < F; ++c) {
          float a = b_dw ? b_dw[c] : 0.0f, g = b_dw ? b_dw[c + F] : 0.0f;
          for (ptrdiff_t dy = -1; dy <= 1; ++dy)
            for (ptrdiff_t dx = -1; dx <= 1; ++dx) {
              ptrdiff_t yy = i + dy, xx = j + dx;
              if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
              ptrdiff_t tap = (dy + 1) * 3 + dx + 1;
              a += t[(yy * W + xx) * F2 + c] * wload(w_dw, dt, c * 9 + tap);
              g += t[(yy * W + xx) * F2 + c + F] * wload(w_dw, dt, (c + F) * 9 + tap);
            }
          u[(i * W + j) * F + c] = a * silu(g);
        }
    for (ptrdiff_t p = 0; p < P; ++p)
      for (ptrdiff_t o = 0; o < Cout; ++o) {
        float s = 0;
        for (ptrdiff_t k = 0; k < F; ++k) s += u[p * F + k] * lw(w_point, dt, packed, F, o, k);
        y[(b * P + p) * Cout + o] = s;
      }
  }
  scratch_free(t);
  scratch_free(u);
  return SANA_OK;
}

int layer_norm(sana_ctx*, const float* x, ptrdiff_t rows, ptrdiff_t dim, float eps, const float* scale,
               const float* shift, ptrdiff_t rpb, float* y) {
  for (ptrdiff_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float mean = 0, var = 0;
    for (ptrdiff_t i = 0; i < dim; ++i) mean += xr[i];
    mean /= (float)dim;
    for (ptrdiff_t i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= (float)dim;
    float inv = 1.0f / std::sqrt(var + eps);
    for (ptrdiff_t i = 0; i < dim; ++i) {
      float v = (xr[i] - mean) * inv;
      if (scale) {
        ptrdiff_t b = r / rpb;
        v = v * (1.0f + scale[b * dim + i]) + shift[b * dim + i];
      }
      y[r * dim + i] = v;
    }
  }
  return SANA_OK;
}

int residual(sana_ctx*, const float* x, const float* y, ptrdiff_t rows, ptrdiff_t dim, const float* gate, ptrdiff_t rpb,
             float* out) {
  for (ptrdiff_t r = 0; r < rows; ++r)
    for (ptrdiff_t i = 0; i < dim; ++i)
      out[r * dim + i] = x[r * dim + i] + (gate ? gate[r / rpb * dim + i] : 1.0f) * y[r * dim + i];
  return SANA_OK;
}

int mul(sana_ctx*, const float* x, const float* y, ptrdiff_t n, float* out) {
  for (ptrdiff_t i = 0; i < n; ++i) out[i] = x[i] * y[i];
  return SANA_OK;
}

int rms_norm(sana_ctx*, const float* x, ptrdiff_t rows, ptrdiff_t dim, const float* weight, const float* bias,
             float eps, int mode, float* y) {
  for (ptrdiff_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float ss = 0;
    for (ptrdiff_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
    float inv = 1.0f / std::sqrt(ss / (float)dim + eps);
    for (ptrdiff_t i = 0; i < dim; ++i) {
      float v = xr[i] * inv;
      if (weight) v *= mode == SANA_RMS_ONE_PLUS_WEIGHT ? 1.0f + weight[i] : weight[i];
      if (bias) v += bias[i];
      y[r * dim + i] = v;
    }
  }
  return SANA_OK;
}

int rms_norm_channels(sana_ctx*, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, const float* weight,
                      const float* bias, float eps, float* y) {
  for (ptrdiff_t b = 0; b < B; ++b)
    for (ptrdiff_t p = 0; p < HW; ++p) {
      float ss = 0;
      for (ptrdiff_t c = 0; c < C; ++c) ss += x[(b * C + c) * HW + p] * x[(b * C + c) * HW + p];
      float inv = 1.0f / std::sqrt(ss / (float)C + eps);
      for (ptrdiff_t c = 0; c < C; ++c) {
        float v = x[(b * C + c) * HW + p] * inv;
        if (weight) v *= weight[c];
        if (bias) v += bias[c];
        y[(b * C + c) * HW + p] = v;
      }
    }
  return SANA_OK;
}

int pixel_shuffle(sana_ctx*, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t r,
                  ptrdiff_t repeat, int accumulate, float* y) {
  ptrdiff_t Cx = C * r * r / repeat;
  for (ptrdiff_t b = 0; b < B; ++b)
    for (ptrdiff_t c = 0; c < C; ++c)
      for (ptrdiff_t i = 0; i < H * r; ++i)
        for (ptrdiff_t j = 0; j < W * r; ++j) {
          float v = x[((b * Cx + (c * r * r + (i % r) * r + j % r) / repeat) * H + i / r) * W + j / r];
          float& o = y[((b * C + c) * H * r + i) * W * r + j];
          o = accumulate ? o + v : v;
        }
  return SANA_OK;
}

int pixel_unshuffle(sana_ctx*, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t r,
                    float* y) {
  ptrdiff_t Ho = H / r, Wo = W / r;
  for (ptrdiff_t b = 0; b < B; ++b)
    for (ptrdiff_t c = 0; c < C; ++c)
      for (ptrdiff_t i = 0; i < H; ++i)
        for (ptrdiff_t j = 0; j < W; ++j)
          y[((b * C * r * r + c * r * r + (i % r) * r + j % r) * Ho + i / r) * Wo + j / r] = x[((b * C + c) * H + i) * W + j];
  return SANA_OK;
}

int activation(sana_ctx*, const float* x, ptrdiff_t n, int act, float* y) {
  for (ptrdiff_t i = 0; i < n; ++i) y[i] = act_fn(x[i], act);
  return SANA_OK;
}

int rope(sana_ctx*, const sana_view4* x, ptrdiff_t B, ptrdiff_t L, ptrdiff_t heads, ptrdiff_t dim,
         const int32_t* positions, float theta, const sana_view4* out) {
  ptrdiff_t half = dim / 2;
  for (ptrdiff_t b = 0; b < B; ++b)
    for (ptrdiff_t l = 0; l < L; ++l) {
      float pos = positions ? (float)positions[l] : (float)l;
      for (ptrdiff_t h = 0; h < heads; ++h)
        for (ptrdiff_t i = 0; i < half; ++i) {
          float inv_freq = 1.0f / std::pow(theta, (float)(2 * i) / (float)dim);
          float ang = pos * inv_freq, c = std::cos(ang), s = std::sin(ang);
          float x1 = at(x, b, l, h, i), x2 = at(x, b, l, h, i + half);
          at(out, b, l, h, i) = x1 * c - x2 * s;
          at(out, b, l, h, i + half) = x2 * c + x1 * s;
        }
    }
  return SANA_OK;
}

SANA_EXACT_FP_BEGIN
int axpby(sana_ctx*, float a, const float* x, float b, const float* y, ptrdiff_t n, float* out) {
  for (ptrdiff_t i = 0; i < n; ++i) {
    float ax = a * x[i];
    out[i] = y ? ax + b * y[i] : ax;
  }
  return SANA_OK;
}

int cfg_combine(sana_ctx*, const float* u, const float* c, ptrdiff_t n, float scale, float* out) {
  for (ptrdiff_t i = 0; i < n; ++i) out[i] = u[i] + scale * (c[i] - u[i]);
  return SANA_OK;
}
SANA_EXACT_FP_END

int count_nonfinite(sana_ctx*, const float* x, ptrdiff_t n, float* count) {
  ptrdiff_t bad = 0;
  for (ptrdiff_t i = 0; i < n; ++i) bad += !std::isfinite(x[i]);
  count[0] = bad > (1 << 24) ? (float)(1 << 24) : (float)bad;
  return SANA_OK;
}

int adaln_modulation(sana_ctx*, const float* table, const float* emb, ptrdiff_t B, ptrdiff_t K, ptrdiff_t D,
                     ptrdiff_t row, ptrdiff_t chunk, float* out) {
  for (ptrdiff_t k = 0; k < K; ++k)
    for (ptrdiff_t b = 0; b < B; ++b)
      for (ptrdiff_t d = 0; d < D; ++d) out[(k * B + b) * D + d] = table[k * D + d] + emb[b * row + k * chunk + d];
  return SANA_OK;
}

// Calls f(pixel, token) for every element of a patch-size-p grid of h × w patches: pixel (b, c, i·p + r, j·p + s)
// of the NCHW map and channel (r·p + s)·C + c of token (b, i·w + j).
template <class F>
void each_patch_element(ptrdiff_t B, ptrdiff_t C, ptrdiff_t h, ptrdiff_t w, ptrdiff_t p, F f) {
  ptrdiff_t H = h * p, W = w * p;
  for (ptrdiff_t b = 0; b < B; ++b)
    for (ptrdiff_t i = 0; i < h; ++i)
      for (ptrdiff_t j = 0; j < w; ++j)
        for (ptrdiff_t r = 0; r < p; ++r)
          for (ptrdiff_t s = 0; s < p; ++s)
            for (ptrdiff_t c = 0; c < C; ++c)
              f(((b * C + c) * H + i * p + r) * W + j * p + s, ((b * h * w + i * w + j) * p * p + r * p + s) * C + c);
}

int patchify(sana_ctx*, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t p, float* y) {
  each_patch_element(B, C, H / p, W / p, p, [&](ptrdiff_t pixel, ptrdiff_t token) { y[token] = x[pixel]; });
  return SANA_OK;
}

int unpatchify(sana_ctx*, const float* x, ptrdiff_t B, ptrdiff_t h, ptrdiff_t w, ptrdiff_t p, ptrdiff_t C, float* y) {
  each_patch_element(B, C, h, w, p, [&](ptrdiff_t pixel, ptrdiff_t token) { y[pixel] = x[token]; });
  return SANA_OK;
}

int copy4(sana_ctx*, const sana_view4* src, const sana_view4* dst, ptrdiff_t B, ptrdiff_t N, ptrdiff_t H, ptrdiff_t D) {
  for (ptrdiff_t b = 0; b < B; ++b)
    for (ptrdiff_t n = 0; n < N; ++n)
      for (ptrdiff_t h = 0; h < H; ++h)
        for (ptrdiff_t d = 0; d < D; ++d) at(dst, b, n, h, d) = at(src, b, n, h, d);
  return SANA_OK;
}

int embedding(sana_ctx*, const void* table, int dt, ptrdiff_t V, ptrdiff_t D, const int32_t* ids, ptrdiff_t n,
              float scale, float* out) {
  for (ptrdiff_t i = 0; i < n; ++i)
    for (ptrdiff_t d = 0; d < D; ++d) out[i * D + d] = wload(table, dt, (ptrdiff_t)ids[i] * D + d) * scale;
  return SANA_OK;
}

int group_mean(sana_ctx*, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, ptrdiff_t groups, float* y) {
  ptrdiff_t g = C / groups;
  for (ptrdiff_t b = 0; b < B; ++b)
    for (ptrdiff_t k = 0; k < groups; ++k)
      for (ptrdiff_t p = 0; p < HW; ++p) {
        float s = 0;
        for (ptrdiff_t j = 0; j < g; ++j) s += x[(b * C + k * g + j) * HW + p];
        y[(b * groups + k) * HW + p] = s / (float)g;
      }
  return SANA_OK;
}

int evit_normalize(sana_ctx*, const float* x, ptrdiff_t B, ptrdiff_t heads, ptrdiff_t D, ptrdiff_t HW, float eps, float* y) {
  for (ptrdiff_t bh = 0; bh < B * heads; ++bh)
    for (ptrdiff_t d = 0; d < D; ++d)
      for (ptrdiff_t p = 0; p < HW; ++p)
        y[(bh * D + d) * HW + p] = x[(bh * (D + 1) + d) * HW + p] / (x[(bh * (D + 1) + D) * HW + p] + eps);
  return SANA_OK;
}

const KernelTable table = {"ref", SANA_KERNEL_OPS(SANA_TABLE_ROW)};
}  // namespace
}  // namespace ref

const KernelTable* ref_table() { return &ref::table; }

}  // namespace sana
