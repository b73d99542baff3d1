// The N-API layer: the only code that includes napi.h. It converts typed arrays and numbers, checks that
// every buffer is live and long enough for the shapes it is given, calls the C ABI, and turns a status
// into a JS Error with a `code` (ts/errors.ts wraps it in a SanaError). No model logic lives here.
// Context-aware (Napi::Addon): each JS thread (main or worker) gets its own sana_ctx and thread pool.
#include <napi.h>
#include <sys/mman.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "../include/sana_ops.h"

namespace {

const char* code_of(int status) {
  switch (status) {
    case SANA_ERR_INVALID_ARGUMENT: return "ERR_SANA_INVALID_ARGUMENT";
    case SANA_ERR_OUT_OF_MEMORY: return "ERR_SANA_OUT_OF_MEMORY";
    case SANA_ERR_UNSUPPORTED: return "ERR_SANA_UNSUPPORTED";
    default: return "ERR_SANA_NATIVE";
  }
}

[[noreturn]] void throw_code(Napi::Env env, const char* code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  throw e;
}

[[noreturn]] void invalid(Napi::Env env, const std::string& msg) { throw_code(env, "ERR_SANA_INVALID_ARGUMENT", msg); }

std::string describe(const Napi::Value& v) {
  if (v.IsNull()) return "null";
  if (v.IsUndefined()) return "undefined";
  if (v.IsNumber()) return std::to_string(v.As<Napi::Number>().DoubleValue());
  if (v.IsTypedArray()) {
    static const char* names[] = {"Int8Array",   "Uint8Array",   "Uint8ClampedArray", "Int16Array",
                                  "Uint16Array", "Int32Array",   "Uint32Array",       "Float32Array",
                                  "Float64Array", "BigInt64Array", "BigUint64Array"};
    auto t = v.As<Napi::TypedArray>().TypedArrayType();
    return (unsigned)t < sizeof names / sizeof *names ? names[t] : "a typed array";
  }
  if (v.IsString()) return "a string";
  if (v.IsObject()) return "an object";
  return "a value";
}

// Allocations made by alloc() live until free() or garbage collection, whichever comes first. Each block
// knows whether it was freed: after an explicit free() the allocator may hand the same address to a new
// block, and the old ArrayBuffer's finalizer (run later by the GC) must then leave that memory alone.
// The registry (live address → block) is shared by the addon instance and the finalizers.
struct Block;
struct Registry {
  std::mutex mu;
  std::unordered_map<void*, Block*> live;
};

struct Block {
  std::shared_ptr<Registry> registry;
  void* ptr;
  size_t bytes;
  bool freed;
};

// Tensors of 1 MiB and more are mapped pages of their own, so freeing one returns its memory to the system
// at once (malloc would keep freed large blocks in its arenas: weights of a disposed model stayed resident).
constexpr size_t kMapThreshold = size_t(1) << 20;

void* allocate(size_t bytes) {
  if (bytes >= kMapThreshold) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
  }
  return std::aligned_alloc(64, bytes);
}

void release(void* p, size_t bytes) {
  if (bytes >= kMapThreshold) munmap(p, bytes);
  else std::free(p);
}

void finalize_block(napi_env env, void*, void* hint) {
  Block* b = static_cast<Block*>(hint);
  bool release = false;
  {
    std::lock_guard<std::mutex> g(b->registry->mu);
    if (!b->freed) {
      b->registry->live.erase(b->ptr);
      b->freed = release = true;
    }
  }
  if (release) {
    ::release(b->ptr, b->bytes);
    int64_t adjusted;
    napi_adjust_external_memory(env, -(int64_t)b->bytes, &adjusted);
  }
  delete b;
}

class SanaAddon : public Napi::Addon<SanaAddon> {
 public:
  SanaAddon(Napi::Env env, Napi::Object exports) : registry_(std::make_shared<Registry>()) {
    ctx_ = sana_ctx_create(0);
    if (!ctx_) throw_code(env, "ERR_SANA_OUT_OF_MEMORY", "sana: could not create a compute context");
    DefineAddon(exports, {
                             InstanceMethod("info", &SanaAddon::Info),
                             InstanceMethod("setThreads", &SanaAddon::SetThreads),
                             InstanceMethod("setVariant", &SanaAddon::SetVariant),
                             InstanceMethod("alloc", &SanaAddon::Alloc),
                             InstanceMethod("free", &SanaAddon::Free),
                             InstanceMethod("packWeight", &SanaAddon::PackWeight),
                             InstanceMethod("linear", &SanaAddon::Linear),
                             InstanceMethod("conv2d", &SanaAddon::Conv2d),
                             InstanceMethod("linearAttention", &SanaAddon::LinearAttention),
                             InstanceMethod("attention", &SanaAddon::Attention),
                             InstanceMethod("glumbconv", &SanaAddon::Glumbconv),
                             InstanceMethod("layerNorm", &SanaAddon::LayerNorm),
                             InstanceMethod("residual", &SanaAddon::Residual),
                             InstanceMethod("mul", &SanaAddon::Mul),
                             InstanceMethod("rmsNorm", &SanaAddon::RmsNorm),
                             InstanceMethod("rmsNormChannels", &SanaAddon::RmsNormChannels),
                             InstanceMethod("pixelShuffle", &SanaAddon::PixelShuffle),
                             InstanceMethod("pixelUnshuffle", &SanaAddon::PixelUnshuffle),
                             InstanceMethod("upsampleNearest2x", &SanaAddon::UpsampleNearest2x),
                             InstanceMethod("activation", &SanaAddon::Activation),
                             InstanceMethod("rope", &SanaAddon::Rope),
                         });
  }
  ~SanaAddon() { sana_ctx_destroy(ctx_); }

 private:
  sana_ctx* ctx_ = nullptr;
  std::shared_ptr<Registry> registry_;

  // ---- argument helpers ----
  struct Args {
    const Napi::CallbackInfo& info;
    const char* op;
    Napi::Env env() const { return info.Env(); }

    ptrdiff_t size(size_t i, const char* name) const {
      Napi::Value v = info[i];
      if (!v.IsNumber()) invalid(env(), std::string(op) + ": Expected an integer for " + name + " but received " + describe(v));
      double d = v.As<Napi::Number>().DoubleValue();
      if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9007199254740991.0)
        invalid(env(), std::string(op) + ": Expected an integer for " + name + " but received " + describe(v));
      return (ptrdiff_t)d;
    }
    ptrdiff_t dim(size_t i, const char* name) const {
      ptrdiff_t d = size(i, name);
      if (d <= 0) invalid(env(), std::string(op) + ": Expected a positive size for " + name + " but received " + std::to_string(d));
      return d;
    }
    float real(size_t i, const char* name) const {
      Napi::Value v = info[i];
      if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue()))
        invalid(env(), std::string(op) + ": Expected a finite number for " + name + " but received " + describe(v));
      return (float)v.As<Napi::Number>().DoubleValue();
    }
    // A typed array of the given type holding at least `need` elements (need < 0: overflow).
    void* array(size_t i, const char* name, napi_typedarray_type type, ptrdiff_t need, bool optional = false) const {
      Napi::Value v = info[i];
      if (optional && (v.IsNull() || v.IsUndefined())) return nullptr;
      const char* want = type == napi_float32_array ? "Float32Array" : type == napi_uint16_array ? "Uint16Array" : "Int32Array";
      if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
        invalid(env(), std::string(op) + ": Expected a " + want + " for " + name + " but received " + describe(v));
      Napi::TypedArray t = v.As<Napi::TypedArray>();
      Napi::ArrayBuffer ab = t.ArrayBuffer();
      if (ab.IsDetached() || (t.ElementLength() == 0 && ab.ByteLength() == 0))
        invalid(env(), std::string(op) + ": Expected a live buffer for " + name + " but received a detached (freed) buffer");
      if (need < 0) invalid(env(), std::string(op) + ": Expected sizes whose product fits in memory for " + name);
      if ((ptrdiff_t)t.ElementLength() < need)
        invalid(env(), std::string(op) + ": Expected at least " + std::to_string(need) + " elements for " + name +
                           " but received " + std::to_string(t.ElementLength()));
      return static_cast<char*>(ab.Data()) + t.ByteOffset();
    }
    // Weights: Float32Array for dtype 0, Uint16Array for dtypes 1 (f16) and 2 (bf16).
    const void* weights(size_t i, const char* name, int dtype, ptrdiff_t need) const {
      if (dtype == SANA_F32) return array(i, name, napi_float32_array, need);
      if (dtype == SANA_F16 || dtype == SANA_BF16) return array(i, name, napi_uint16_array, need);
      invalid(env(), std::string(op) + ": Expected a dtype of 0 (f32), 1 (f16) or 2 (bf16) for dtype but received " +
                         std::to_string(dtype));
    }
    // A strided view given as (array, offset, sb, sn, sh, sd) over dims [B, N, H, D].
    sana_view4 view(size_t i, const char* name, ptrdiff_t B, ptrdiff_t N, ptrdiff_t H, ptrdiff_t D) const {
      ptrdiff_t off = size(i + 1, "offset"), st[4];
      const char* sn[4] = {"stride[0]", "stride[1]", "stride[2]", "stride[3]"};
      ptrdiff_t dims[4] = {B, N, H, D}, extent = off + 1;
      if (off < 0) invalid(env(), std::string(op) + ": Expected a non-negative offset for " + name + " but received " + std::to_string(off));
      for (int j = 0; j < 4; ++j) {
        st[j] = size(i + 2 + j, sn[j]);
        if (st[j] < 0) invalid(env(), std::string(op) + ": Expected non-negative strides for " + name + " but received " + std::to_string(st[j]));
        if (dims[j] <= 0) invalid(env(), std::string(op) + ": Expected positive sizes for " + name + " but received " + std::to_string(dims[j]));
        extent += (dims[j] - 1) * st[j];
      }
      float* base = static_cast<float*>(array(i, name, napi_float32_array, extent));
      return sana_view4{base + off, st[0], st[1], st[2], st[3]};
    }
  };

  static ptrdiff_t prod(std::initializer_list<ptrdiff_t> xs) {
    ptrdiff_t p = 1;
    for (ptrdiff_t x : xs) {
      if (x < 0 || (x != 0 && p > ((ptrdiff_t)1 << 52) / x)) return -1;
      p *= x;
    }
    return p;
  }

  Napi::Value check(Napi::Env env, int status) {
    if (status != SANA_OK) throw_code(env, code_of(status), sana_ctx_last_error(ctx_));
    return env.Undefined();
  }

  template <class F>
  Napi::Value guarded(const Napi::CallbackInfo& info, F&& body) {
    try {
      return body();
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::bad_alloc&) {
      throw_code(info.Env(), "ERR_SANA_OUT_OF_MEMORY", "sana: out of memory");
    } catch (const std::exception& e) {
      throw_code(info.Env(), "ERR_SANA_NATIVE", std::string("sana: ") + e.what());
    }
  }

  // ---- context ----
  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("variant", sana_variant_name(sana_ctx_variant(ctx_)));
    o.Set("bestVariant", sana_variant_name(sana_best_variant()));
    o.Set("threads", sana_ctx_threads(ctx_));
    o.Set("hardwareThreads", sana_hardware_threads());
    Napi::Array variants = Napi::Array::New(env);
    uint32_t n = 0;
    for (int v = 0; v < SANA_VARIANT_COUNT; ++v) {
      Napi::Object e = Napi::Object::New(env);
      e.Set("name", sana_variant_name(v));
      e.Set("supported", (bool)sana_variant_supported(v));
      variants.Set(n++, e);
    }
    o.Set("variants", variants);
    return o;
  }

  Napi::Value SetThreads(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "setThreads"};
      ptrdiff_t t = a.size(0, "threads");
      if (t < 0 || t > 256) invalid(info.Env(), "setThreads: Expected 0 (all cores) .. 256 for threads but received " + std::to_string(t));
      return check(info.Env(), sana_ctx_set_threads(ctx_, (int)t));
    });
  }

  Napi::Value SetVariant(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      if (!info[0].IsString()) invalid(info.Env(), "setVariant: Expected a variant name for variant but received " + describe(info[0]));
      std::string name = info[0].As<Napi::String>().Utf8Value();
      for (int v = 0; v < SANA_VARIANT_COUNT; ++v)
        if (name == sana_variant_name(v)) return check(info.Env(), sana_ctx_set_variant(ctx_, v));
      invalid(info.Env(), "setVariant: Expected one of ref, baseline, avx2, avx512, avx512bf16, amx-bf16 for variant but received " + name);
    });
  }

  Napi::Value Alloc(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "alloc"};
      ptrdiff_t bytes = a.size(0, "bytes");
      if (bytes <= 0 || bytes > ((ptrdiff_t)1 << 46))
        invalid(info.Env(), "alloc: Expected 1 .. 2^46 for bytes but received " + std::to_string(bytes));
      size_t rounded = ((size_t)bytes + 63) / 64 * 64;
      void* p = allocate(rounded);
      if (!p) throw_code(info.Env(), "ERR_SANA_OUT_OF_MEMORY", "alloc: could not allocate " + std::to_string(bytes) + " bytes");
      Block* b = new Block{registry_, p, rounded, false};
      {
        std::lock_guard<std::mutex> g(registry_->mu);
        registry_->live[p] = b;
      }
      napi_value ab;
      napi_status st = napi_create_external_arraybuffer(info.Env(), p, (size_t)bytes, finalize_block, b, &ab);
      if (st != napi_ok) {
        {
          std::lock_guard<std::mutex> g(registry_->mu);
          registry_->live.erase(p);
        }
        release(p, rounded);
        delete b;
        throw_code(info.Env(), "ERR_SANA_NATIVE", "alloc: this runtime does not allow external buffers");
      }
      int64_t adjusted;
      napi_adjust_external_memory(info.Env(), (int64_t)rounded, &adjusted);
      return Napi::Value(info.Env(), ab);
    });
  }

  // Frees an alloc()ed buffer now and detaches it, so every view of it reads as length 0.
  Napi::Value Free(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      if (!info[0].IsArrayBuffer()) invalid(info.Env(), "free: Expected an ArrayBuffer from alloc() for buffer but received " + describe(info[0]));
      Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
      if (ab.IsDetached()) return info.Env().Undefined();  // already freed: freeing twice is a no-op
      void* p = ab.Data();
      size_t bytes = 0;
      {
        std::lock_guard<std::mutex> g(registry_->mu);
        auto it = registry_->live.find(p);
        if (it == registry_->live.end()) invalid(info.Env(), "free: Expected an ArrayBuffer from alloc() for buffer but received another ArrayBuffer");
        bytes = it->second->bytes;
        it->second->freed = true;  // its finalizer must not free this address again
        registry_->live.erase(it);
      }
      ab.Detach();
      release(p, bytes);
      int64_t adjusted;
      napi_adjust_external_memory(info.Env(), -(int64_t)bytes, &adjusted);
      return info.Env().Undefined();
    });
  }

  // ---- ops: argument order mirrors the C ABI ----
  Napi::Value PackWeight(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "packWeight"};
      ptrdiff_t N = a.dim(1, "N"), K = a.dim(2, "K");
      auto w = static_cast<const float*>(a.array(0, "w", napi_float32_array, prod({N, K})));
      auto packed = static_cast<float*>(a.array(3, "packed", napi_float32_array, sana_packed_weight_size(N, K)));
      return check(info.Env(), sana_pack_weight(ctx_, w, N, K, packed));
    });
  }

  Napi::Value Linear(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "linear"};
      ptrdiff_t M = a.dim(1, "M"), K = a.dim(2, "K"), N = a.dim(5, "N");
      int dt = (int)a.size(4, "dtype");
      int act = (int)a.size(7, "act"), flags = (int)a.size(8, "flags");
      auto x = static_cast<const float*>(a.array(0, "x", napi_float32_array, prod({M, K})));
      auto w = a.weights(3, "w", dt, flags & SANA_GEMM_PACKED_WEIGHT ? sana_packed_weight_size(N, K) : prod({N, K}));
      auto bias = static_cast<const float*>(a.array(6, "bias", napi_float32_array, N, true));
      auto y = static_cast<float*>(a.array(9, "y", napi_float32_array, prod({M, N})));
      return check(info.Env(), sana_linear(ctx_, x, M, K, w, dt, N, bias, act, flags, y));
    });
  }

  Napi::Value Conv2d(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "conv2d"};
      ptrdiff_t B = a.dim(1, "B"), Cin = a.dim(2, "Cin"), H = a.dim(3, "H"), W = a.dim(4, "W");
      int dt = (int)a.size(6, "dtype");
      ptrdiff_t Cout = a.dim(7, "Cout"), kh = a.dim(8, "kh"), kw = a.dim(9, "kw"), stride = a.dim(10, "stride");
      ptrdiff_t pad = a.size(11, "pad"), groups = a.dim(12, "groups");
      int act = (int)a.size(14, "act");
      if (Cin % groups != 0 || Cout % groups != 0)
        invalid(info.Env(), "conv2d: Expected a divisor of Cin (" + std::to_string(Cin) + ") and Cout (" +
                                std::to_string(Cout) + ") for groups but received " + std::to_string(groups));
      if (pad < 0) invalid(info.Env(), "conv2d: Expected 0..63 for pad but received " + std::to_string(pad));
      ptrdiff_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
      auto x = static_cast<const float*>(a.array(0, "x", napi_float32_array, prod({B, Cin, H, W})));
      auto w = a.weights(5, "w", dt, prod({Cout, Cin / groups, kh, kw}));
      auto bias = static_cast<const float*>(a.array(13, "bias", napi_float32_array, Cout, true));
      auto y = static_cast<float*>(a.array(15, "y", napi_float32_array, prod({B, Cout, Ho > 0 ? Ho : 0, Wo > 0 ? Wo : 0})));
      return check(info.Env(), sana_conv2d(ctx_, x, B, Cin, H, W, w, dt, Cout, kh, kw, stride, pad, groups, bias, act, y));
    });
  }

  Napi::Value LinearAttention(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "linearAttention"};
      ptrdiff_t B = a.dim(24, "B"), N = a.dim(25, "N"), Hh = a.dim(26, "heads"), D = a.dim(27, "headDim");
      float eps = a.real(28, "eps");
      sana_view4 q = a.view(0, "q", B, N, Hh, D), k = a.view(6, "k", B, N, Hh, D), v = a.view(12, "v", B, N, Hh, D),
                 o = a.view(18, "out", B, N, Hh, D);
      return check(info.Env(), sana_linear_attention(ctx_, &q, &k, &v, &o, B, N, Hh, D, eps));
    });
  }

  Napi::Value Attention(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "attention"};
      sana_attention_params p{};
      p.batch = a.dim(25, "batch");
      p.len_q = a.dim(26, "lenQ");
      p.len_kv = a.dim(27, "lenKv");
      p.heads_q = a.dim(28, "headsQ");
      p.heads_kv = a.dim(29, "headsKv");
      p.head_dim = a.dim(30, "headDim");
      p.head_dim_v = a.dim(31, "headDimV");
      p.scale = a.real(32, "scale");
      p.softcap = a.real(33, "softcap");
      p.causal = (int)a.size(34, "causal");
      p.window = a.size(35, "window");
      sana_view4 q = a.view(0, "q", p.batch, p.len_q, p.heads_q, p.head_dim);
      sana_view4 k = a.view(6, "k", p.batch, p.len_kv, p.heads_kv, p.head_dim);
      sana_view4 v = a.view(12, "v", p.batch, p.len_kv, p.heads_kv, p.head_dim_v);
      auto bias = static_cast<const float*>(a.array(18, "keyBias", napi_float32_array, prod({p.batch, p.len_kv}), true));
      sana_view4 o = a.view(19, "out", p.batch, p.len_q, p.heads_q, p.head_dim_v);
      return check(info.Env(), sana_attention(ctx_, &q, &k, &v, bias, &p, &o));
    });
  }

  Napi::Value Glumbconv(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "glumbconv"};
      ptrdiff_t B = a.dim(1, "B"), H = a.dim(2, "H"), W = a.dim(3, "W"), C = a.dim(4, "C");
      int dt = (int)a.size(10, "dtype");
      ptrdiff_t F = a.dim(11, "F"), Cout = a.dim(12, "Cout");
      int flags = (int)a.size(13, "flags");
      bool packed = flags & SANA_GEMM_PACKED_WEIGHT;
      auto x = static_cast<const float*>(a.array(0, "x", napi_float32_array, prod({B, H, W, C})));
      auto wi = a.weights(5, "wInverted", dt, packed ? sana_packed_weight_size(2 * F, C) : prod({2, F, C}));
      auto bi = static_cast<const float*>(a.array(6, "bInverted", napi_float32_array, prod({2, F}), true));
      auto wd = a.weights(7, "wDepth", dt, prod({2, F, 9}));
      auto bd = static_cast<const float*>(a.array(8, "bDepth", napi_float32_array, prod({2, F}), true));
      auto wp = a.weights(9, "wPoint", dt, packed ? sana_packed_weight_size(Cout, F) : prod({Cout, F}));
      auto y = static_cast<float*>(a.array(14, "y", napi_float32_array, prod({B, H, W, Cout})));
      return check(info.Env(), sana_glumbconv(ctx_, x, B, H, W, C, wi, bi, wd, bd, wp, dt, F, Cout, flags, y));
    });
  }

  Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "layerNorm"};
      ptrdiff_t rows = a.dim(1, "rows"), dim = a.dim(2, "dim"), rpb = a.size(6, "rowsPerBatch");
      float eps = a.real(3, "eps");
      ptrdiff_t nb = rpb > 0 ? rows / rpb : 0;
      auto x = static_cast<const float*>(a.array(0, "x", napi_float32_array, prod({rows, dim})));
      auto scale = static_cast<const float*>(a.array(4, "scale", napi_float32_array, prod({nb, dim}), true));
      auto shift = static_cast<const float*>(a.array(5, "shift", napi_float32_array, prod({nb, dim}), true));
      auto y = static_cast<float*>(a.array(7, "y", napi_float32_array, prod({rows, dim})));
      return check(info.Env(), sana_layer_norm(ctx_, x, rows, dim, eps, scale, shift, rpb, y));
    });
  }

  Napi::Value Residual(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "residual"};
      ptrdiff_t rows = a.dim(2, "rows"), dim = a.dim(3, "dim"), rpb = a.size(5, "rowsPerBatch");
      ptrdiff_t nb = rpb > 0 ? rows / rpb : 0;
      auto x = static_cast<const float*>(a.array(0, "x", napi_float32_array, prod({rows, dim})));
      auto y = static_cast<const float*>(a.array(1, "y", napi_float32_array, prod({rows, dim})));
      auto gate = static_cast<const float*>(a.array(4, "gate", napi_float32_array, prod({nb, dim}), true));
      auto out = static_cast<float*>(a.array(6, "out", napi_float32_array, prod({rows, dim})));
      return check(info.Env(), sana_residual(ctx_, x, y, rows, dim, gate, rpb, out));
    });
  }

  Napi::Value Mul(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "mul"};
      ptrdiff_t n = a.dim(2, "n");
      auto x = static_cast<const float*>(a.array(0, "x", napi_float32_array, n));
      auto y = static_cast<const float*>(a.array(1, "y", napi_float32_array, n));
      auto out = static_cast<float*>(a.array(3, "out", napi_float32_array, n));
      return check(info.Env(), sana_mul(ctx_, x, y, n, out));
    });
  }

  Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "rmsNorm"};
      ptrdiff_t rows = a.dim(1, "rows"), dim = a.dim(2, "dim");
      auto x = static_cast<const float*>(a.array(0, "x", napi_float32_array, prod({rows, dim})));
      auto w = static_cast<const float*>(a.array(3, "weight", napi_float32_array, dim, true));
      auto b = static_cast<const float*>(a.array(4, "bias", napi_float32_array, dim, true));
      float eps = a.real(5, "eps");
      int mode = (int)a.size(6, "mode");
      auto y = static_cast<float*>(a.array(7, "y", napi_float32_array, prod({rows, dim})));
      return check(info.Env(), sana_rms_norm(ctx_, x, rows, dim, w, b, eps, mode, y));
    });
  }

  Napi::Value RmsNormChannels(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "rmsNormChannels"};
      ptrdiff_t B = a.dim(1, "B"), C = a.dim(2, "C"), HW = a.dim(3, "HW");
      auto x = static_cast<const float*>(a.array(0, "x", napi_float32_array, prod({B, C, HW})));
      auto w = static_cast<const float*>(a.array(4, "weight", napi_float32_array, C, true));
      auto b = static_cast<const float*>(a.array(5, "bias", napi_float32_array, C, true));
      float eps = a.real(6, "eps");
      auto y = static_cast<float*>(a.array(7, "y", napi_float32_array, prod({B, C, HW})));
      return check(info.Env(), sana_rms_norm_channels(ctx_, x, B, C, HW, w, b, eps, y));
    });
  }

  Napi::Value PixelShuffle(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "pixelShuffle"};
      ptrdiff_t B = a.dim(1, "B"), C = a.dim(2, "C"), H = a.dim(3, "H"), W = a.dim(4, "W"), r = a.dim(5, "r");
      auto x = static_cast<const float*>(a.array(0, "x", napi_float32_array, prod({B, C, r, r, H, W})));
      auto y = static_cast<float*>(a.array(6, "y", napi_float32_array, prod({B, C, r, r, H, W})));
      return check(info.Env(), sana_pixel_shuffle(ctx_, x, B, C, H, W, r, y));
    });
  }

  Napi::Value PixelUnshuffle(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "pixelUnshuffle"};
      ptrdiff_t B = a.dim(1, "B"), C = a.dim(2, "C"), H = a.dim(3, "H"), W = a.dim(4, "W"), r = a.dim(5, "r");
      auto x = static_cast<const float*>(a.array(0, "x", napi_float32_array, prod({B, C, H, W})));
      auto y = static_cast<float*>(a.array(6, "y", napi_float32_array, prod({B, C, H, W})));
      return check(info.Env(), sana_pixel_unshuffle(ctx_, x, B, C, H, W, r, y));
    });
  }

  Napi::Value UpsampleNearest2x(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "upsampleNearest2x"};
      ptrdiff_t B = a.dim(1, "B"), C = a.dim(2, "C"), H = a.dim(3, "H"), W = a.dim(4, "W");
      auto x = static_cast<const float*>(a.array(0, "x", napi_float32_array, prod({B, C, H, W})));
      auto y = static_cast<float*>(a.array(5, "y", napi_float32_array, prod({B, C, 4, H, W})));
      return check(info.Env(), sana_upsample_nearest2x(ctx_, x, B, C, H, W, y));
    });
  }

  Napi::Value Activation(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "activation"};
      ptrdiff_t n = a.dim(1, "n");
      auto x = static_cast<const float*>(a.array(0, "x", napi_float32_array, n));
      int act = (int)a.size(2, "act");
      auto y = static_cast<float*>(a.array(3, "y", napi_float32_array, n));
      return check(info.Env(), sana_activation(ctx_, x, n, act, y));
    });
  }

  Napi::Value Rope(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      Args a{info, "rope"};
      ptrdiff_t B = a.dim(12, "B"), L = a.dim(13, "L"), Hh = a.dim(14, "heads"), D = a.dim(15, "dim");
      sana_view4 x = a.view(0, "x", B, L, Hh, D), o = a.view(6, "out", B, L, Hh, D);
      auto pos = static_cast<const int32_t*>(a.array(16, "positions", napi_int32_array, L, true));
      float theta = a.real(17, "theta");
      return check(info.Env(), sana_rope(ctx_, &x, B, L, Hh, D, pos, theta, &o));
    });
  }
};

}  // namespace

NODE_API_ADDON(SanaAddon)
