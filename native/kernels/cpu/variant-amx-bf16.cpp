// The amx-bf16 variant: ops.inl compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16 -mamx-tile -mamx-bf16 -mfma -mf16c (set per file in CMakeLists.txt).
// Identical to avx512bf16 except that the SANA_GEMM_FAST_BF16 GEMM runs on AMX tiles (tdpbf16ps).
#define SANA_VW 16
#define SANA_NS amx_bf16
#define SANA_VARIANT_NAME "amx-bf16"
#define SANA_F16C 1
#define SANA_BF16DOT 1
#define SANA_AMX 1
#include "../simd/ops.inl"
