// Maps a sana_variant to the kernel table compiled into this binary (x86 native addon or wasm module).
#include "../core/internal.h"

namespace sana {
#if defined(__EMSCRIPTEN__)
namespace wasm_simd128 { extern const KernelTable table; }
#else
namespace baseline { extern const KernelTable table; }
namespace avx2 { extern const KernelTable table; }
namespace avx512 { extern const KernelTable table; }
namespace avx512bf16 { extern const KernelTable table; }
namespace amx_bf16 { extern const KernelTable table; }
#endif

const KernelTable* variant_table(int variant) {
  switch (variant) {
    case SANA_VARIANT_REF: return ref_table();
#if defined(__EMSCRIPTEN__)
    case SANA_VARIANT_WASM_SIMD128: return &wasm_simd128::table;
#else
    case SANA_VARIANT_BASELINE: return &baseline::table;
    case SANA_VARIANT_AVX2: return &avx2::table;
    case SANA_VARIANT_AVX512: return &avx512::table;
    case SANA_VARIANT_AVX512BF16: return &avx512bf16::table;
    case SANA_VARIANT_AMX_BF16: return &amx_bf16::table;
#endif
    default: return nullptr;
  }
}
}  // namespace sana
