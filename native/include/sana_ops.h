/*
 * sana_ops.h — the one C ABI of sana-node's compute kernels.
 *
 * Every backend implements exactly these functions: the scalar reference (native/kernels/ref), the x86
 * variants chosen at run time from cpuid (native/kernels/cpu), and the WASM SIMD128 build of the same
 * sources (wasm/). The N-API layer and the WASM glue are thin callers of this header.
 *
 * Conventions
 *  - A context (sana_ctx) owns the thread pool, the selected kernel variant and the last error message.
 *    One context per thread of JavaScript (each worker thread creates its own). A context is bound to one
 *    device: every pointer passed with it lives in that device's memory (host memory for cpu/wasm; a CUDA
 *    context will also carry its stream, so the op signatures stay as they are).
 *  - Activations are float32. Weights (`const void* w` + a sana_dtype) are read in their stored dtype
 *    (fp32, fp16 or bf16) and accumulated in fp32; they are never converted as a whole.
 *  - Sizes and strides are ptrdiff_t, in elements (not bytes). Linear weights are [out, in] row-major;
 *    conv weights are [Cout, Cin/groups, kh, kw]; images are NCHW; token tensors are [B, N, C] row-major.
 *  - Every function returns a sana_status. On failure nothing is aborted: the status says what kind of
 *    failure and sana_ctx_last_error() names the op and the argument. Output buffers may then hold garbage.
 *  - Outputs never alias inputs unless the op says so.
 */
#ifndef SANA_OPS_H
#define SANA_OPS_H

#include <stddef.h>
#include <stdint.h>

/* Exported symbols (EMSCRIPTEN_KEEPALIVE keeps them in the wasm module). Included outside extern "C":
 * emscripten's header holds C++ templates. */
#if defined(__EMSCRIPTEN__)
#include <emscripten/emscripten.h>
#define SANA_API EMSCRIPTEN_KEEPALIVE
#elif defined(_WIN32)
#define SANA_API
#else
#define SANA_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif


typedef enum sana_status {
  SANA_OK = 0,
  SANA_ERR_INVALID_ARGUMENT = 1, /* a shape, size, stride, dtype or option is out of range */
  SANA_ERR_OUT_OF_MEMORY = 2,    /* scratch allocation failed */
  SANA_ERR_UNSUPPORTED = 3,      /* valid request this build or CPU cannot serve (e.g. a variant) */
  SANA_ERR_INTERNAL = 4
} sana_status;

typedef enum sana_dtype { SANA_F32 = 0, SANA_F16 = 1, SANA_BF16 = 2 } sana_dtype;

typedef enum sana_act {
  SANA_ACT_NONE = 0,
  SANA_ACT_RELU = 1,
  SANA_ACT_SILU = 2,
  SANA_ACT_GELU_TANH = 3 /* 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) */
} sana_act;

typedef enum sana_variant {
  SANA_VARIANT_REF = 0,        /* scalar reference: the specification, slow */
  SANA_VARIANT_BASELINE = 1,   /* x86-64 baseline (SSE2), 4-wide */
  SANA_VARIANT_AVX2 = 2,       /* AVX2 + FMA + F16C, 8-wide */
  SANA_VARIANT_AVX512 = 3,     /* AVX-512 F/BW/DQ/VL, 16-wide */
  SANA_VARIANT_AVX512BF16 = 4, /* AVX-512 + BF16 (vdpbf16ps for the fast bf16 GEMM) */
  SANA_VARIANT_WASM_SIMD128 = 5,
  SANA_VARIANT_AMX_BF16 = 6,   /* AVX-512-BF16 + AMX tiles: the fast bf16 GEMM on tdpbf16ps */
  SANA_VARIANT_CUDA = 7,       /* the CUDA kernels of a device context (native/kernels/cuda/sana_cuda.h) */
  SANA_VARIANT_COUNT = 8
} sana_variant;

/* GEMM flags */
#define SANA_GEMM_FAST_BF16 1 /* bf16 weights only: round activations to bf16 at the GEMM input and use
                                 bf16 dot products (vdpbf16ps; AMX tdpbf16ps in amx-bf16); fp32
                                 accumulation. Ignored by variants without bf16 dot products (they compute
                                 the exact fp32 product). */

#define SANA_GEMM_PACKED_WEIGHT 2 /* the f32 or bf16 weights come from sana_pack_weight: no per-call packing of B */

/* Normalisation modes */
#define SANA_RMS_WEIGHT 0          /* y = x·rsqrt(mean(x²)+eps)·w        (diffusers RMSNorm) */
#define SANA_RMS_ONE_PLUS_WEIGHT 1 /* y = x·rsqrt(mean(x²)+eps)·(1 + w)  (Gemma-2 RMSNorm)  */

typedef struct sana_ctx sana_ctx;

/* A strided 4-D float view [b, n, h, d]: element (b, n, h, d) is data[b·sb + n·sn + h·sh + d·sd].
 * Used by the attention ops so q/k/v can be slices of fused projections without copies. */
typedef struct sana_view4 {
  float* data;
  ptrdiff_t sb, sn, sh, sd;
} sana_view4;

/* ---- context ---------------------------------------------------------------------------------------- */
SANA_API sana_ctx* sana_ctx_create(int threads); /* threads <= 0: all available cores. NULL on OOM. */
SANA_API void sana_ctx_destroy(sana_ctx* ctx);
SANA_API int sana_ctx_set_threads(sana_ctx* ctx, int threads);
SANA_API int sana_ctx_threads(const sana_ctx* ctx);
SANA_API int sana_ctx_set_variant(sana_ctx* ctx, int variant); /* SANA_ERR_UNSUPPORTED if the CPU lacks it */
SANA_API int sana_ctx_variant(const sana_ctx* ctx);
SANA_API const char* sana_ctx_last_error(const sana_ctx* ctx);
SANA_API int sana_variant_supported(int variant);
SANA_API int sana_best_variant(void);
SANA_API const char* sana_variant_name(int variant);
SANA_API int sana_hardware_threads(void);

/* ---- ops -------------------------------------------------------------------------------------------- */

/* Repacks a linear weight w[N,K] (f32 or bf16) once, at load, into the layout the GEMM microkernels read in
 * place: panels of 32 output columns, k-major.
 *   f32:  packed[(n/32·K + k)·32 + n%32] = w[n,k]                       (SANA_PACKED_F32_INDEX)
 *   bf16: k-pairs, K padded with zeros to Kp = K rounded up to 32 (AMX's k-step):
 *         packed[(n/32)·32·Kp + (k/2)·64 + (n%32)·2 + k%2] = w[n,k]   (SANA_PACKED_BF16_INDEX)
 * Columns n ≥ N are zero. packed holds sana_packed_weight_size(N, K, w_dtype) elements of w's dtype.
 * Used with SANA_GEMM_PACKED_WEIGHT; f16 weights are not packed. */
#define SANA_PACKED_F32_INDEX(n, k, K) (((n) / 32 * (K) + (k)) * 32 + (n) % 32)
#define SANA_PACKED_BF16_KP(K) (((K) + 31) / 32 * 32)
#define SANA_PACKED_BF16_INDEX(n, k, K) \
  ((n) / 32 * 32 * SANA_PACKED_BF16_KP(K) + (k) / 2 * 64 + (n) % 32 * 2 + (k) % 2)
SANA_API ptrdiff_t sana_packed_weight_size(ptrdiff_t N, ptrdiff_t K, int w_dtype);
SANA_API int sana_pack_weight(sana_ctx* ctx, const void* w, int w_dtype, ptrdiff_t N, ptrdiff_t K, void* packed);

/* y[M,N] = act(x[M,K] · w[N,K]ᵀ + bias[N]); bias may be NULL. */
SANA_API int sana_linear(sana_ctx* ctx, const float* x, ptrdiff_t M, ptrdiff_t K, const void* w, int w_dtype,
                         ptrdiff_t N, const float* bias, int act, int flags, float* y);

/* y[B,Cout,Ho,Wo] = act(conv2d(x↑[B,Cin,H·up,W·up], w[Cout,Cin/groups,kh,kw]) + bias[Cout]), zero padding,
 * Ho = (H·up + 2·pad − kh)/stride + 1 (likewise Wo), where x↑ is x[B,Cin,H,W] upsampled by nearest neighbour
 * (up = 1: x itself; up = 2 with groups = 1: DC-AE's interpolating up-block, without the 4× map). bias may be
 * NULL. */
SANA_API int sana_conv2d(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t Cin, ptrdiff_t H, ptrdiff_t W,
                         const void* w, int w_dtype, ptrdiff_t Cout, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t stride,
                         ptrdiff_t pad, ptrdiff_t groups, ptrdiff_t up, const float* bias, int act, float* y);

/* Sana ReLU linear attention over views [B, N, heads, head_dim]:
 *   out_n = Σ_m v_m (relu(k_m)·relu(q_n)) / (Σ_m relu(k_m)·relu(q_n) + eps), state in fp32. */
SANA_API int sana_linear_attention(sana_ctx* ctx, const sana_view4* q, const sana_view4* k, const sana_view4* v,
                                   const sana_view4* out, ptrdiff_t B, ptrdiff_t N, ptrdiff_t heads,
                                   ptrdiff_t head_dim, float eps);

/* Softmax attention. q [B, Lq, Hq, D], k [B, Lk, Hkv, D], v [B, Lk, Hkv, Dv], out [B, Lq, Hq, Dv];
 * query head h reads kv head h / (Hq/Hkv) (GQA). logits = q·k·scale; if softcap > 0:
 * logits = softcap·tanh(logits/softcap); then + key_bias[b, key] (may be NULL); causal masks key > query
 * (needs Lq == Lk); window > 0 masks query − key ≥ window. Masked keys get weight 0.
 * A query whose every visible key carries a bias that saturates at −FLT_MAX (transformers' padding value)
 * attends uniformly to all Lk keys: that is what additive −FLT_MAX masks produce, since every logit of
 * the row then rounds to the same −FLT_MAX. */
typedef struct sana_attention_params {
  ptrdiff_t batch, len_q, len_kv, heads_q, heads_kv, head_dim, head_dim_v;
  float scale, softcap;
  int causal;
  ptrdiff_t window;
} sana_attention_params;
SANA_API int sana_attention(sana_ctx* ctx, const sana_view4* q, const sana_view4* k, const sana_view4* v,
                            const float* key_bias, const sana_attention_params* p, const sana_view4* out);

/* Mix-FFN (GLUMBConv, transformer flavour) on tokens x[B, H·W, C] (row-major grid):
 *   t = silu(x·w_inv[2F,C]ᵀ + b_inv) ; t = dwconv3x3(t; w_dw[2F,1,3,3], b_dw) ;
 *   u = t[:, :F] · silu(t[:, F:]) ; y[B, H·W, Cout] = u · w_point[Cout,F]ᵀ   (no bias)
 * All three weights share w_dtype. Computed in row bands so the [H·W, 2F] expansion is never whole. */
SANA_API int sana_glumbconv(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C,
                            const void* w_inv, const float* b_inv, const void* w_dw, const float* b_dw,
                            const void* w_point, int w_dtype, ptrdiff_t F, ptrdiff_t Cout, int flags, float* y);

/* LayerNorm without affine over the last dim of x[rows, dim]; if scale/shift are given (both [nb, dim],
 * nb = rows / rows_per_batch) the adaLN modulation y = LN(x)·(1 + scale[b]) + shift[b] is fused. */
SANA_API int sana_layer_norm(sana_ctx* ctx, const float* x, ptrdiff_t rows, ptrdiff_t dim, float eps,
                             const float* scale, const float* shift, ptrdiff_t rows_per_batch, float* y);

/* Gated residual: out[r] = x[r] + gate[b] ⊙ y[r] over rows of dim (b = r / rows_per_batch; gate [nb, dim]);
 * gate NULL: out = x + y. out may equal x (in place). The adaLN-single gates of the Sana blocks. */
SANA_API int sana_residual(sana_ctx* ctx, const float* x, const float* y, ptrdiff_t rows, ptrdiff_t dim,
                           const float* gate, ptrdiff_t rows_per_batch, float* out);

/* out = x ⊙ y elementwise (GeGLU products); out may equal x or y. */
SANA_API int sana_mul(sana_ctx* ctx, const float* x, const float* y, ptrdiff_t n, float* out);

/* RMSNorm over the last dim: y = x·rsqrt(mean(x²)+eps)·w (or ·(1+w), mode) + bias. weight/bias may be NULL. */
SANA_API int sana_rms_norm(sana_ctx* ctx, const float* x, ptrdiff_t rows, ptrdiff_t dim, const float* weight,
                           const float* bias, float eps, int mode, float* y);

/* Channel RMSNorm of an NCHW map (DC-AE RMSNorm2d): per pixel over C, y = x·rsqrt(mean_c(x²)+eps)·w[c] + b[c]. */
SANA_API int sana_rms_norm_channels(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW,
                                    const float* weight, const float* bias, float eps, float* y);

/* x[B, C·r²/repeat, H, W] → y[B, C, H·r, W·r]: y[c, h·r+i, w·r+j] (+)= x[(c·r² + i·r + j)/repeat, h, w], i.e.
 * torch pixel_shuffle of x with each channel repeated `repeat` times (repeat_interleave; 1: plain), added to y
 * when accumulate is 1 (DC-AE's up-sampling shortcut in one pass). */
SANA_API int sana_pixel_shuffle(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                                ptrdiff_t r, ptrdiff_t repeat, int accumulate, float* y);
/* x[B, C, H, W] → y[B, C·r², H/r, W/r], the inverse (torch pixel_unshuffle). C is the input channel count. */
SANA_API int sana_pixel_unshuffle(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H,
                                  ptrdiff_t W, ptrdiff_t r, float* y);

/* y = act(x) elementwise; y may equal x. */
SANA_API int sana_activation(sana_ctx* ctx, const float* x, ptrdiff_t n, int act, float* y);

/* Rotary embedding, rotate-half convention, on views [B, L, heads, dim] (dim even):
 * inv_freq[i] = theta^(−2i/dim), angle = pos·inv_freq (fp32), x' = x·cos + rotate_half(x)·sin.
 * positions: L int32 values shared by the batch, or NULL for 0..L−1. out may equal x. */
SANA_API int sana_rope(sana_ctx* ctx, const sana_view4* x, ptrdiff_t B, ptrdiff_t L, ptrdiff_t heads,
                       ptrdiff_t dim, const int32_t* positions, float theta, const sana_view4* out);


/* ---- glue ops: the arithmetic between the big ops, so tensors stay in the backend's memory ------------ */

/* out = a·x + b·y elementwise, each product rounded to fp32 before the sum (no fused multiply-add, as torch
 * evaluates `a * x + b * y` on fp32 tensors); y NULL: out = a·x. out may equal x or y. The schedulers'
 * latent updates are sequences of these with their scalar coefficients computed in TS. */
SANA_API int sana_axpby(sana_ctx* ctx, float a, const float* x, float b, const float* y, ptrdiff_t n, float* out);

/* Classifier-free guidance: out = uncond + scale·(cond − uncond), each operation rounded to fp32. out may
 * equal uncond or cond. */
SANA_API int sana_cfg_combine(sana_ctx* ctx, const float* uncond, const float* cond, ptrdiff_t n, float scale,
                              float* out);

/* count[0] = the number of NaN/±Inf values in x[n] (as a float, saturating at 2^24): one value read back per
 * denoising step says whether the step went bad. */
SANA_API int sana_count_nonfinite(sana_ctx* ctx, const float* x, ptrdiff_t n, float* count);

/* adaLN-single modulation chunks: out[k, b, d] = table[k·D + d] + emb[b·emb_row_stride + k·emb_chunk_stride + d]
 * for k < K, b < B, d < D. Chunk k is the contiguous [B, D] block out + k·B·D. The Sana blocks use K = 6 with
 * the timestep embedding [B, 6D] (row stride 6D, chunk stride D); the output head K = 2 with the embedded
 * timestep [B, D] shared by both chunks (row stride D, chunk stride 0). */
SANA_API int sana_adaln_modulation(sana_ctx* ctx, const float* table, const float* emb, ptrdiff_t B, ptrdiff_t K,
                                   ptrdiff_t D, ptrdiff_t emb_row_stride, ptrdiff_t emb_chunk_stride, float* out);

/* Patchify NCHW x[B, C, H, W] into tokens y[B, (H/p)·(W/p), p·p·C]: token (i, j) channel (r·p + s)·C + c holds
 * x[b, c, i·p + r, j·p + s]. p = 1 is the NCHW → [B, H·W, C] transpose. */
SANA_API int sana_patchify(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                           ptrdiff_t p, float* y);
/* The inverse: tokens x[B, h·w, p·p·C] → NCHW y[B, C, h·p, w·p] (the Sana transformer's unpatchify). */
SANA_API int sana_unpatchify(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t h, ptrdiff_t w, ptrdiff_t p,
                             ptrdiff_t C, float* y);

/* Strided copy between views of shape [B, N, H, D]: dst(b, n, h, d) = src(b, n, h, d). Concatenation and
 * split along any dim, crops and pastes of NCHW maps, and (with a stride-0 source dim) repeat-interleave.
 * The views must not overlap. */
SANA_API int sana_copy4(sana_ctx* ctx, const sana_view4* src, const sana_view4* dst, ptrdiff_t B, ptrdiff_t N,
                        ptrdiff_t H, ptrdiff_t D);

/* Embedding lookup reading only the rows asked for: out[i, :] = float(table[ids[i], :])·scale for table
 * [V, D] in its stored dtype. An id outside [0, V) is SANA_ERR_INVALID_ARGUMENT naming the position. */
SANA_API int sana_embedding(sana_ctx* ctx, const void* table, int dtype, ptrdiff_t V, ptrdiff_t D,
                            const int32_t* ids, ptrdiff_t n, float scale, float* out);

/* Means of consecutive channel groups of NCHW x[B, C, HW]: y[b, k, p] = (Σ_j x[b, k·g + j, p]) / g with
 * g = C / groups, summed in fp32 in order (torch's x.unflatten(1, (groups, g)).mean(2) on CPU). */
SANA_API int sana_group_mean(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, ptrdiff_t groups,
                             float* y);

/* The EfficientViT (DC-AE) normalisation of a linear-attention result computed with a padded ones row:
 * x[B, heads, D + 1, HW] → y[B, heads, D, HW], y[.., d, p] = x[.., d, p] / (x[.., D, p] + eps). */
SANA_API int sana_evit_normalize(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t heads, ptrdiff_t D,
                                 ptrdiff_t HW, float eps, float* y);

/* ---- the op table -----------------------------------------------------------------------------------
 * Every op above, once. X(name) expands for each op with a per-variant kernel (its kernel has the public
 * function's signature); pack_weight runs in the validation layer only. From these lists come the kernel
 * tables of every variant, the generic call below (used by the N-API addon and the wasm glue alike) and the
 * op names the TypeScript side looks up. */
#define SANA_KERNEL_OPS(X)                                                                                   \
  X(linear) X(conv2d) X(linear_attention) X(attention) X(glumbconv) X(layer_norm) X(residual) X(mul)        \
  X(rms_norm) X(rms_norm_channels) X(pixel_shuffle) X(pixel_unshuffle) X(activation) \
  X(rope) X(axpby) X(cfg_combine) X(count_nonfinite) X(adaln_modulation) X(patchify) X(unpatchify) X(copy4)  \
  X(embedding) X(group_mean) X(evit_normalize)
#define SANA_OPS(X) X(pack_weight) SANA_KERNEL_OPS(X)

/* Calls op number `op` (its position in SANA_OPS) with its arguments after ctx flattened into doubles:
 * a pointer is its address, an integer or float its value, a sana_view4 five slots (data address, sb, sn,
 * sh, sd), a sana_attention_params eleven (its fields in order). sana_op_signature(op) names the slots'
 * kinds, one letter per argument: p pointer, i integer, f float, v view, a attention params. A wrong count
 * or a value that does not fit its C type is SANA_ERR_INVALID_ARGUMENT. */
SANA_API int sana_call(sana_ctx* ctx, int op, const double* args, int nargs);
SANA_API int sana_op_count(void);
SANA_API const char* sana_op_name(int op);
SANA_API const char* sana_op_signature(int op);

#ifdef __cplusplus
}
#endif
#endif
