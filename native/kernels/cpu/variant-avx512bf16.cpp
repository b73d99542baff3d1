// The avx512bf16 variant: ops.inl compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16 -mfma -mf16c (set per file in CMakeLists.txt).
#define SANA_VW 16
#define SANA_NS avx512bf16
#define SANA_VARIANT_NAME "avx512bf16"
#define SANA_F16C 1
#define SANA_BF16DOT 1
#include "../simd/ops.inl"
