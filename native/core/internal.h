// Internal contracts shared by the validation layer (context.cpp) and the kernel variants.
// A variant receives arguments that context.cpp has already validated; it may only fail with
// SANA_ERR_OUT_OF_MEMORY (scratch allocation). Variant translation units are compiled with their own ISA
// flags, so nothing here is an inline function with a body that could be emitted with wider instructions
// and then shared across variants (ODR): only declarations, plain structs and templates that each variant
// instantiates with its own lambda types.
#pragma once
#include <type_traits>

#include "../include/sana_ops.h"

namespace sana {

struct KernelTable {
  const char* name;
  int (*linear)(sana_ctx*, const float*, ptrdiff_t, ptrdiff_t, const void*, int, ptrdiff_t, const float*, int, int,
                float*);
  int (*conv2d)(sana_ctx*, const float*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, const void*, int, ptrdiff_t,
                ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float*, int, float*);
  int (*linear_attention)(sana_ctx*, const sana_view4*, const sana_view4*, const sana_view4*, const sana_view4*,
                          ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, float);
  int (*attention)(sana_ctx*, const sana_view4*, const sana_view4*, const sana_view4*, const float*,
                   const sana_attention_params*, const sana_view4*);
  int (*glumbconv)(sana_ctx*, const float*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, const void*, const float*,
                   const void*, const float*, const void*, int, ptrdiff_t, ptrdiff_t, int, float*);
  int (*layer_norm)(sana_ctx*, const float*, ptrdiff_t, ptrdiff_t, float, const float*, const float*, ptrdiff_t,
                    float*);
  int (*residual)(sana_ctx*, const float*, const float*, ptrdiff_t, ptrdiff_t, const float*, ptrdiff_t, float*);
  int (*mul)(sana_ctx*, const float*, const float*, ptrdiff_t, float*);
  int (*rms_norm)(sana_ctx*, const float*, ptrdiff_t, ptrdiff_t, const float*, const float*, float, int, float*);
  int (*rms_norm_channels)(sana_ctx*, const float*, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float*, const float*,
                           float, float*);
  int (*pixel_shuffle)(sana_ctx*, const float*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, float*);
  int (*pixel_unshuffle)(sana_ctx*, const float*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, float*);
  int (*upsample_nearest2x)(sana_ctx*, const float*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, float*);
  int (*activation)(sana_ctx*, const float*, ptrdiff_t, int, float*);
  int (*rope)(sana_ctx*, const sana_view4*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, const int32_t*, float,
              const sana_view4*);
};

// Tables, one per compiled variant (NULL when the variant is not built into this binary).
const KernelTable* ref_table();
const KernelTable* variant_table(int variant);

// Threads of a context. parallel_run splits [0, n) into min(n, threads) contiguous chunks, one per thread,
// and returns when all are done; `slot` (0..threads−1) is unique among the chunks running at once, for
// indexing per-thread scratch. Chunks are deterministic so results never depend on scheduling.
int ctx_threads(const sana_ctx* ctx);
void parallel_run(sana_ctx* ctx, ptrdiff_t n, void (*fn)(void* arg, ptrdiff_t begin, ptrdiff_t end, int slot),
                  void* arg);

// f(begin, end) or f(begin, end, slot)
template <class F>
void parallel_for(sana_ctx* ctx, ptrdiff_t n, F&& f) {
  using Fn = typename std::remove_reference<F>::type;
  parallel_run(
      ctx, n,
      [](void* a, ptrdiff_t b, ptrdiff_t e, int slot) {
        if constexpr (std::is_invocable<Fn&, ptrdiff_t, ptrdiff_t, int>::value)
          (*static_cast<Fn*>(a))(b, e, slot);
        else
          (*static_cast<Fn*>(a))(b, e);
      },
      &f);
}

// The context's GEMM packing arena: at least `bytes`, 64-byte aligned, reused by later calls (grown when a
// call needs more, freed with the context). One GEMM at a time per context; NULL on failure.
void* gemm_arena(sana_ctx* ctx, size_t bytes);

// 64-byte aligned scratch; NULL on failure (callers return SANA_ERR_OUT_OF_MEMORY).
void* scratch_alloc(size_t bytes);
void scratch_free(void* p);

// Scalar dtype conversions (exact, round-to-nearest-even for the narrowing ones).
float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

// Records an error on the context and returns the status (used by kernels for OOM only).
int fail(sana_ctx* ctx, int status, const char* fmt, ...);

}  // namespace sana
