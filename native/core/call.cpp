// The generic call: any op of SANA_OPS by number, with its arguments flattened into doubles. The N-API addon
// and the wasm glue both call ops only through here, so a new op needs no binding code of its own: the
// unpacking of each argument is derived from the C type in the op's public signature.
#include <cmath>
#include <limits>
#include <tuple>

#include "internal.h"

using namespace sana;

namespace {

// 2^53: every integer below it is exact in a double.
constexpr double kExact = 9007199254740992.0;

bool integral(double d) { return std::isfinite(d) && d == std::floor(d) && std::fabs(d) < kExact; }

// One argument of C type T read from its slots; `kind` is its letter in sana_op_signature.
template <class T>
struct Arg;

template <class I>
struct IntegerArg {
  static constexpr char kind = 'i';
  static constexpr int slots = 1;
  I v = 0;
  bool read(const double* a) {
    return integral(a[0]) && a[0] >= (double)std::numeric_limits<I>::min() && a[0] <= (double)std::numeric_limits<I>::max() && (v = (I)a[0], true);
  }
  I get() const { return v; }
};
template <>
struct Arg<ptrdiff_t> : IntegerArg<ptrdiff_t> {};
template <>
struct Arg<int> : IntegerArg<int> {};

template <>
struct Arg<float> {
  static constexpr char kind = 'f';
  static constexpr int slots = 1;
  float v = 0;
  bool read(const double* a) { return std::isfinite(a[0]) && (v = (float)a[0], true); }
  float get() const { return v; }
};

bool address(double d, uintptr_t* out) {
  if (!integral(d) || d < 0 || d > (double)UINTPTR_MAX) return false;
  *out = (uintptr_t)d;
  return true;
}

template <class P>
struct Arg<P*> {
  static constexpr char kind = 'p';
  static constexpr int slots = 1;
  P* v = nullptr;
  bool read(const double* a) {
    uintptr_t u;
    return address(a[0], &u) && (v = reinterpret_cast<P*>(u), true);
  }
  P* get() const { return v; }
};

template <>
struct Arg<const sana_view4*> {
  static constexpr char kind = 'v';
  static constexpr int slots = 5;
  sana_view4 v{};
  bool read(const double* a) {
    uintptr_t u;
    if (!address(a[0], &u)) return false;
    v.data = reinterpret_cast<float*>(u);
    ptrdiff_t* st[4] = {&v.sb, &v.sn, &v.sh, &v.sd};
    for (int j = 0; j < 4; ++j) {
      if (!integral(a[1 + j])) return false;
      *st[j] = (ptrdiff_t)a[1 + j];
    }
    return true;
  }
  const sana_view4* get() const { return &v; }
};

// Fields in declaration order: batch, len_q, len_kv, heads_q, heads_kv, head_dim, head_dim_v, scale, softcap,
// causal, window.
template <>
struct Arg<const sana_attention_params*> {
  static constexpr char kind = 'a';
  static constexpr int slots = 11;
  sana_attention_params v{};
  bool read(const double* a) {
    ptrdiff_t* sizes[7] = {&v.batch, &v.len_q, &v.len_kv, &v.heads_q, &v.heads_kv, &v.head_dim, &v.head_dim_v};
    for (int j = 0; j < 7; ++j) {
      if (!integral(a[j])) return false;
      *sizes[j] = (ptrdiff_t)a[j];
    }
    if (!std::isfinite(a[7]) || !std::isfinite(a[8]) || !integral(a[9]) || !integral(a[10])) return false;
    v.scale = (float)a[7];
    v.softcap = (float)a[8];
    v.causal = (int)a[9];
    v.window = (ptrdiff_t)a[10];
    return true;
  }
  const sana_attention_params* get() const { return &v; }
};

struct OpInfo {
  const char* name;
  const char* signature;
  int slots;
  int (*invoke)(sana_ctx*, const double*, int, const char*);
};

template <class... A>
struct Signature {
  static constexpr char letters[sizeof...(A) + 1] = {Arg<A>::kind..., 0};
  static constexpr int slots = (0 + ... + Arg<A>::slots);
};

template <class... A>
int invoke(int (*fn)(sana_ctx*, A...), sana_ctx* ctx, const double* args, int nargs, const char* name) {
  if (nargs != Signature<A...>::slots)
    return fail(ctx, SANA_ERR_INVALID_ARGUMENT, "%s: Expected %d argument slots but received %d", name,
                Signature<A...>::slots, nargs);
  std::tuple<Arg<A>...> holders;
  int offset = 0, index = 0, bad = -1, bad_slot = 0;
  auto read = [&](auto& h) {
    if (bad < 0 && !h.read(args + offset)) bad = index, bad_slot = offset;
    offset += h.slots;
    ++index;
  };
  std::apply([&](auto&... h) { (read(h), ...); }, holders);
  if (bad >= 0)
    return fail(ctx, SANA_ERR_INVALID_ARGUMENT, "%s: Expected argument %d (kind %c) to fit its C type but slot %d holds %g",
                name, bad, Signature<A...>::letters[bad], bad_slot, args[bad_slot]);
  return std::apply([&](auto&... h) { return fn(ctx, h.get()...); }, holders);
}

template <class... A>
constexpr OpInfo info(const char* name, int (*)(sana_ctx*, A...), int (*thunk)(sana_ctx*, const double*, int, const char*)) {
  return {name, Signature<A...>::letters, Signature<A...>::slots, thunk};
}

#define SANA_OP_INFO(op)                                                                                       \
  info(#op, &::sana_##op, [](sana_ctx* c, const double* a, int n, const char* nm) { return invoke(&::sana_##op, c, a, n, nm); }),
const OpInfo kOps[] = {SANA_OPS(SANA_OP_INFO)};
#undef SANA_OP_INFO
constexpr int kOpCount = sizeof kOps / sizeof *kOps;

}  // namespace

extern "C" {

int sana_call(sana_ctx* ctx, int op, const double* args, int nargs) {
  if (!ctx) return SANA_ERR_INVALID_ARGUMENT;
  if (op < 0 || op >= kOpCount) return fail(ctx, SANA_ERR_INVALID_ARGUMENT, "call: Expected an op 0..%d but received %d", kOpCount - 1, op);
  if (nargs < 0 || (nargs > 0 && !args)) return fail(ctx, SANA_ERR_INVALID_ARGUMENT, "%s: Expected an argument array", kOps[op].name);
  return kOps[op].invoke(ctx, args, nargs, kOps[op].name);
}

int sana_op_count(void) { return kOpCount; }
const char* sana_op_name(int op) { return op >= 0 && op < kOpCount ? kOps[op].name : nullptr; }
const char* sana_op_signature(int op) { return op >= 0 && op < kOpCount ? kOps[op].signature : nullptr; }

}  // extern "C"
