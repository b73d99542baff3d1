// The context: its thread pool, GEMM arena, error message and selected variant. CPU detection is
// cpuid.cpp, the argument checks of every op validation.cpp, the generic call call.cpp. Nothing here aborts;
// C++ exceptions never cross the C ABI.
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


struct sana_ctx {
  int threads = 1;
  int variant = SANA_VARIANT_REF;
  const sana::KernelTable* table = nullptr;
  char error[768] = {0};
  void* arena[sana::ARENA_COUNT] = {};
  size_t arena_bytes[sana::ARENA_COUNT] = {};
  sana::DeviceBinding device{};  // table == nullptr: a host context
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

void* ctx_arena(sana_ctx* ctx, Arena which, size_t bytes) {
  if (bytes > ctx->arena_bytes[which]) {
    scratch_free(ctx->arena[which]);
    ctx->arena[which] = scratch_alloc(bytes);
    ctx->arena_bytes[which] = ctx->arena[which] ? bytes : 0;
  }
  return ctx->arena[which];
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

void ctx_bind_device(sana_ctx* ctx, const DeviceBinding& binding) {
  ctx->device = binding;
  ctx->table = binding.table;
  ctx->variant = SANA_VARIANT_CUDA;
}
const DeviceBinding* ctx_device_binding(const sana_ctx* ctx) { return ctx->device.table ? &ctx->device : nullptr; }

int ctx_threads(const sana_ctx* ctx) { return ctx->threads; }
const KernelTable* ctx_table(const sana_ctx* ctx) { return ctx->table; }

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

extern "C" {

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
  for (void* a : ctx->arena) scratch_free(a);
  if (ctx->device.destroy) ctx->device.destroy(ctx->device.state);
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
  if (ctx->device.table || variant == SANA_VARIANT_CUDA)
    return variant == ctx->variant ? SANA_OK : fail(ctx, SANA_ERR_UNSUPPORTED, "variant: a %s context runs the %s kernels only",
                                                    ctx->device.table ? "cuda" : "host", sana_variant_name(ctx->variant));
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
