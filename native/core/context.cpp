// Context, thread pool, CPU detection, and the validation layer of every op: each public sana_* function
// checks its arguments here, records a message naming the op and the argument, and only then calls the
// selected variant. Nothing in this file aborts; C++ exceptions never cross the C ABI.
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "internal.h"

#if !defined(__EMSCRIPTEN__)
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

struct sana_ctx {
  int threads = 1;
  int variant = SANA_VARIANT_REF;
  const sana::KernelTable* table = nullptr;
  char error[768] = {0};
  void* arena = nullptr;
  size_t arena_bytes = 0;
#if !defined(__EMSCRIPTEN__)
  // Persistent workers (threads − 1 of them); the calling thread runs chunk 0.
  std::vector<std::thread> workers;
  std::mutex mu;
  std::condition_variable wake, done;
  uint64_t generation = 0;
  bool stop = false;
  ptrdiff_t job_n = 0;
  void (*job_fn)(void*, ptrdiff_t, ptrdiff_t, int) = nullptr;
  void* job_arg = nullptr;
  int job_chunks = 0;
  std::atomic<int> pending{0};
#endif
};

namespace sana {

int fail(sana_ctx* ctx, int status, const char* fmt, ...) {
  if (ctx) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
    va_end(ap);
  }
  return status;
}

void* gemm_arena(sana_ctx* ctx, size_t bytes) {
  if (bytes > ctx->arena_bytes) {
    scratch_free(ctx->arena);
    ctx->arena = scratch_alloc(bytes);
    ctx->arena_bytes = ctx->arena ? bytes : 0;
  }
  return ctx->arena;
}

void* scratch_alloc(size_t bytes) {
  if (bytes == 0) bytes = 64;
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded < bytes) return nullptr;
  return std::aligned_alloc(64, rounded);
}
void scratch_free(void* p) { std::free(p); }

float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do { man <<= 1; ++e; } while (!(man & 0x400u));
      bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | man << 13;
  } else {
    bits = sign | (exp + 112) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
float bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);  // keep NaN a NaN
  bits += 0x7fffu + ((bits >> 16) & 1);
  return (uint16_t)(bits >> 16);
}

int ctx_threads(const sana_ctx* ctx) { return ctx->threads; }

#if defined(__EMSCRIPTEN__)
void parallel_run(sana_ctx*, ptrdiff_t n, void (*fn)(void*, ptrdiff_t, ptrdiff_t, int), void* arg) {
  if (n > 0) fn(arg, 0, n, 0);
}
#else
static void chunk_bounds(ptrdiff_t n, int chunks, int i, ptrdiff_t* b, ptrdiff_t* e) {
  *b = n * i / chunks;
  *e = n * (i + 1) / chunks;
}

// `seen` starts at the generation current when the worker is created (no job is in flight then), so a
// restarted pool never re-runs the previous job.
static void worker_loop(sana_ctx* ctx, int index, uint64_t seen) {
  for (;;) {
    std::unique_lock<std::mutex> lock(ctx->mu);
    ctx->wake.wait(lock, [&] { return ctx->stop || ctx->generation != seen; });
    if (ctx->stop) return;
    seen = ctx->generation;
    int chunks = ctx->job_chunks;
    auto fn = ctx->job_fn;
    void* arg = ctx->job_arg;
    ptrdiff_t n = ctx->job_n;
    lock.unlock();
    if (index < chunks) {
      ptrdiff_t b, e;
      chunk_bounds(n, chunks, index, &b, &e);
      fn(arg, b, e, index);
      if (ctx->pending.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> g(ctx->mu);
        ctx->done.notify_all();
      }
    }
  }
}

void parallel_run(sana_ctx* ctx, ptrdiff_t n, void (*fn)(void*, ptrdiff_t, ptrdiff_t, int), void* arg) {
  if (n <= 0) return;
  int chunks = (int)(n < ctx->threads ? n : ctx->threads);
  if (chunks <= 1 || ctx->workers.empty()) {
    fn(arg, 0, n, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> g(ctx->mu);
    ctx->job_fn = fn;
    ctx->job_arg = arg;
    ctx->job_n = n;
    ctx->job_chunks = chunks;
    ctx->pending.store(chunks - 1);
    ++ctx->generation;
  }
  ctx->wake.notify_all();
  ptrdiff_t b, e;
  chunk_bounds(n, chunks, 0, &b, &e);
  fn(arg, b, e, 0);
  std::unique_lock<std::mutex> lock(ctx->mu);
  ctx->done.wait(lock, [&] { return ctx->pending.load() == 0; });
}

static void stop_workers(sana_ctx* ctx) {
  {
    std::lock_guard<std::mutex> g(ctx->mu);
    ctx->stop = true;
  }
  ctx->wake.notify_all();
  for (auto& t : ctx->workers) t.join();
  ctx->workers.clear();
  ctx->stop = false;
}
#endif

}  // namespace sana

using namespace sana;

// ---- CPU detection ------------------------------------------------------------------------------------

namespace {
struct CpuFeatures {
  bool sse2 = false, avx2 = false, fma = false, f16c = false, avx512 = false, avx512bf16 = false, amx = false;
};

CpuFeatures detect_cpu() {
  CpuFeatures f;
#if defined(__x86_64__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.sse2 = d & (1u << 26);
  bool osxsave = c & (1u << 27), avx = c & (1u << 28);
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  unsigned xlo = 0, xhi = 0;
  if (osxsave) __asm__("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  bool ymm_os = osxsave && avx && (xlo & 0x6) == 0x6;
  bool zmm_os = ymm_os && (xlo & 0xe0) == 0xe0;
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = ymm_os && (b & (1u << 5)) && f.fma && f.f16c;
    bool f512 = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
    f.avx512 = zmm_os && f.avx2 && f512 && dq && bw && vl;
    bool amx_tile = d & (1u << 24), amx_bf16 = d & (1u << 22);
    bool tiles_os = (xlo & 0x60000) == 0x60000;  // XTILECFG | XTILEDATA enabled by the OS
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512bf16 = f.avx512 && (a & (1u << 5));
    // Linux hands out AMX tile state per process on request (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA)
    f.amx = f.avx512bf16 && amx_tile && amx_bf16 && tiles_os && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  }
#endif
  return f;
}

const CpuFeatures& cpu() {
  static const CpuFeatures f = detect_cpu();
  return f;
}
}  // namespace

extern "C" {

int sana_variant_supported(int variant) {
  if (variant < 0 || variant >= SANA_VARIANT_COUNT || !variant_table(variant)) return 0;
  switch (variant) {
    case SANA_VARIANT_REF: return 1;
    case SANA_VARIANT_BASELINE: return cpu().sse2;
    case SANA_VARIANT_AVX2: return cpu().avx2;
    case SANA_VARIANT_AVX512: return cpu().avx512;
    case SANA_VARIANT_AVX512BF16: return cpu().avx512bf16;
    case SANA_VARIANT_AMX_BF16: return cpu().amx;
    case SANA_VARIANT_WASM_SIMD128: return 1;  // only built into the wasm module
    default: return 0;
  }
}

int sana_best_variant(void) {
  static const int order[] = {SANA_VARIANT_AMX_BF16, SANA_VARIANT_AVX512BF16, SANA_VARIANT_AVX512, SANA_VARIANT_AVX2,
                              SANA_VARIANT_WASM_SIMD128, SANA_VARIANT_BASELINE};
  for (int v : order)
    if (sana_variant_supported(v)) return v;
  return SANA_VARIANT_REF;
}

const char* sana_variant_name(int variant) {
  static const char* names[] = {"ref", "baseline", "avx2", "avx512", "avx512bf16", "wasm-simd128", "amx-bf16"};
  return variant >= 0 && variant < SANA_VARIANT_COUNT ? names[variant] : "unknown";
}

int sana_hardware_threads(void) {
#if defined(__EMSCRIPTEN__)
  return 1;
#else
  unsigned n = std::thread::hardware_concurrency();
  return n ? (int)n : 1;
#endif
}

sana_ctx* sana_ctx_create(int threads) {
  sana_ctx* ctx = new (std::nothrow) sana_ctx();
  if (!ctx) return nullptr;
  ctx->variant = sana_best_variant();
  ctx->table = variant_table(ctx->variant);
  if (sana_ctx_set_threads(ctx, threads) != SANA_OK) {
    delete ctx;
    return nullptr;
  }
  return ctx;
}

void sana_ctx_destroy(sana_ctx* ctx) {
  if (!ctx) return;
#if !defined(__EMSCRIPTEN__)
  stop_workers(ctx);
#endif
  scratch_free(ctx->arena);
  delete ctx;
}

int sana_ctx_set_threads(sana_ctx* ctx, int threads) {
  if (!ctx) return SANA_ERR_INVALID_ARGUMENT;
  if (threads <= 0) threads = sana_hardware_threads();
  if (threads > 256) return fail(ctx, SANA_ERR_INVALID_ARGUMENT,
                                 "threads: Expected 1..256 for threads but received %d", threads);
#if defined(__EMSCRIPTEN__)
  ctx->threads = 1;  // the wasm build is single-threaded (no SharedArrayBuffer requirement)
#else
  stop_workers(ctx);
  ctx->threads = threads;
  try {
    for (int i = 1; i < threads; ++i) ctx->workers.emplace_back(worker_loop, ctx, i, ctx->generation);
  } catch (...) {
    stop_workers(ctx);
    ctx->threads = 1;
    return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "threads: could not start %d worker threads", threads - 1);
  }
#endif
  return SANA_OK;
}

int sana_ctx_threads(const sana_ctx* ctx) { return ctx ? ctx->threads : 0; }

int sana_ctx_set_variant(sana_ctx* ctx, int variant) {
  if (!ctx) return SANA_ERR_INVALID_ARGUMENT;
  if (variant < 0 || variant >= SANA_VARIANT_COUNT)
    return fail(ctx, SANA_ERR_INVALID_ARGUMENT, "variant: Expected 0..%d for variant but received %d",
                SANA_VARIANT_COUNT - 1, variant);
  if (!sana_variant_supported(variant))
    return fail(ctx, SANA_ERR_UNSUPPORTED, "variant: %s is not %s", sana_variant_name(variant),
                variant_table(variant) ? "supported by this CPU" : "built into this binary");
  ctx->variant = variant;
  ctx->table = variant_table(variant);
  return SANA_OK;
}

int sana_ctx_variant(const sana_ctx* ctx) { return ctx ? ctx->variant : -1; }
const char* sana_ctx_last_error(const sana_ctx* ctx) { return ctx ? ctx->error : "no context"; }

}  // extern "C"

// ---- validation ---------------------------------------------------------------------------------------

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

ptrdiff_t sana_packed_weight_size(ptrdiff_t N, ptrdiff_t K) {
  ptrdiff_t t;
  if (N <= 0 || K <= 0 || !mul_ok((N + 31) / 32 * 32, K, &t)) return -1;
  return t;
}

int sana_pack_weight(sana_ctx* ctx, const float* w, ptrdiff_t N, ptrdiff_t K, float* packed) {
  NEED_CTX();
  NONNULL("pack_weight", w);
  NONNULL("pack_weight", packed);
  POSITIVE("pack_weight", N);
  POSITIVE("pack_weight", K);
  CHECK(sana_packed_weight_size(N, K) > 0, "pack_weight: Expected sizes whose product fits in memory for N, K but received %td, %td", N, K);
  for (ptrdiff_t p0 = 0; p0 < N; p0 += 32)
    for (ptrdiff_t k = 0; k < K; ++k) {
      float* row = packed + (p0 / 32 * K + k) * 32;
      for (ptrdiff_t j = 0; j < 32; ++j) row[j] = p0 + j < N ? w[(p0 + j) * K + k] : 0.0f;
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
  CHECK(!(flags & SANA_GEMM_PACKED_WEIGHT) || w_dtype == SANA_F32,
        "linear: Expected f32 weights for flags=PACKED_WEIGHT but received w_dtype %d", w_dtype);
  return ctx->table->linear(ctx, x, M, K, w, w_dtype, N, bias, act, flags, y);
}

int sana_conv2d(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t Cin, ptrdiff_t H, ptrdiff_t W, const void* w,
                int w_dtype, ptrdiff_t Cout, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t stride, ptrdiff_t pad,
                ptrdiff_t groups, const float* bias, int act, float* y) {
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
  CHECK(H + 2 * pad >= kh && W + 2 * pad >= kw, "conv2d: Expected an input of at least the kernel size for H, W "
        "(with pad %td) but received %td, %td", pad, H, W);
  ptrdiff_t t, u;
  CHECK(mul_ok(B, Cin, &t) && mul_ok(t, H, &t) && mul_ok(t, W, &t) && mul_ok(B, Cout, &u) && mul_ok(u, H, &u) &&
            mul_ok(u, W, &u) && mul_ok(Cout, Cin, &t) && mul_ok(t, kh * kw, &t),
        "conv2d: Expected sizes whose products fit in memory but received B=%td Cin=%td H=%td W=%td Cout=%td", B, Cin,
        H, W, Cout);
  TRY(check_dtype(ctx, "conv2d", w_dtype));
  TRY(check_act(ctx, "conv2d", act));
  return ctx->table->conv2d(ctx, x, B, Cin, H, W, w, w_dtype, Cout, kh, kw, stride, pad, groups, bias, act, y);
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
  return ctx->table->linear_attention(ctx, q, k, v, out, B, N, heads, head_dim, eps);
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
  return ctx->table->attention(ctx, q, k, v, key_bias, p, out);
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
  CHECK(!(flags & SANA_GEMM_PACKED_WEIGHT) || w_dtype == SANA_F32,
        "glumbconv: Expected f32 weights for flags=PACKED_WEIGHT but received w_dtype %d", w_dtype);
  return ctx->table->glumbconv(ctx, x, B, H, W, C, w_inv, b_inv, w_dw, b_dw, w_point, w_dtype, F, Cout, flags, y);
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
  return ctx->table->layer_norm(ctx, x, rows, dim, eps, scale, shift, rows_per_batch, y);
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
  return ctx->table->residual(ctx, x, y, rows, dim, gate, rows_per_batch, out);
}

int sana_mul(sana_ctx* ctx, const float* x, const float* y, ptrdiff_t n, float* out) {
  NEED_CTX();
  NONNULL("mul", x);
  NONNULL("mul", y);
  NONNULL("mul", out);
  POSITIVE("mul", n);
  return ctx->table->mul(ctx, x, y, n, out);
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
  return ctx->table->rms_norm(ctx, x, rows, dim, weight, bias, eps, mode, y);
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
  return ctx->table->rms_norm_channels(ctx, x, B, C, HW, weight, bias, eps, y);
}

int sana_pixel_shuffle(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                       ptrdiff_t r, float* y) {
  NEED_CTX();
  NONNULL("pixel_shuffle", x);
  NONNULL("pixel_shuffle", y);
  POSITIVE("pixel_shuffle", B);
  POSITIVE("pixel_shuffle", C);
  POSITIVE("pixel_shuffle", H);
  POSITIVE("pixel_shuffle", W);
  CHECK(r > 0 && r <= 64, "pixel_shuffle: Expected 1..64 for r but received %td", r);
  return ctx->table->pixel_shuffle(ctx, x, B, C, H, W, r, y);
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
  return ctx->table->pixel_unshuffle(ctx, x, B, C, H, W, r, y);
}

int sana_upsample_nearest2x(sana_ctx* ctx, const float* x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                            float* y) {
  NEED_CTX();
  NONNULL("upsample_nearest2x", x);
  NONNULL("upsample_nearest2x", y);
  POSITIVE("upsample_nearest2x", B);
  POSITIVE("upsample_nearest2x", C);
  POSITIVE("upsample_nearest2x", H);
  POSITIVE("upsample_nearest2x", W);
  return ctx->table->upsample_nearest2x(ctx, x, B, C, H, W, y);
}

int sana_activation(sana_ctx* ctx, const float* x, ptrdiff_t n, int act, float* y) {
  NEED_CTX();
  NONNULL("activation", x);
  NONNULL("activation", y);
  POSITIVE("activation", n);
  TRY(check_act(ctx, "activation", act));
  return ctx->table->activation(ctx, x, n, act, y);
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
  return ctx->table->rope(ctx, x, B, L, heads, dim, positions, theta, out);
}

}  // extern "C"
