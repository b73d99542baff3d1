// The WASM variant: ops.inl compiled by emscripten with -msimd128 (wasm/build.sh).
#define SANA_VW 4
#define SANA_NS wasm_simd128
#define SANA_VARIANT_NAME "wasm-simd128"
#include "../simd/ops.inl"
