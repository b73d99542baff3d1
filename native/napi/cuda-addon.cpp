// The N-API layer of the CUDA backend (sana_cuda.node, built only where nvcc is): probe(), and contexts made
// by open(device), each with its own GPU stream. Ops run through the same generic sana_call as the cpu addon
// (same argument checks); device blocks are plain addresses (no ArrayBuffer), tracked so that every pointer
// argument must lie inside a live block of its context. read() and synchronize() wait off the JS thread and
// return Promises.
#include <napi.h>

#include <map>
#include <memory>
#include <mutex>

#include "../kernels/cuda/sana_cuda.h"
#include "common.h"

namespace {

// Owned by the JS context object and by every read or synchronize in flight, so a context disposed (or
// collected) while a copy runs outlives that copy.
struct Device {
  sana_ctx* ctx = nullptr;
  std::mutex mu;
  std::map<uintptr_t, size_t> live;  // device blocks by start address
  ~Device() {
    if (ctx) sana_ctx_destroy(ctx);  // synchronises the stream first
  }
  bool contains(uintptr_t a) {
    std::lock_guard<std::mutex> g(mu);
    auto it = live.upper_bound(a);
    if (it == live.begin()) return false;
    --it;
    return a < it->first + it->second;
  }
};

// Waits for the stream (and, for a read, copies a device range into a host array) on a libuv thread.
class Wait : public Napi::AsyncWorker {
 public:
  Wait(Napi::Env env, std::shared_ptr<Device> dev, void* dst, const void* src, size_t bytes, Napi::Object keep)
      : Napi::AsyncWorker(env), dev_(std::move(dev)), dst_(dst), src_(src), bytes_(bytes), deferred_(Napi::Promise::Deferred::New(env)) {
    if (!keep.IsEmpty()) keep_ = Napi::Persistent(keep);
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    char err[512] = {0};
    int st = dst_ ? sana_cuda_download(dev_->ctx, dst_, src_, bytes_, err, sizeof err) : sana_cuda_synchronize(dev_->ctx, err, sizeof err);
    if (st != SANA_OK) SetError(err);
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override {
    Napi::Error coded = Napi::Error::New(Env(), e.Message());
    coded.Set("code", Napi::String::New(Env(), "ERR_SANA_NATIVE"));
    deferred_.Reject(coded.Value());
  }

 private:
  std::shared_ptr<Device> dev_;
  void* dst_;
  const void* src_;
  size_t bytes_;
  Napi::ObjectReference keep_;
  Napi::Promise::Deferred deferred_;
};

class Context : public Napi::ObjectWrap<Context> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "CudaContext", {
        InstanceMethod("info", &Context::Info),
        InstanceMethod("ops", &Context::Ops),
        InstanceMethod("argBuffer", &Context::ArgBuffer),
        InstanceMethod("call", &Context::Call),
        InstanceMethod("alloc", &Context::Alloc),
        InstanceMethod("free", &Context::Free),
        InstanceMethod("upload", &Context::Upload),
        InstanceMethod("download", &Context::Download),
        InstanceMethod("downloadSync", &Context::DownloadSync),
        InstanceMethod("synchronize", &Context::Synchronize),
        InstanceMethod("dispose", &Context::Dispose),
    });
  }

  Context(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Context>(info) {
    guarded(info, [&] {
      int device = (int)integer_arg(info, 0, "open", "device");
      char err[512] = {0};
      sana_ctx* ctx = sana_cuda_ctx_create(device, err, sizeof err);
      if (!ctx) throw_code(info.Env(), "ERR_SANA_BACKEND_UNAVAILABLE", std::string("cuda:") + std::to_string(device) + ": " + err);
      dev_ = std::make_shared<Device>();
      dev_->ctx = ctx;
      return info.Env().Undefined();
    });
  }

 private:
  std::shared_ptr<Device> dev_;
  Napi::Reference<Napi::Float64Array> args_;

  bool closing_ = false;  // disposed: no new work; the context lives on until its last block is freed

  sana_ctx* ctx(Napi::Env env) {
    if (!dev_ || closing_) throw_code(env, "ERR_SANA_DISPOSED", "cuda: this context was disposed");
    return dev_->ctx;
  }
  void release_if_done() {
    std::lock_guard<std::mutex> g(dev_->mu);
    if (closing_ && dev_->live.empty()) dev_.reset();
  }
  Napi::Value check(Napi::Env env, int status) {
    if (status != SANA_OK) throw_code(env, code_of(status), sana_ctx_last_error(dev_->ctx));
    return env.Undefined();
  }
  // [address, bytes] of a device range: inside one live block
  void check_range(Napi::Env env, const char* op, uintptr_t a, size_t bytes) {
    if (!dev_->contains(a) || (bytes > 0 && !dev_->contains(a + bytes - 1)))
      invalid(env, std::string(op) + ": Expected a range inside a live device block of this context");
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      sana_cuda_device_info d{};
      check(info.Env(), sana_cuda_info(ctx(info.Env()), &d));
      Napi::Object o = Napi::Object::New(info.Env());
      o.Set("name", d.name);
      o.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
      o.Set("totalBytes", (double)d.total_bytes);
      o.Set("freeBytes", (double)d.free_bytes);
      o.Set("driverVersion", d.driver_version);
      o.Set("runtimeVersion", d.runtime_version);
      return Napi::Value(o);
    });
  }

  Napi::Value Ops(const Napi::CallbackInfo& info) { return op_list(info.Env()); }
  Napi::Value ArgBuffer(const Napi::CallbackInfo& info) { return arg_buffer(info.Env(), args_); }

  Napi::Value Call(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      sana_ctx* c = ctx(info.Env());
      CallArgs a = call_args(info, args_, [&](uintptr_t p) { return dev_->contains(p); });
      check(info.Env(), sana_cuda_make_current(c));
      return check(info.Env(), sana_call(c, a.op, a.slots, a.nargs));
    });
  }

  // alloc(bytes) → the block's device address
  Napi::Value Alloc(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      sana_ctx* c = ctx(info.Env());
      ptrdiff_t bytes = integer_arg(info, 0, "alloc", "bytes");
      if (bytes <= 0 || bytes > ((ptrdiff_t)1 << 46)) invalid(info.Env(), "alloc: Expected 1 .. 2^46 for bytes but received " + std::to_string(bytes));
      size_t rounded = ((size_t)bytes + 255) / 256 * 256;
      void* p = nullptr;
      check(info.Env(), sana_cuda_alloc(c, rounded, &p));
      std::lock_guard<std::mutex> g(dev_->mu);
      dev_->live[(uintptr_t)p] = rounded;
      return Napi::Value(Napi::Number::New(info.Env(), (double)(uintptr_t)p));
    });
  }

  Napi::Value Free(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      uintptr_t a = (uintptr_t)integer_arg(info, 0, "free", "address");
      if (!dev_) return info.Env().Undefined();
      {
        std::lock_guard<std::mutex> g(dev_->mu);
        auto it = dev_->live.find(a);
        if (it == dev_->live.end()) return info.Env().Undefined();  // freeing twice is a no-op
        dev_->live.erase(it);
      }
      check(info.Env(), sana_cuda_free(dev_->ctx, (void*)a));
      release_if_done();
      return info.Env().Undefined();
    });
  }

  // The (address, typed array) arguments of a copy: a device range inside one live block and the host bytes.
  struct CopyArgs {
    uintptr_t device;
    char* host;
    size_t bytes;
    Napi::TypedArray array;
  };
  CopyArgs copy_args(const Napi::CallbackInfo& info, const char* op, const char* what) {
    uintptr_t a = (uintptr_t)integer_arg(info, 0, op, "address");
    if (!info[1].IsTypedArray()) invalid(info.Env(), std::string(op) + ": Expected a Uint8Array for " + what + " but received " + describe(info[1]));
    Napi::TypedArray array = info[1].As<Napi::TypedArray>();
    check_range(info.Env(), op, a, array.ByteLength());
    return {a, static_cast<char*>(array.ArrayBuffer().Data()) + array.ByteOffset(), array.ByteLength(), array};
  }

  // upload(address, Uint8Array): returns once the bytes are staged
  Napi::Value Upload(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      sana_ctx* c = ctx(info.Env());
      CopyArgs a = copy_args(info, "upload", "src");
      return check(info.Env(), sana_cuda_upload(c, (void*)a.device, a.host, a.bytes));
    });
  }

  // download(address, Uint8Array) → Promise, resolved when the bytes are in the array
  Napi::Value Download(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      ctx(info.Env());
      CopyArgs a = copy_args(info, "download", "dst");
      auto* w = new Wait(info.Env(), dev_, a.host, (const void*)a.device, a.bytes, a.array);
      Napi::Promise promise = w->promise();
      w->Queue();
      return Napi::Value(promise);
    });
  }

  // downloadSync(address, Uint8Array): the same copy, waiting on the JS thread
  Napi::Value DownloadSync(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      sana_ctx* c = ctx(info.Env());
      CopyArgs a = copy_args(info, "downloadSync", "dst");
      char err[512] = {0};
      if (sana_cuda_download(c, a.host, (const void*)a.device, a.bytes, err, sizeof err) != SANA_OK) throw_code(info.Env(), "ERR_SANA_NATIVE", err);
      return info.Env().Undefined();
    });
  }

  Napi::Value Synchronize(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      ctx(info.Env());
      auto* w = new Wait(info.Env(), dev_, nullptr, nullptr, 0, Napi::Object());
      Napi::Promise promise = w->promise();
      w->Queue();
      return Napi::Value(promise);
    });
  }

  // No new work from here; the context (stream, pool) is destroyed once its last block is freed and no read
  // or synchronize is in flight, so tensors made before stay valid until disposed.
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (dev_) {
      closing_ = true;
      release_if_done();
    }
    return info.Env().Undefined();
  }
};

class CudaAddon : public Napi::Addon<CudaAddon> {
 public:
  CudaAddon(Napi::Env env, Napi::Object exports) {
    DefineAddon(exports, {InstanceMethod("probe", &CudaAddon::Probe)});
    exports.Set("Context", Context::Define(env));
  }

 private:
  // {available, reason?, devices}
  Napi::Value Probe(const Napi::CallbackInfo& info) {
    char reason[512] = {0};
    Napi::Object o = Napi::Object::New(info.Env());
    bool ok = sana_cuda_probe(reason, sizeof reason) == SANA_OK;
    o.Set("available", ok);
    if (!ok) o.Set("reason", reason);
    o.Set("devices", ok ? sana_cuda_device_count() : 0);
    return o;
  }
};

}  // namespace

NODE_API_ADDON(CudaAddon)
