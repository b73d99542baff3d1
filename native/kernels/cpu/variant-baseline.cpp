// The baseline variant: ops.inl compiled with -msse2 (x86-64 baseline) (set per file in CMakeLists.txt).
#define SANA_VW 4
#define SANA_NS baseline
#define SANA_VARIANT_NAME "baseline"
#include "../simd/ops.inl"
