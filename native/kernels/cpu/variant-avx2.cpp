// The avx2 variant: ops.inl compiled with -mavx2 -mfma -mf16c (set per file in CMakeLists.txt).
#define SANA_VW 8
#define SANA_NS avx2
#define SANA_VARIANT_NAME "avx2"
#define SANA_F16C 1
#include "../simd/ops.inl"
