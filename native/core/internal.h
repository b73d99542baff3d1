// Internal contracts shared by the validation layer (context.cpp) and the kernel variants.
// A variant receives arguments that context.cpp has already validated; it may only fail with
// SANA_ERR_OUT_OF_MEMORY (scratch allocation). Variant translation units are compiled with their own ISA
// flags, so nothing here is an inline function with a body that could be emitted with wider instructions
// and then shared across variants (ODR): only declarations, plain structs and templates that each variant
// instantiates with its own lambda types.
#pragma once
#include <atomic>
#include <type_traits>

#include "../include/sana_ops.h"

namespace sana {

// One entry per op of SANA_KERNEL_OPS, with the signature of its public function; a variant's table is
// {name, SANA_KERNEL_OPS(...)} over functions of the same names in its namespace.
struct KernelTable {
  const char* name;
#define SANA_TABLE_ENTRY(op) decltype(&::sana_##op) op;
  SANA_KERNEL_OPS(SANA_TABLE_ENTRY)
#undef SANA_TABLE_ENTRY
};
#define SANA_TABLE_ROW(op) op,

// The glue ops that reproduce torch's fp32 rounding (axpby, cfg_combine) are compiled between these, which
// turn off the fused multiply-adds -ffp-contract=fast allows elsewhere.
#if defined(__clang__)
#define SANA_EXACT_FP_BEGIN _Pragma("clang fp contract(off)")
#define SANA_EXACT_FP_END _Pragma("clang fp contract(fast)")
#else
#define SANA_EXACT_FP_BEGIN _Pragma("GCC push_options") _Pragma("GCC optimize(\"fp-contract=off\")")
#define SANA_EXACT_FP_END _Pragma("GCC pop_options")
#endif

// Tables, one per compiled variant (NULL when the variant is not built into this binary).
const KernelTable* ref_table();
const KernelTable* variant_table(int variant);

// The kernel table of the context's selected variant.
const KernelTable* ctx_table(const sana_ctx* ctx);

// A device context (cuda) runs its own kernel table on pointers into device memory, which the validation
// layer never dereferences (embedding's id check runs on the device). The state is the device runtime's;
// destroy frees it with the context.
struct DeviceBinding {
  const KernelTable* table;
  void* state;
  decltype(&::sana_pack_weight) pack_weight;
  void (*destroy)(void* state);
};
void ctx_bind_device(sana_ctx* ctx, const DeviceBinding& binding);
// The binding of a device context, NULL for a host one.
const DeviceBinding* ctx_device_binding(const sana_ctx* ctx);
inline void* ctx_device(const sana_ctx* ctx) { return ctx_device_binding(ctx)->state; }

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

// Tasks [0, n) claimed one at a time by the context's threads, f(task, slot): a thread whose core another
// process takes does fewer of them. Each task is computed the same way whichever thread takes it, so results
// do not depend on scheduling; `slot` indexes per-thread scratch as in parallel_for.
template <class F>
void parallel_claim(sana_ctx* ctx, ptrdiff_t n, F&& f) {
  std::atomic<ptrdiff_t> next{0};
  parallel_for(ctx, n < ctx_threads(ctx) ? n : ctx_threads(ctx), [&](ptrdiff_t, ptrdiff_t, int slot) {
    for (ptrdiff_t task; (task = next.fetch_add(1, std::memory_order_relaxed)) < n;) f(task, slot);
  });
}

// Arenas of a context: at least `bytes`, 64-byte aligned, reused by later calls (grown when a call needs
// more, freed with the context), so repeated calls reuse warm pages instead of mapping fresh ones. One user
// of each at a time per context: the GEMM's packing buffers, and the Winograd convolution's transformed
// operands (which calls the GEMM). NULL on failure.
enum Arena { ARENA_GEMM, ARENA_WINOGRAD, ARENA_COUNT };
void* ctx_arena(sana_ctx* ctx, Arena which, size_t bytes);

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
