// The N-API layer: the only code that includes napi.h. It hands out tensor memory (alloc/free), and runs
// every op through the generic sana_call: the arguments arrive as doubles in one Float64Array shared with
// the TS side (no per-call objects); every pointer among them must lie inside a live block of this addon, so
// a stale or foreign address is a JS Error, never a wild access. A status becomes a JS Error with a `code`
// (ts/errors.ts wraps it in a SanaError). No model logic lives here.
// Context-aware (Napi::Addon): each JS thread (main or worker) gets its own sana_ctx and thread pool.
#include <napi.h>
#include <sys/mman.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <map>

#include "../include/sana_ops.h"
#include "common.h"

namespace {

// Allocations made by alloc() live until free() or garbage collection, whichever comes first. Each block
// knows whether it was freed: after an explicit free() the allocator may hand the same address to a new
// block, and the old ArrayBuffer's finalizer (run later by the GC) must then leave that memory alone.
// The registry (live address → block) is shared by the addon instance and the finalizers.
struct Block;
struct Registry {
  std::mutex mu;
  std::map<uintptr_t, Block*> live;  // by start address, for "which block holds this address"

  // Whether the byte at addr lies inside a live block.
  bool contains(uintptr_t addr);
};

struct Block {
  std::shared_ptr<Registry> registry;
  void* ptr;
  size_t bytes;
  bool freed;
};

bool Registry::contains(uintptr_t addr) {
  std::lock_guard<std::mutex> g(mu);
  auto it = live.upper_bound(addr);
  if (it == live.begin()) return false;
  --it;
  return addr < it->first + it->second->bytes;
}

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
      b->registry->live.erase((uintptr_t)b->ptr);
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
                             InstanceMethod("ops", &SanaAddon::Ops),
                             InstanceMethod("argBuffer", &SanaAddon::ArgBuffer),
                             InstanceMethod("call", &SanaAddon::Call),
                         });
  }
  ~SanaAddon() { sana_ctx_destroy(ctx_); }

 private:
  sana_ctx* ctx_ = nullptr;
  std::shared_ptr<Registry> registry_;
  Napi::Reference<Napi::Float64Array> args_;

  Napi::Value check(Napi::Env env, int status) {
    if (status != SANA_OK) throw_code(env, code_of(status), sana_ctx_last_error(ctx_));
    return env.Undefined();
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
      ptrdiff_t t = integer_arg(info, 0, "setThreads", "threads");
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
      ptrdiff_t bytes = integer_arg(info, 0, "alloc", "bytes");
      if (bytes <= 0 || bytes > ((ptrdiff_t)1 << 46))
        invalid(info.Env(), "alloc: Expected 1 .. 2^46 for bytes but received " + std::to_string(bytes));
      size_t rounded = ((size_t)bytes + 63) / 64 * 64;
      void* p = allocate(rounded);
      if (!p) throw_code(info.Env(), "ERR_SANA_OUT_OF_MEMORY", "alloc: could not allocate " + std::to_string(bytes) + " bytes");
      Block* b = new Block{registry_, p, rounded, false};
      {
        std::lock_guard<std::mutex> g(registry_->mu);
        registry_->live[(uintptr_t)p] = b;
      }
      napi_value ab;
      napi_status st = napi_create_external_arraybuffer(info.Env(), p, (size_t)bytes, finalize_block, b, &ab);
      if (st != napi_ok) {
        {
          std::lock_guard<std::mutex> g(registry_->mu);
          registry_->live.erase((uintptr_t)p);
        }
        release(p, rounded);
        delete b;
        throw_code(info.Env(), "ERR_SANA_NATIVE", "alloc: this runtime does not allow external buffers");
      }
      int64_t adjusted;
      napi_adjust_external_memory(info.Env(), (int64_t)rounded, &adjusted);
      Napi::Array pair = Napi::Array::New(info.Env(), 2);
      pair.Set(0u, Napi::Value(info.Env(), ab));
      pair.Set(1u, Napi::Number::New(info.Env(), (double)(uintptr_t)p));
      return Napi::Value(pair);
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
        auto it = registry_->live.find((uintptr_t)p);
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

  // ---- ops ----
  Napi::Value Ops(const Napi::CallbackInfo& info) { return op_list(info.Env()); }
  Napi::Value ArgBuffer(const Napi::CallbackInfo& info) { return arg_buffer(info.Env(), args_); }

  Napi::Value Call(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      CallArgs c = call_args(info, args_, [&](uintptr_t a) { return registry_->contains(a); });
      return check(info.Env(), sana_call(ctx_, c.op, c.slots, c.nargs));
    });
  }
};

}  // namespace

NODE_API_ADDON(SanaAddon)
