import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { SanaError } from '../errors.js';
import { packageRoot } from '../paths.js';
import type { Storage } from '../tensor/tensor.js';
import type { BackendInfo } from './backend.js';
import type { Probe } from './cpu.js';
import { KernelBackend } from './kernel-backend.js';
import type { OpDescription } from './raw-kernels.js';

/** One GPU context of the cuda addon (native/napi/cuda-addon.cpp): its own stream; device blocks are addresses. */
interface CudaContext {
  info(): { name: string; computeCapability: string; totalBytes: number; freeBytes: number; driverVersion: number; runtimeVersion: number };
  ops(): OpDescription[];
  argBuffer(): Float64Array;
  call(op: number, nargs: number): void;
  alloc(bytes: number): number;
  free(address: number): void;
  upload(address: number, src: Uint8Array): void;
  download(address: number, dst: Uint8Array): Promise<void>;
  downloadSync(address: number, dst: Uint8Array): void;
  synchronize(): Promise<void>;
  dispose(): void;
}
interface CudaAddon {
  probe(): { available: boolean; reason?: string; devices: number };
  Context: new (device: number) => CudaContext;
}

let cached: { addon?: CudaAddon; probe: Probe; devices: number } | undefined;

/** Whether this build and machine can run the cuda backend, and why not (in the probe's words). */
export function probeCuda(): Probe {
  if (!cached) cached = load();
  return cached.probe;

  function load(): { addon?: CudaAddon; probe: Probe; devices: number } {
    const unavailable = (reason: string) => ({ probe: { available: false, reason }, devices: 0 });
    if (process.env.SANA_DISABLE_CUDA === '1') return unavailable('disabled by SANA_DISABLE_CUDA=1');
    const build = join(packageRoot(), 'build');
    const file = join(build, 'Release', 'sana_cuda.node');
    if (!existsSync(file)) {
      for (const why of ['cuda-build-error.txt', 'native-build-error.txt'])
        if (existsSync(join(build, why))) return unavailable(`this build has no CUDA backend: ${readFileSync(join(build, why), 'utf8').trim()}`);
      return unavailable('this build has no CUDA backend (run `npm run build:native` where nvcc is installed)');
    }
    try {
      const addon = createRequire(import.meta.url)(file) as CudaAddon;
      const p = addon.probe();
      return { addon, probe: p.available ? { available: true } : { available: false, reason: p.reason }, devices: p.devices };
    } catch (e) {
      return unavailable(`the cuda addon failed to load: ${(e as Error).message}`);
    }
  }
}

/** The GPUs the probe found (0 when it failed). */
export function cudaDeviceCount(): number {
  probeCuda();
  return cached!.devices;
}

/** The CUDA backend: one GPU, one stream and one context per instance; tensors live in device memory. */
export class CudaBackend extends KernelBackend {
  readonly name = 'cuda' as const;

  private constructor(private readonly ctx: CudaContext, readonly device: number) {
    const args = ctx.argBuffer();
    super({
      info: () => ({ variant: 'cuda', threads: 1, variants: [{ name: 'cuda', supported: true }] }),
      setThreads: () => {}, // kernels use the whole GPU
      setVariant: (v) => {
        if (v !== 'cuda') throw new SanaError('ERR_SANA_UNSUPPORTED', `setVariant: the cuda backend runs the cuda kernels only, not ${v}`);
      },
      ops: ctx.ops(),
      args: () => args,
      call: (op, n) => ctx.call(op, n),
    });
  }

  /** Throws ERR_SANA_BACKEND_UNAVAILABLE (the registry's wording) when the probe failed or the device is absent. */
  static create(device = 0): CudaBackend {
    const probe = probeCuda();
    if (!probe.available || !cached?.addon) throw new Error(probe.reason);
    if (!(Number.isInteger(device) && device >= 0 && device < cached.devices))
      throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a CUDA device cuda:0..cuda:${cached.devices - 1} but received cuda:${device}`);
    return new CudaBackend(new cached.addon.Context(device), device);
  }

  /** The GPU: name, compute capability, memory (bytes), driver and runtime versions (12040 = 12.4). */
  get deviceInfo(): ReturnType<CudaContext['info']> {
    return this.ctx.info();
  }

  override get info(): BackendInfo {
    return { ...super.info, device: `cuda:${this.device} (${this.ctx.info().name})` };
  }

  override async synchronize(): Promise<void> {
    await this.ctx.synchronize();
  }

  readStorage(storage: Storage, byteOffset: number, dst: Uint8Array): Promise<void> {
    return this.ctx.download(storage.handle + byteOffset, dst);
  }

  readStorageSync(storage: Storage, byteOffset: number, dst: Uint8Array): void {
    this.ctx.downloadSync(storage.handle + byteOffset, dst);
  }

  writeStorage(storage: Storage, byteOffset: number, src: Uint8Array): void {
    this.ctx.upload(storage.handle + byteOffset, src);
  }

  protected allocStorage(bytes: number): Storage {
    const handle = this.ctx.alloc(bytes);
    const ctx = this.ctx;
    return { location: 'device', handle, bytes, free: () => ctx.free(handle) };
  }

  protected releaseContext(): void {
    this.ctx.dispose();
  }
}
