// Fast implementation of every op, written once with GCC/Clang vector extensions and compiled once per
// variant with that variant's ISA flags (native/kernels/cpu/variant-*.cpp, wasm/variant-wasm-simd128.cpp):
//   SANA_VW      vector width in floats: 4 (SSE2 baseline, WASM SIMD128), 8 (AVX2), 16 (AVX-512)
//   SANA_NS      namespace of the variant
//   SANA_F16C    F16C conversions available (x86 AVX2/AVX-512 variants)
//   SANA_BF16DOT vdpbf16ps available: the SANA_GEMM_FAST_BF16 path of linear/glumbconv
//   SANA_AMX     AMX tiles: that path on tdpbf16ps
// The op families live in the files included below, in dependency order. Benchmark: npm run bench:kernels.
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "../../core/internal.h"
#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
#else
#include <immintrin.h>
#endif

namespace sana {
namespace SANA_NS {
namespace {

#include "vector.inl"
#include "gemm.inl"
#include "winograd.inl"
#include "conv.inl"
#include "attention.inl"
#include "mixffn.inl"
#include "norms.inl"
#include "layout.inl"
#include "glue.inl"

}  // namespace

extern const KernelTable table;
const KernelTable table = {SANA_VARIANT_NAME, SANA_KERNEL_OPS(SANA_TABLE_ROW)};

}  // namespace SANA_NS
}  // namespace sana
