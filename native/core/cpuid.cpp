// CPU feature detection (cpuid, xgetbv, the OS's AMX permission) and which kernel variants this machine runs.
#if !defined(__EMSCRIPTEN__)
#include <thread>
#endif

#include "internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

using namespace sana;

namespace {
struct CpuFeatures {
  bool sse2 = false, avx2 = false, fma = false, f16c = false, avx512 = false, avx512bf16 = false, amx = false;
};

CpuFeatures detect_cpu() {
  CpuFeatures f;
#if defined(__x86_64__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.sse2 = d & (1u << 26);
  bool osxsave = c & (1u << 27), avx = c & (1u << 28);
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  unsigned xlo = 0, xhi = 0;
  if (osxsave) __asm__("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  bool ymm_os = osxsave && avx && (xlo & 0x6) == 0x6;
  bool zmm_os = ymm_os && (xlo & 0xe0) == 0xe0;
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = ymm_os && (b & (1u << 5)) && f.fma && f.f16c;
    bool f512 = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
    f.avx512 = zmm_os && f.avx2 && f512 && dq && bw && vl;
    bool amx_tile = d & (1u << 24), amx_bf16 = d & (1u << 22);
    bool tiles_os = (xlo & 0x60000) == 0x60000;  // XTILECFG | XTILEDATA enabled by the OS
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512bf16 = f.avx512 && (a & (1u << 5));
    // Linux hands out AMX tile state per process on request (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA)
    f.amx = f.avx512bf16 && amx_tile && amx_bf16 && tiles_os && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  }
#endif
  return f;
}

const CpuFeatures& cpu() {
  static const CpuFeatures f = detect_cpu();
  return f;
}
}  // namespace

extern "C" {

int sana_variant_supported(int variant) {
  if (variant < 0 || variant >= SANA_VARIANT_COUNT || !variant_table(variant)) return 0;
  switch (variant) {
    case SANA_VARIANT_REF: return 1;
    case SANA_VARIANT_BASELINE: return cpu().sse2;
    case SANA_VARIANT_AVX2: return cpu().avx2;
    case SANA_VARIANT_AVX512: return cpu().avx512;
    case SANA_VARIANT_AVX512BF16: return cpu().avx512bf16;
    case SANA_VARIANT_AMX_BF16: return cpu().amx;
    case SANA_VARIANT_WASM_SIMD128: return 1;  // only built into the wasm module
    default: return 0;
  }
}

int sana_best_variant(void) {
  static const int order[] = {SANA_VARIANT_AMX_BF16, SANA_VARIANT_AVX512BF16, SANA_VARIANT_AVX512, SANA_VARIANT_AVX2,
                              SANA_VARIANT_WASM_SIMD128, SANA_VARIANT_BASELINE};
  for (int v : order)
    if (sana_variant_supported(v)) return v;
  return SANA_VARIANT_REF;
}

const char* sana_variant_name(int variant) {
  static const char* names[] = {"ref", "baseline", "avx2", "avx512", "avx512bf16", "wasm-simd128", "amx-bf16", "cuda"};
  return variant >= 0 && variant < SANA_VARIANT_COUNT ? names[variant] : "unknown";
}

int sana_hardware_threads(void) {
#if defined(__EMSCRIPTEN__)
  return 1;
#else
  unsigned n = std::thread::hardware_concurrency();
  return n ? (int)n : 1;
#endif
}

}  // extern "C"
