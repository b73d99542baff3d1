// The avx512 variant: ops.inl compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c (set per file in CMakeLists.txt).
#define SANA_VW 16
#define SANA_NS avx512
#define SANA_VARIANT_NAME "avx512"
#define SANA_F16C 1
#include "../simd/ops.inl"
