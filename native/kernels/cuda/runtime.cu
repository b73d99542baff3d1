// The CUDA device runtime: the probe, contexts bound to one device and one stream, stream-ordered device
// memory from the device's pool, copies (uploads through pinned staging), and the kernel table.
#include <cstdio>
#include <cstring>
#include <new>

#include "common.cuh"
#include "ops.h"
#include "sana_cuda.h"

namespace sana {
namespace cuda {
namespace {

const KernelTable table = {"cuda", SANA_KERNEL_OPS(SANA_TABLE_ROW)};

// Uploads go through two pinned buffers in turn: the host copy into one overlaps the DMA out of the other.
constexpr size_t kStagingBytes = size_t(8) << 20;
struct Staging {
  void* buf[2] = {};
  cudaEvent_t done[2] = {};
};
// One staging pair per context, made on its first upload.
struct ContextState : State {
  Staging staging;
  bool staging_ready = false;
};

void destroy_state(void* p) {
  auto* s = static_cast<ContextState*>(p);
  cudaSetDevice(s->device);
  if (s->stream) cudaStreamSynchronize(s->stream);
  for (int i = 0; i < 2; ++i) {
    if (s->staging.buf[i]) cudaFreeHost(s->staging.buf[i]);
    if (s->staging.done[i]) cudaEventDestroy(s->staging.done[i]);
  }
  if (s->report_host) cudaFreeHost(s->report_host);
  if (s->report_dev) cudaFree(s->report_dev);
  if (s->counter_dev) cudaFree(s->counter_dev);
  if (s->stream) cudaStreamDestroy(s->stream);
  delete s;
}

int cuda_fail(sana_ctx* ctx, const char* op, cudaError_t e) {
  cudaGetLastError();  // a non-sticky error must not fail the next call
  return fail(ctx, e == cudaErrorMemoryAllocation ? SANA_ERR_OUT_OF_MEMORY : SANA_ERR_INTERNAL, "%s: CUDA error: %s", op,
              cudaGetErrorString(e));
}

void version_text(int v, char* out, size_t n) { snprintf(out, n, "%d.%d", v / 1000, v % 1000 / 10); }

}  // namespace
}  // namespace cuda
}  // namespace sana

using namespace sana;
using namespace sana::cuda;

extern "C" {

int sana_cuda_probe(char* reason, size_t n) {
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  char drv[16], rt[16];
  version_text(driver, drv, sizeof drv);
  version_text(runtime, rt, sizeof rt);
  if (driver == 0) {
    snprintf(reason, n, "no NVIDIA driver was found (libcuda.so.1 is not installed or not loadable)");
    return SANA_ERR_UNSUPPORTED;
  }
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  cudaGetLastError();
  if (e == cudaErrorInsufficientDriver) {
    snprintf(reason, n, "the NVIDIA driver supports CUDA %s, older than this build's CUDA runtime %s: update the driver", drv, rt);
    return SANA_ERR_UNSUPPORTED;
  }
  if (e == cudaErrorNoDevice || (e == cudaSuccess && count == 0)) {
    snprintf(reason, n, "no CUDA device is visible (driver CUDA %s; check CUDA_VISIBLE_DEVICES)", drv);
    return SANA_ERR_UNSUPPORTED;
  }
  if (e != cudaSuccess) {
    snprintf(reason, n, "the CUDA driver failed to start: %s", cudaGetErrorString(e));
    return SANA_ERR_UNSUPPORTED;
  }
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, d) == cudaSuccess && p.major >= 8) return SANA_OK;
  }
  cudaDeviceProp p;
  cudaGetDeviceProperties(&p, 0);
  snprintf(reason, n, "compute capability %d.%d of %s is below 8.0 (sana-node's CUDA kernels need Ampere or newer)", p.major, p.minor, p.name);
  return SANA_ERR_UNSUPPORTED;
}

int sana_cuda_device_count(void) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

sana_ctx* sana_cuda_ctx_create(int device, char* error, size_t n) {
  char why[256];
  if (sana_cuda_probe(why, sizeof why) != SANA_OK) {
    snprintf(error, n, "%s", why);
    return nullptr;
  }
  int count = sana_cuda_device_count();
  if (device < 0 || device >= count) {
    snprintf(error, n, "Expected a CUDA device 0..%d but received cuda:%d", count - 1, device);
    return nullptr;
  }
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess || p.major < 8) {
    snprintf(error, n, "cuda:%d (%s) has compute capability %d.%d, below 8.0", device, p.name, p.major, p.minor);
    return nullptr;
  }
  auto* s = new (std::nothrow) ContextState();
  sana_ctx* ctx = s ? sana_ctx_create(1) : nullptr;
  if (!ctx) {
    delete s;
    snprintf(error, n, "out of host memory for a CUDA context");
    return nullptr;
  }
  s->device = device;
  cudaError_t e = cudaSetDevice(device);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaMallocHost(reinterpret_cast<void**>(&s->report_host), 2 * sizeof(int));
  if (e == cudaSuccess) e = cudaMalloc(reinterpret_cast<void**>(&s->report_dev), 2 * sizeof(int));
  if (e == cudaSuccess) e = cudaMalloc(reinterpret_cast<void**>(&s->counter_dev), sizeof(unsigned long long));
  if (e == cudaSuccess) {
    // freed activation blocks stay in the device's pool for the next allocation instead of going back to the
    // driver at every synchronisation
    cudaMemPool_t pool;
    unsigned long long keep = ~0ull;
    e = cudaDeviceGetDefaultMemPool(&pool, device);
    if (e == cudaSuccess) e = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
  }
  if (e != cudaSuccess) {
    snprintf(error, n, "could not set up cuda:%d: %s", device, cudaGetErrorString(e));
    cudaGetLastError();
    destroy_state(s);
    sana_ctx_destroy(ctx);
    return nullptr;
  }
  ctx_bind_device(ctx, DeviceBinding{&table, s, &sana::cuda::pack_weight, &destroy_state});
  return ctx;
}

int sana_cuda_info(sana_ctx* ctx, sana_cuda_device_info* out) {
  State* s = state(ctx);
  cudaDeviceProp p;
  cudaError_t e = cudaSetDevice(s->device);
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&p, s->device);
  if (e == cudaSuccess) e = cudaMemGetInfo(&out->free_bytes, &out->total_bytes);
  if (e != cudaSuccess) return cuda_fail(ctx, "info", e);
  snprintf(out->name, sizeof out->name, "%s", p.name);
  out->major = p.major;
  out->minor = p.minor;
  cudaDriverGetVersion(&out->driver_version);
  cudaRuntimeGetVersion(&out->runtime_version);
  return SANA_OK;
}

int sana_cuda_make_current(sana_ctx* ctx) {
  cudaError_t e = cudaSetDevice(state(ctx)->device);
  return e == cudaSuccess ? SANA_OK : cuda_fail(ctx, "cuda", e);
}

int sana_cuda_alloc(sana_ctx* ctx, size_t bytes, void** out) {
  State* s = state(ctx);
  cudaSetDevice(s->device);
  cudaError_t e = cudaMallocAsync(out, bytes, s->stream);
  if (e == cudaErrorMemoryAllocation) {
    // the pool may hold freed blocks of other sizes: give them back and try once more
    cudaGetLastError();
    cudaMemPool_t pool;
    cudaStreamSynchronize(s->stream);
    if (cudaDeviceGetDefaultMemPool(&pool, s->device) == cudaSuccess) cudaMemPoolTrimTo(pool, 0);
    e = cudaMallocAsync(out, bytes, s->stream);
  }
  if (e == cudaSuccess) return SANA_OK;
  cudaGetLastError();
  size_t free_b = 0, total = 0;
  cudaMemGetInfo(&free_b, &total);
  return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "alloc: out of device memory for %zu bytes on cuda:%d (%zu of %zu bytes free): %s",
              bytes, s->device, free_b, total, cudaGetErrorString(e));
}

int sana_cuda_free(sana_ctx* ctx, void* p) {
  State* s = state(ctx);
  cudaSetDevice(s->device);
  cudaError_t e = cudaFreeAsync(p, s->stream);
  return e == cudaSuccess ? SANA_OK : cuda_fail(ctx, "free", e);
}

int sana_cuda_upload(sana_ctx* ctx, void* dst, const void* src, size_t bytes) {
  auto* s = static_cast<ContextState*>(state(ctx));
  cudaSetDevice(s->device);
  cudaError_t e = cudaSuccess;
  if (!s->staging_ready) {
    for (int i = 0; i < 2 && e == cudaSuccess; ++i) {
      e = cudaMallocHost(&s->staging.buf[i], kStagingBytes);
      if (e == cudaSuccess) e = cudaEventCreateWithFlags(&s->staging.done[i], cudaEventDisableTiming);
    }
    if (e != cudaSuccess) return cuda_fail(ctx, "upload: pinned staging", e);
    s->staging_ready = true;
  }
  for (size_t at = 0, i = 0; at < bytes && e == cudaSuccess; at += kStagingBytes, i ^= 1) {
    size_t n = bytes - at < kStagingBytes ? bytes - at : kStagingBytes;
    e = cudaEventSynchronize(s->staging.done[i]);  // the DMA out of this buffer has finished
    if (e != cudaSuccess) break;
    std::memcpy(s->staging.buf[i], static_cast<const char*>(src) + at, n);
    e = cudaMemcpyAsync(static_cast<char*>(dst) + at, s->staging.buf[i], n, cudaMemcpyHostToDevice, s->stream);
    if (e == cudaSuccess) e = cudaEventRecord(s->staging.done[i], s->stream);
  }
  return e == cudaSuccess ? SANA_OK : cuda_fail(ctx, "upload", e);
}

int sana_cuda_download(sana_ctx* ctx, void* dst, const void* src, size_t bytes, char* error, size_t n) {
  State* s = state(ctx);
  cudaError_t e = cudaSetDevice(s->device);
  if (e == cudaSuccess) e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s->stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(s->stream);
  if (e == cudaSuccess) return SANA_OK;
  snprintf(error, n, "read: CUDA error: %s", cudaGetErrorString(e));
  cudaGetLastError();
  return SANA_ERR_INTERNAL;
}

int sana_cuda_synchronize(sana_ctx* ctx, char* error, size_t n) {
  State* s = state(ctx);
  cudaError_t e = cudaSetDevice(s->device);
  if (e == cudaSuccess) e = cudaStreamSynchronize(s->stream);
  if (e == cudaSuccess) return SANA_OK;
  snprintf(error, n, "synchronize: CUDA error: %s", cudaGetErrorString(e));
  cudaGetLastError();
  return SANA_ERR_INTERNAL;
}

}  // extern "C"
