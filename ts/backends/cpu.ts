import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { packageRoot } from '../paths.js';
import type { Storage } from '../tensor/tensor.js';
import { KernelBackend } from './kernel-backend.js';
import type { OpDescription, RawKernels } from './raw-kernels.js';

export interface Addon {
  info: RawKernels['info'];
  setThreads: RawKernels['setThreads'];
  setVariant: RawKernels['setVariant'];
  ops(): OpDescription[];
  argBuffer(): Float64Array;
  call(op: number, nargs: number): void;
  /** a block of `bytes` (64-byte aligned) and its address */
  alloc(bytes: number): [ArrayBuffer, number];
  free(buffer: ArrayBuffer): void;
}

export interface Probe {
  available: boolean;
  reason?: string;
}

let cached: { addon?: Addon; probe: Probe } | undefined;

/** Loads the native addon of this thread (each worker thread gets its own instance and context). */
export function probeCpu(): Probe {
  if (!cached) cached = loadAddon();
  return cached.probe;

  function loadAddon(): { addon?: Addon; probe: Probe } {
    if (process.env.SANA_DISABLE_NATIVE === '1') return { probe: { available: false, reason: 'disabled by SANA_DISABLE_NATIVE=1' } };
    const root = packageRoot();
    const file = join(root, 'build', 'Release', 'sana_addon.node');
    if (!existsSync(file)) {
      const errFile = join(root, 'build', 'native-build-error.txt');
      const why = existsSync(errFile) ? readFileSync(errFile, 'utf8').trim() : 'run `npm run build:native`';
      return { probe: { available: false, reason: `native addon not built (${why})` } };
    }
    try {
      return { addon: createRequire(import.meta.url)(file) as Addon, probe: { available: true } };
    } catch (e) {
      return { probe: { available: false, reason: `native addon failed to load: ${(e as Error).message}` } };
    }
  }
}

/** The native C++ backend: x86 kernel variants picked by cpuid, a thread pool of the context's size.
 * All CpuBackend objects of one JS thread share that thread's addon context (threads, variant). */
export class CpuBackend extends KernelBackend {
  readonly name = 'cpu' as const;
  protected readonly addon: Addon;

  protected constructor(addon: Addon) {
    const args = addon.argBuffer();
    super({ info: () => addon.info(), setThreads: (t) => addon.setThreads(t), setVariant: (v) => addon.setVariant(v), ops: addon.ops(), args: () => args, call: (op, n) => addon.call(op, n) });
    this.addon = addon;
  }

  /** Throws ERR_SANA_BACKEND_UNAVAILABLE (via the registry) when the probe failed. */
  static create(): CpuBackend {
    return new CpuBackend(CpuBackend.loadedAddon());
  }

  protected static loadedAddon(): Addon {
    const probe = probeCpu();
    if (!probe.available || !cached?.addon) throw new Error(probe.reason);
    return cached.addon;
  }

  protected allocStorage(bytes: number): Storage {
    const [buffer, handle] = this.addon.alloc(bytes);
    const addon = this.addon;
    const host = { buffer, byteOffset: 0 };
    return { location: 'host', handle, bytes, host: () => host, free: () => addon.free(buffer) };
  }

  protected releaseContext(): void {
    // The context belongs to the thread's addon instance and is destroyed with it (thread exit).
  }
}
