export { SanaError, type SanaErrorCode } from './errors.js';
export type { DType, TensorArray } from './tensor/dtype.js';
export { f32ToBf16, bf16ToF32, f32ToF16, f16ToF32 } from './tensor/dtype.js';
export { Tensor, view4, type View4 } from './tensor/tensor.js';
export type { Backend, BackendInfo, BackendName, Activation } from './backends/backend.js';
export { createBackend, probeBackends, type BackendProbe } from './backends/registry.js';
