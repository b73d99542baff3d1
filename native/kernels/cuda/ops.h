// The CUDA kernels' entry points: one per op of SANA_KERNEL_OPS with its public signature (the validation
// layer has checked the arguments), plus the device pack_weight. Tabled in runtime.cu.
#pragma once
#include "../../core/internal.h"

namespace sana {
namespace cuda {
#define SANA_CUDA_DECLARE(op) extern decltype(::sana_##op) op;
SANA_KERNEL_OPS(SANA_CUDA_DECLARE)
#undef SANA_CUDA_DECLARE
int pack_weight(sana_ctx* ctx, const void* w, int dt, ptrdiff_t N, ptrdiff_t K, void* packed);
}  // namespace cuda
}  // namespace sana
