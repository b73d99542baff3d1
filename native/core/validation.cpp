// The validation layer of every op: each public sana_* function checks its arguments here, records a
// message naming the op and the argument, and only then calls the selected variant's kernel.
#include <cmath>

#include "internal.h"

using namespace sana;

namespace {
#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    if (!(cond)) return fail(ctx, SANA_ERR_INVALID_ARGUMENT, __VA_ARGS__); \
  } while (0)
#define NEED_CTX() \
  if (!ctx) return SANA_ERR_INVALID_ARGUMENT
#define POSITIVE(op, name) \
  CHECK((name) > 0, op ": Expected a positive size for " #name " but received %td", (ptrdiff_t)(name))
#define NONNULL(op, name) CHECK((name) != nullptr, op ": Expected a buffer for " #name " but received null")

// Products of sizes must fit comfortably in ptrdiff_t (and in 32-bit wasm addresses).
const ptrdiff_t kMaxElems = (ptrdiff_t)1 << (sizeof(void*) == 8 ? 46 : 30);

bool mul_ok(ptrdiff_t a, ptrdiff_t b, ptrdiff_t* out) {
  if (a < 0 || b < 0 || (a != 0 && b > kMaxElems / a)) return false;
  *out = a * b;
  return true;
}

int check_dtype(sana_ctx* ctx, const char* op, int dtype) {
  if (dtype != SANA_F32 && dtype != SANA_F16 && dtype != SANA_BF16)
    return fail(ctx, SANA_ERR_INVALID_ARGUMENT, "%s: Expected a dtype of 0 (f32), 1 (f16) or 2 (bf16) for w_dtype "
                "but received %d", op, dtype);
  return SANA_OK;
}

int check_act(sana_ctx* ctx, const char* op, int act) {
  if (act < SANA_ACT_NONE || act > SANA_ACT_GELU_TANH)
    return fail(ctx, SANA_ERR_INVALID_ARGUMENT, "%s: Expected an activation 0..3 for act but received %d", op, act);
  return SANA_OK;
}

int check_view(sana_ctx* ctx, const char* op, const char* name, const sana_view4* v) {
  if (!v || !v->data) return fail(ctx, SANA_ERR_INVALID_ARGUMENT, "%s: Expected a view for %s but received null",
                                  op, name);
  if (v->sb < 0 || v->sn < 0 || v->sh < 0 || v->sd < 0)
    return fail(ctx, SANA_ERR_INVALID_ARGUMENT, "%s: Expected non-negative strides for %s but received [%td, %td, "
                "%td, %td]", op, name, v->sb, v->sn, v->sh, v->sd);
  return SANA_OK;
}
}  // namespace

#define TRY(expr)                   \
  do {                              \
    int st_ = (expr);               \
    if (st_ != SANA_OK) return st_; \
  } while (0)

extern "C" {

ptrdiff_t sana_packed_weight_size(ptrdiff_t N, ptrdiff_t K, int w_dtype) {
  ptrdiff_t t;
  if (N <= 0 || K <= 0 || (w_dtype != SANA_F32 && w_dtype != SANA_BF16)) return -1;
  if (!mul_ok((N + 31) / 32 * 32, w_dtype == SANA_F32 ? K : SANA_PACKED_BF16_KP(K), &t)) return -1;
  return t;
}

int sana_pack_weight(sana_ctx* ctx, const void* w, int w_dtype, ptrdiff_t N, ptrdiff_t K, void* packed) {
  NEED_CTX();
  NONNULL("pack_weight", w);
  NONNULL("pack_weight", packed);
  POSITIVE("pack_weight", N);
  POSITIVE("pack_weight", K);
  CHECK(w_dtype == SANA_F32 || w_dtype == SANA_BF16, "pack_weight: Expected a dtype of 0 (f32) or 2 (bf16) for w_dtype but received %d", w_dtype);
  CHECK(sana_packed_weight_size(N, K, w_dtype) > 0, "pack_weight: Expected sizes whose product fits in memory for N, K but received %td, %td", N, K);
  if (const DeviceBinding* d = ctx_device_binding(ctx)) return d->pack_weight(ctx, w, w_dtype, N, K, packed);
  // destination order (SANA_PACKED_*_INDEX): sequential writes
  if (w_dtype == SANA_F32) {
    const float* src = static_cast<const float*>(w);
    float* dst = static_cast<float*>(packed);
    for (ptrdiff_t p0 = 0; p0 < N; p0 += 32)
      for (ptrdiff_t k = 0; k < K; ++k)
        for (ptrdiff_t j = 0; j < 32; ++j) *dst++ = p0 + j < N ? src[(p0 + j) * K + k] : 0.0f;
  } else {
    const uint16_t* src = static_cast<const uint16_t*>(w);
    uint16_t* dst = static_cast<uint16_t*>(packed);
    for (ptrdiff_t p0 = 0; p0 < N; p0 += 32)
      for (ptrdiff_t k = 0; k < SANA_PACKED_BF16_KP(K); k += 2)
        for (ptrdiff_t j = 0; j < 32; ++j)
          for (ptrdiff_t h = 0; h < 2; ++h) *dst++ = p0 + j < N && k + h < K ? src[(p0 + j) * K + k + h] : 0;
  }
  return SANA_OK;
}

int sana_linear(sana_ctx* ctx, const float* x, ptrdiff_t M, ptrdiff_t K, const void* w, int w_dtype, ptrdiff_t N,
                const float* bias, int act, int flags, float* y) {
  NEED_CTX();
  NONNULL("linear", x);
  NONNULL("linear", w);
  NONNULL("linear", y);
  POSITIVE("linear", M);
  POSITIVE("linear", K);
  POSITIVE("linear", N);
  ptrdiff_t t;
  CHECK(mul_ok(M, K, &t) && mul_ok(N, K, &t) && mul_ok(M, N, &t), "linear: Expected sizes whose products fit in "
        "memory for M, N, K but received %td, %td, %td", M, N, K);
  TRY(check_dtype(ctx, "linear", w_dtype));
  TRY(check_act(ctx, "linear", act));
  CHECK((flags & ~(SANA_GEMM_FAST_BF16 | SANA_GEMM_PACKED_WEIGHT)) == 0, "linear: Expected flags 0..3 for flags but received %d", flags);
  CHECK(!(flags & SANA_GEMM_FAST_BF16) || w_dtype == SANA_BF16,
        "linear: Expected bf16 weights for flags=FAST_BF16 but received w_dtype %d", w_dtype);
  CHECK(!(flags & SANA_GEMM_PACKED_WEIGHT) || w_dtype != SANA_F16,
        "linear: Expected f32 or bf16 weights for flags=PACKED_WEIGHT but received w_dtype %d", w_dtype);
  return ctx_table(ctx)->linear(ctx, x, M, K, w, w_dtype, N, bias, act, flags, y);
}

int sana_conv2d(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t Cin, ptrdiff_t H, ptrdiff_t W, const void* w,
                int w_dtype, ptrdiff_t Cout, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t stride, ptrdiff_t pad,
                ptrdiff_t groups, ptrdiff_t up, const float* bias, int act, float* y) {
  NEED_CTX();
  NONNULL("conv2d", x);
  NONNULL("conv2d", w);
  NONNULL("conv2d", y);
  POSITIVE("conv2d", B);
  POSITIVE("conv2d", Cin);
  POSITIVE("conv2d", H);
  POSITIVE("conv2d", W);
  POSITIVE("conv2d", Cout);
  POSITIVE("conv2d", kh);
  POSITIVE("conv2d", kw);
  POSITIVE("conv2d", stride);
  POSITIVE("conv2d", groups);
  CHECK(pad >= 0 && pad < 64, "conv2d: Expected 0..63 for pad but received %td", pad);
  CHECK(kh <= 15 && kw <= 15, "conv2d: Expected kernel sizes up to 15 for kh, kw but received %td, %td", kh, kw);
  CHECK(Cin % groups == 0 && Cout % groups == 0, "conv2d: Expected a divisor of Cin (%td) and Cout (%td) for groups "
        "but received %td", Cin, Cout, groups);
  CHECK(up == 1 || (up == 2 && groups == 1), "conv2d: Expected 1, or 2 with groups = 1, for up but received %td", up);
  ptrdiff_t t, u, Hu, Wu;
  CHECK(mul_ok(H, up, &Hu) && mul_ok(W, up, &Wu), "conv2d: Expected sizes whose products fit in memory but received "
        "H=%td W=%td up=%td", H, W, up);
  CHECK(Hu + 2 * pad >= kh && Wu + 2 * pad >= kw, "conv2d: Expected an input of at least the kernel size for H, W "
        "(with pad %td, upsampled %td×) but received %td, %td", pad, up, H, W);
  CHECK(mul_ok(B, Cin, &t) && mul_ok(t, H, &t) && mul_ok(t, W, &t) && mul_ok(B, Cout, &u) && mul_ok(u, Hu, &u) &&
            mul_ok(u, Wu, &u) && mul_ok(Cout, Cin, &t) && mul_ok(t, kh * kw, &t),
        "conv2d: Expected sizes whose products fit in memory but received B=%td Cin=%td H=%td W=%td Cout=%td", B, Cin,
        H, W, Cout);
  TRY(check_dtype(ctx, "conv2d", w_dtype));
  TRY(check_act(ctx, "conv2d", act));
  return ctx_table(ctx)->conv2d(ctx, x, B, Cin, H, W, w, w_dtype, Cout, kh, kw, stride, pad, groups, up, bias, act, y);
}

int sana_linear_attention(sana_ctx* ctx, const sana_view4* q, const sana_view4* k, const sana_view4* v,
                          const sana_view4* out, ptrdiff_t B, ptrdiff_t N, ptrdiff_t heads, ptrdiff_t head_dim,
                          float eps) {
  NEED_CTX();
  TRY(check_view(ctx, "linear_attention", "q", q));
  TRY(check_view(ctx, "linear_attention", "k", k));
  TRY(check_view(ctx, "linear_attention", "v", v));
  TRY(check_view(ctx, "linear_attention", "out", out));
  POSITIVE("linear_attention", B);
  POSITIVE("linear_attention", N);
  POSITIVE("linear_attention", heads);
  POSITIVE("linear_attention", head_dim);
  CHECK(head_dim <= 256, "linear_attention: Expected 1..256 for head_dim but received %td", head_dim);
  CHECK(eps >= 0 && eps < 1, "linear_attention: Expected 0 <= eps < 1 for eps but received %g", (double)eps);
  return ctx_table(ctx)->linear_attention(ctx, q, k, v, out, B, N, heads, head_dim, eps);
}

int sana_attention(sana_ctx* ctx, const sana_view4* q, const sana_view4* k, const sana_view4* v,
                   const float* key_bias, const sana_attention_params* p, const sana_view4* out) {
  NEED_CTX();
  CHECK(p != nullptr, "attention: Expected parameters for p but received null");
  TRY(check_view(ctx, "attention", "q", q));
  TRY(check_view(ctx, "attention", "k", k));
  TRY(check_view(ctx, "attention", "v", v));
  TRY(check_view(ctx, "attention", "out", out));
  CHECK(p->batch > 0, "attention: Expected a positive size for batch but received %td", p->batch);
  CHECK(p->len_q > 0, "attention: Expected a positive size for len_q but received %td", p->len_q);
  CHECK(p->len_kv > 0, "attention: Expected a positive size for len_kv but received %td", p->len_kv);
  CHECK(p->heads_kv > 0, "attention: Expected a positive size for heads_kv but received %td", p->heads_kv);
  CHECK(p->heads_q > 0 && p->heads_q % p->heads_kv == 0,
        "attention: Expected a positive multiple of heads_kv (%td) for heads_q but received %td", p->heads_kv,
        p->heads_q);
  CHECK(p->head_dim > 0 && p->head_dim <= 1024, "attention: Expected 1..1024 for head_dim but received %td",
        p->head_dim);
  CHECK(p->head_dim_v > 0 && p->head_dim_v <= 1024, "attention: Expected 1..1024 for head_dim_v but received %td",
        p->head_dim_v);
  CHECK(p->scale > 0 && p->scale < 1e6f, "attention: Expected a positive finite value for scale but received %g",
        (double)p->scale);
  CHECK(p->softcap >= 0 && p->softcap < 1e30f, "attention: Expected 0 (off) or a positive value for softcap but "
        "received %g", (double)p->softcap);
  CHECK(p->causal == 0 || p->causal == 1, "attention: Expected 0 or 1 for causal but received %d", p->causal);
  CHECK(!p->causal || p->len_q == p->len_kv, "attention: Expected len_q == len_kv for causal but received %td and "
        "%td", p->len_q, p->len_kv);
  CHECK(p->window >= 0, "attention: Expected 0 (off) or a positive value for window but received %td", p->window);
  return ctx_table(ctx)->attention(ctx, q, k, v, key_bias, p, out);
}

int sana_glumbconv(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C,
                   const void* w_inv, const float* b_inv, const void* w_dw, const float* b_dw, const void* w_point,
                   int w_dtype, ptrdiff_t F, ptrdiff_t Cout, int flags, float* y) {
  NEED_CTX();
  NONNULL("glumbconv", x);
  NONNULL("glumbconv", w_inv);
  NONNULL("glumbconv", w_dw);
  NONNULL("glumbconv", w_point);
  NONNULL("glumbconv", y);
  POSITIVE("glumbconv", B);
  POSITIVE("glumbconv", H);
  POSITIVE("glumbconv", W);
  POSITIVE("glumbconv", C);
  POSITIVE("glumbconv", F);
  POSITIVE("glumbconv", Cout);
  ptrdiff_t t;
  CHECK(mul_ok(B * H, W, &t) && mul_ok(t, 2 * F, &t) && mul_ok(2 * F, C, &t) && mul_ok(Cout, F, &t),
        "glumbconv: Expected sizes whose products fit in memory but received B=%td H=%td W=%td C=%td F=%td", B, H, W,
        C, F);
  TRY(check_dtype(ctx, "glumbconv", w_dtype));
  CHECK((flags & ~(SANA_GEMM_FAST_BF16 | SANA_GEMM_PACKED_WEIGHT)) == 0, "glumbconv: Expected flags 0..3 for flags but received %d", flags);
  CHECK(!(flags & SANA_GEMM_FAST_BF16) || w_dtype == SANA_BF16,
        "glumbconv: Expected bf16 weights for flags=FAST_BF16 but received w_dtype %d", w_dtype);
  CHECK(!(flags & SANA_GEMM_PACKED_WEIGHT) || w_dtype != SANA_F16,
        "glumbconv: Expected f32 or bf16 weights for flags=PACKED_WEIGHT but received w_dtype %d", w_dtype);
  return ctx_table(ctx)->glumbconv(ctx, x, B, H, W, C, w_inv, b_inv, w_dw, b_dw, w_point, w_dtype, F, Cout, flags, y);
}

int sana_layer_norm(sana_ctx* ctx, const float* x, ptrdiff_t rows, ptrdiff_t dim, float eps, const float* scale,
                    const float* shift, ptrdiff_t rows_per_batch, float* y) {
  NEED_CTX();
  NONNULL("layer_norm", x);
  NONNULL("layer_norm", y);
  POSITIVE("layer_norm", rows);
  POSITIVE("layer_norm", dim);
  CHECK(eps > 0 && eps < 1, "layer_norm: Expected 0 < eps < 1 for eps but received %g", (double)eps);
  CHECK((scale == nullptr) == (shift == nullptr), "layer_norm: Expected both or neither of scale and shift for "
        "scale/shift but received only %s", scale ? "scale" : "shift");
  CHECK(!scale || (rows_per_batch > 0 && rows % rows_per_batch == 0), "layer_norm: Expected a positive divisor of "
        "rows (%td) for rows_per_batch but received %td", rows, rows_per_batch);
  return ctx_table(ctx)->layer_norm(ctx, x, rows, dim, eps, scale, shift, rows_per_batch, y);
}

int sana_residual(sana_ctx* ctx, const float* x, const float* y, ptrdiff_t rows, ptrdiff_t dim, const float* gate,
                  ptrdiff_t rows_per_batch, float* out) {
  NEED_CTX();
  NONNULL("residual", x);
  NONNULL("residual", y);
  NONNULL("residual", out);
  POSITIVE("residual", rows);
  POSITIVE("residual", dim);
  CHECK(!gate || (rows_per_batch > 0 && rows % rows_per_batch == 0), "residual: Expected a positive divisor of rows "
        "(%td) for rows_per_batch but received %td", rows, rows_per_batch);
  CHECK(out == x || out + rows * dim <= x || x + rows * dim <= out, "residual: Expected out to be x or not to overlap it");
  return ctx_table(ctx)->residual(ctx, x, y, rows, dim, gate, rows_per_batch, out);
}

int sana_mul(sana_ctx* ctx, const float* x, const float* y, ptrdiff_t n, float* out) {
  NEED_CTX();
  NONNULL("mul", x);
  NONNULL("mul", y);
  NONNULL("mul", out);
  POSITIVE("mul", n);
  return ctx_table(ctx)->mul(ctx, x, y, n, out);
}

int sana_rms_norm(sana_ctx* ctx, const float* x, ptrdiff_t rows, ptrdiff_t dim, const float* weight,
                  const float* bias, float eps, int mode, float* y) {
  NEED_CTX();
  NONNULL("rms_norm", x);
  NONNULL("rms_norm", y);
  POSITIVE("rms_norm", rows);
  POSITIVE("rms_norm", dim);
  CHECK(eps > 0 && eps < 1, "rms_norm: Expected 0 < eps < 1 for eps but received %g", (double)eps);
  CHECK(mode == SANA_RMS_WEIGHT || mode == SANA_RMS_ONE_PLUS_WEIGHT,
        "rms_norm: Expected 0 (weight) or 1 (one plus weight) for mode but received %d", mode);
  CHECK(mode == SANA_RMS_WEIGHT || weight, "rms_norm: Expected a weight for mode=1 but received null");
  return ctx_table(ctx)->rms_norm(ctx, x, rows, dim, weight, bias, eps, mode, y);
}

int sana_rms_norm_channels(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW,
                           const float* weight, const float* bias, float eps, float* y) {
  NEED_CTX();
  NONNULL("rms_norm_channels", x);
  NONNULL("rms_norm_channels", y);
  POSITIVE("rms_norm_channels", B);
  POSITIVE("rms_norm_channels", C);
  POSITIVE("rms_norm_channels", HW);
  CHECK(eps > 0 && eps < 1, "rms_norm_channels: Expected 0 < eps < 1 for eps but received %g", (double)eps);
  return ctx_table(ctx)->rms_norm_channels(ctx, x, B, C, HW, weight, bias, eps, y);
}

int sana_pixel_shuffle(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                       ptrdiff_t r, ptrdiff_t repeat, int accumulate, float* y) {
  NEED_CTX();
  NONNULL("pixel_shuffle", x);
  NONNULL("pixel_shuffle", y);
  POSITIVE("pixel_shuffle", B);
  POSITIVE("pixel_shuffle", C);
  POSITIVE("pixel_shuffle", H);
  POSITIVE("pixel_shuffle", W);
  CHECK(r > 0 && r <= 64, "pixel_shuffle: Expected 1..64 for r but received %td", r);
  ptrdiff_t Cr;
  CHECK(mul_ok(C, r * r, &Cr), "pixel_shuffle: Expected sizes whose products fit in memory but received C=%td r=%td", C, r);
  CHECK(repeat > 0 && repeat <= Cr && Cr % repeat == 0,
        "pixel_shuffle: Expected a divisor of C·r² = %td for repeat but received %td", Cr, repeat);
  CHECK(accumulate == 0 || accumulate == 1, "pixel_shuffle: Expected 0 or 1 for accumulate but received %d", accumulate);
  return ctx_table(ctx)->pixel_shuffle(ctx, x, B, C, H, W, r, repeat, accumulate, y);
}

int sana_pixel_unshuffle(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                         ptrdiff_t r, float* y) {
  NEED_CTX();
  NONNULL("pixel_unshuffle", x);
  NONNULL("pixel_unshuffle", y);
  POSITIVE("pixel_unshuffle", B);
  POSITIVE("pixel_unshuffle", C);
  POSITIVE("pixel_unshuffle", H);
  POSITIVE("pixel_unshuffle", W);
  CHECK(r > 0 && r <= 64, "pixel_unshuffle: Expected 1..64 for r but received %td", r);
  CHECK(H % r == 0 && W % r == 0, "pixel_unshuffle: Expected H and W divisible by r=%td for H, W but received %td, "
        "%td", r, H, W);
  return ctx_table(ctx)->pixel_unshuffle(ctx, x, B, C, H, W, r, y);
}

int sana_activation(sana_ctx* ctx, const float* x, ptrdiff_t n, int act, float* y) {
  NEED_CTX();
  NONNULL("activation", x);
  NONNULL("activation", y);
  POSITIVE("activation", n);
  TRY(check_act(ctx, "activation", act));
  return ctx_table(ctx)->activation(ctx, x, n, act, y);
}

int sana_rope(sana_ctx* ctx, const sana_view4* x, ptrdiff_t B, ptrdiff_t L, ptrdiff_t heads, ptrdiff_t dim,
              const int32_t* positions, float theta, const sana_view4* out) {
  NEED_CTX();
  TRY(check_view(ctx, "rope", "x", x));
  TRY(check_view(ctx, "rope", "out", out));
  POSITIVE("rope", B);
  POSITIVE("rope", L);
  POSITIVE("rope", heads);
  POSITIVE("rope", dim);
  CHECK(dim % 2 == 0 && dim <= 4096, "rope: Expected an even size up to 4096 for dim but received %td", dim);
  CHECK(theta > 1, "rope: Expected a base > 1 for theta but received %g", (double)theta);
  return ctx_table(ctx)->rope(ctx, x, B, L, heads, dim, positions, theta, out);
}

int sana_axpby(sana_ctx* ctx, float a, const float* x, float b, const float* y, ptrdiff_t n, float* out) {
  NEED_CTX();
  NONNULL("axpby", x);
  NONNULL("axpby", out);
  POSITIVE("axpby", n);
  CHECK(std::isfinite(a) && std::isfinite(b), "axpby: Expected finite coefficients for a, b but received %g, %g",
        (double)a, (double)b);
  return ctx_table(ctx)->axpby(ctx, a, x, b, y, n, out);
}

int sana_cfg_combine(sana_ctx* ctx, const float* uncond, const float* cond, ptrdiff_t n, float scale, float* out) {
  NEED_CTX();
  NONNULL("cfg_combine", uncond);
  NONNULL("cfg_combine", cond);
  NONNULL("cfg_combine", out);
  POSITIVE("cfg_combine", n);
  CHECK(std::isfinite(scale), "cfg_combine: Expected a finite number for scale but received %g", (double)scale);
  return ctx_table(ctx)->cfg_combine(ctx, uncond, cond, n, scale, out);
}

int sana_count_nonfinite(sana_ctx* ctx, const float* x, ptrdiff_t n, float* count) {
  NEED_CTX();
  NONNULL("count_nonfinite", x);
  NONNULL("count_nonfinite", count);
  POSITIVE("count_nonfinite", n);
  return ctx_table(ctx)->count_nonfinite(ctx, x, n, count);
}

int sana_adaln_modulation(sana_ctx* ctx, const float* table, const float* emb, ptrdiff_t B, ptrdiff_t K, ptrdiff_t D,
                          ptrdiff_t emb_row_stride, ptrdiff_t emb_chunk_stride, float* out) {
  NEED_CTX();
  NONNULL("adaln_modulation", table);
  NONNULL("adaln_modulation", emb);
  NONNULL("adaln_modulation", out);
  POSITIVE("adaln_modulation", B);
  POSITIVE("adaln_modulation", K);
  POSITIVE("adaln_modulation", D);
  ptrdiff_t t;
  CHECK(mul_ok(B, K, &t) && mul_ok(t, D, &t), "adaln_modulation: Expected sizes whose product fits in memory for B, K, D");
  CHECK(emb_chunk_stride >= 0 && emb_row_stride >= (K - 1) * emb_chunk_stride + D, "adaln_modulation: Expected a "
        "row stride of at least (K − 1)·chunk stride + D for emb_row_stride but received %td (chunk stride %td)",
        emb_row_stride, emb_chunk_stride);
  return ctx_table(ctx)->adaln_modulation(ctx, table, emb, B, K, D, emb_row_stride, emb_chunk_stride, out);
}

int sana_patchify(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t p, float* y) {
  NEED_CTX();
  NONNULL("patchify", x);
  NONNULL("patchify", y);
  POSITIVE("patchify", B);
  POSITIVE("patchify", C);
  POSITIVE("patchify", H);
  POSITIVE("patchify", W);
  CHECK(p > 0 && H % p == 0 && W % p == 0, "patchify: Expected a patch size dividing H=%td and W=%td for p but "
        "received %td", H, W, p);
  return ctx_table(ctx)->patchify(ctx, x, B, C, H, W, p, y);
}

int sana_unpatchify(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t h, ptrdiff_t w, ptrdiff_t p, ptrdiff_t C, float* y) {
  NEED_CTX();
  NONNULL("unpatchify", x);
  NONNULL("unpatchify", y);
  POSITIVE("unpatchify", B);
  POSITIVE("unpatchify", h);
  POSITIVE("unpatchify", w);
  POSITIVE("unpatchify", p);
  POSITIVE("unpatchify", C);
  return ctx_table(ctx)->unpatchify(ctx, x, B, h, w, p, C, y);
}

int sana_copy4(sana_ctx* ctx, const sana_view4* src, const sana_view4* dst, ptrdiff_t B, ptrdiff_t N, ptrdiff_t H,
               ptrdiff_t D) {
  NEED_CTX();
  TRY(check_view(ctx, "copy4", "src", src));
  TRY(check_view(ctx, "copy4", "dst", dst));
  POSITIVE("copy4", B);
  POSITIVE("copy4", N);
  POSITIVE("copy4", H);
  POSITIVE("copy4", D);
  return ctx_table(ctx)->copy4(ctx, src, dst, B, N, H, D);
}

int sana_embedding(sana_ctx* ctx, const void* table, int dtype, ptrdiff_t V, ptrdiff_t D, const int32_t* ids,
                   ptrdiff_t n, float scale, float* out) {
  NEED_CTX();
  NONNULL("embedding", table);
  NONNULL("embedding", ids);
  NONNULL("embedding", out);
  TRY(check_dtype(ctx, "embedding", dtype));
  POSITIVE("embedding", V);
  POSITIVE("embedding", D);
  POSITIVE("embedding", n);
  CHECK(std::isfinite(scale), "embedding: Expected a finite number for scale but received %g", (double)scale);
  for (ptrdiff_t i = 0; !ctx_device_binding(ctx) && i < n; ++i)
    CHECK(ids[i] >= 0 && ids[i] < V, "embedding: Expected token ids in [0, %td) for ids but received %d at position %td",
          V, (int)ids[i], i);
  return ctx_table(ctx)->embedding(ctx, table, dtype, V, D, ids, n, scale, out);
}

int sana_group_mean(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, ptrdiff_t groups, float* y) {
  NEED_CTX();
  NONNULL("group_mean", x);
  NONNULL("group_mean", y);
  POSITIVE("group_mean", B);
  POSITIVE("group_mean", C);
  POSITIVE("group_mean", HW);
  CHECK(groups > 0 && C % groups == 0, "group_mean: Expected a divisor of C=%td for groups but received %td", C, groups);
  return ctx_table(ctx)->group_mean(ctx, x, B, C, HW, groups, y);
}

int sana_evit_normalize(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t heads, ptrdiff_t D, ptrdiff_t HW, float eps,
                        float* y) {
  NEED_CTX();
  NONNULL("evit_normalize", x);
  NONNULL("evit_normalize", y);
  POSITIVE("evit_normalize", B);
  POSITIVE("evit_normalize", heads);
  POSITIVE("evit_normalize", D);
  POSITIVE("evit_normalize", HW);
  CHECK(eps >= 0 && eps < 1, "evit_normalize: Expected 0 <= eps < 1 for eps but received %g", (double)eps);
  return ctx_table(ctx)->evit_normalize(ctx, x, B, heads, D, HW, eps, y);
}

}  // extern "C"
