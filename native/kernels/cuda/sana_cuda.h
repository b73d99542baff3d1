/*
 * sana_cuda.h — the CUDA device runtime under the cuda addon (native/napi/cuda-addon.cpp): probing, contexts
 * bound to one GPU and one stream, device memory and copies. Ops run through the common sana_call of
 * sana_ops.h on a context made here, so they get the same argument checks as every other backend.
 * Every function returns a sana_status; the message is sana_ctx_last_error (or `reason` for the probe).
 */
#ifndef SANA_CUDA_H
#define SANA_CUDA_H
#include <stddef.h>

#include "../../include/sana_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* SANA_OK when a usable GPU (compute capability ≥ 8.0) is present; else why not, in words. */
int sana_cuda_probe(char* reason, size_t reason_bytes);
int sana_cuda_device_count(void);

typedef struct sana_cuda_device_info {
  char name[256];
  int major, minor;            /* compute capability */
  size_t total_bytes, free_bytes;
  int driver_version, runtime_version; /* 12040 = 12.4 */
} sana_cuda_device_info;

/* A context on device `device` with a stream of its own; NULL with `error` filled on failure. */
sana_ctx* sana_cuda_ctx_create(int device, char* error, size_t error_bytes);
int sana_cuda_info(sana_ctx* ctx, sana_cuda_device_info* out);

/* Makes the context's device current on the calling thread (before ops: one thread may drive several GPUs). */
int sana_cuda_make_current(sana_ctx* ctx);

/* Stream-ordered device memory from the device's pool (freed blocks are kept for reuse by the pool). */
int sana_cuda_alloc(sana_ctx* ctx, size_t bytes, void** out);
int sana_cuda_free(sana_ctx* ctx, void* p);
/* host → device through pinned staging: returns once src may be reused; the copy completes in stream order. */
int sana_cuda_upload(sana_ctx* ctx, void* dst, const void* src, size_t bytes);
/* device → host after every op issued before it; blocks the calling thread (the addon runs it off the JS
 * thread). Its message goes to `error`, not the context (it runs beside the JS thread's calls). */
int sana_cuda_download(sana_ctx* ctx, void* dst, const void* src, size_t bytes, char* error, size_t error_bytes);
int sana_cuda_synchronize(sana_ctx* ctx, char* error, size_t error_bytes);

#ifdef __cplusplus
}
#endif
#endif
