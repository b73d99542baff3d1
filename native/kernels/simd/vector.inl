// Vector helpers of the variant (vf/vi/vu lanes of SANA_VW floats), the activations and dtype runs.
// Included by ops.inl inside the variant's namespace.

constexpr int VW = SANA_VW;
typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));
typedef uint32_t vu __attribute__((vector_size(VW * 4)));
typedef uint16_t vh __attribute__((vector_size(VW * 2)));

template <class T>
inline T mn(T a, T b) { return a < b ? a : b; }
template <class T>
inline T mx(T a, T b) { return a > b ? a : b; }
inline ptrdiff_t round_up(ptrdiff_t a, ptrdiff_t m) { return (a + m - 1) / m * m; }

inline vf vload(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void vstore(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
// Broadcast through the ISA's own splat: GCC lowers generic splats poorly (`vf{} + s` costs an add,
// lane-wise fills become insert sequences), and this sits in the GEMM inner loop.
#if SANA_VW == 16
inline vf vset(float s) { return (vf)_mm512_set1_ps(s); }
#elif SANA_VW == 8
inline vf vset(float s) { return (vf)_mm256_set1_ps(s); }
#elif defined(__wasm_simd128__)
inline vf vset(float s) { return (vf)wasm_f32x4_splat(s); }
#else
inline vf vset(float s) { return (vf)_mm_set1_ps(s); }
#endif
inline vf vselect(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
inline vf vmax(vf a, vf b) { return vselect(a > b, a, b); }
inline vf vmin(vf a, vf b) { return vselect(a < b, a, b); }
inline float hsum(vf v) {
  float s = 0;
  for (int i = 0; i < VW; ++i) s += v[i];
  return s;
}
inline float hmax(vf v) {
  float s = v[0];
  for (int i = 1; i < VW; ++i) s = v[i] > s ? v[i] : s;
  return s;
}
// Partial load/store of the first n (< VW) lanes; the other lanes read as 0.
inline vf vload_n(const float* p, ptrdiff_t n) { vf v = {}; std::memcpy(&v, p, sizeof(float) * n); return v; }
inline void vstore_n(float* p, vf v, ptrdiff_t n) { std::memcpy(p, &v, sizeof(float) * n); }

// Lane index lists for __builtin_shufflevector over two vectors: the even or odd lanes of their
// concatenation, and the zip (interleave) of their low or high halves.
#if SANA_VW == 16
#define SANA_EVEN 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define SANA_ODD 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#define SANA_ZIPLO 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#define SANA_ZIPHI 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
#elif SANA_VW == 8
#define SANA_EVEN 0, 2, 4, 6, 8, 10, 12, 14
#define SANA_ODD 1, 3, 5, 7, 9, 11, 13, 15
#define SANA_ZIPLO 0, 8, 1, 9, 2, 10, 3, 11
#define SANA_ZIPHI 4, 12, 5, 13, 6, 14, 7, 15
#else
#define SANA_EVEN 0, 2, 4, 6
#define SANA_ODD 1, 3, 5, 7
#define SANA_ZIPLO 0, 4, 1, 5
#define SANA_ZIPHI 2, 6, 3, 7
#endif
// The interleave a[0], b[0], a[1], b[1], ...: its first and second VW lanes
inline vf vzip_lo(vf a, vf b) { return __builtin_shufflevector(a, b, SANA_ZIPLO); }
inline vf vzip_hi(vf a, vf b) { return __builtin_shufflevector(a, b, SANA_ZIPHI); }

// exp with Cody-Waite range reduction and a degree-6 polynomial (max rel. error ~2 ulp on [-87, 88]).
// Inputs are clamped, so exp(-inf) reads as ~1e-38: callers that need exact zeros mask explicitly.
inline vf vexp(vf x) {
  x = vmin(vmax(x, vset(-87.33654f)), vset(88.0f));
  vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = vset(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  return p * (vf)e;
}
inline vf vsilu(vf x) { return x / (vexp(-x) + 1.0f); }
inline vf vtanh(vf x) {
  // tanh(x) = sign(x)·(1 − 2/(e^{2|x|} + 1)), accurate near 0 through the expm1-free form for |x| < 0.02
  vf ax = vmax(x, -x);
  vf big = 1.0f - 2.0f / (vexp(ax * 2.0f) + 1.0f);
  vf x2 = ax * ax;
  vf small = ax * (1.0f - x2 * (1.0f / 3.0f) + x2 * x2 * (2.0f / 15.0f));
  vf t = vselect(ax < 0.02f, small, big);
  return vselect(x < 0.0f, -t, t);
}
inline vf vgelu_tanh(vf x) { return 0.5f * x * (1.0f + vtanh(0.7978845608028654f * (x + 0.044715f * x * x * x))); }
inline vf vact(vf x, int act) {
  switch (act) {
    case SANA_ACT_RELU: return vmax(x, vf{});
    case SANA_ACT_SILU: return vsilu(x);
    case SANA_ACT_GELU_TANH: return vgelu_tanh(x);
    default: return x;
  }
}

// ---- dtype runs -------------------------------------------------------------------------------------
// Converts n contiguous weights starting at element i into fp32 (returns a pointer into w for fp32).
const float* load_run(const void* w, int dt, ptrdiff_t i, ptrdiff_t n, float* tmp) {
  if (dt == SANA_F32) return static_cast<const float*>(w) + i;
  const uint16_t* h = static_cast<const uint16_t*>(w) + i;
  ptrdiff_t j = 0;
  if (dt == SANA_BF16) {
    for (; j + VW <= n; j += VW) {
      vh v;
      std::memcpy(&v, h + j, sizeof v);
      vstore(tmp + j, (vf)(__builtin_convertvector(v, vu) << 16));
    }
    for (; j < n; ++j) tmp[j] = bf16_to_f32(h[j]);
  } else {
#if defined(SANA_F16C)
    for (; j + 8 <= n; j += 8)
      _mm256_storeu_ps(tmp + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + j))));
#endif
    for (; j < n; ++j) tmp[j] = f16_to_f32(h[j]);
  }
  return tmp;
}

// Elementwise ops split [0, n) into chunks of kChunk elements spread over the context's threads: f(begin, end).
constexpr ptrdiff_t kChunk = 4096;
template <class F>
void chunked(sana_ctx* ctx, ptrdiff_t n, F&& f) {
  parallel_for(ctx, (n + kChunk - 1) / kChunk, [&](ptrdiff_t c0, ptrdiff_t c1) { f(c0 * kChunk, mn(n, c1 * kChunk)); });
}
