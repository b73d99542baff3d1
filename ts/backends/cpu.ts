import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { packageRoot } from '../paths.js';
import type { DType } from '../tensor/dtype.js';
import type { Storage } from '../tensor/tensor.js';
import { KernelBackend, storageBytes, type RawKernels } from './kernel-backend.js';

interface Addon extends RawKernels {
  alloc(bytes: number): ArrayBuffer;
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
  private readonly addon: Addon;

  private constructor(addon: Addon) {
    super(addon);
    this.addon = addon;
  }

  /** Throws ERR_SANA_BACKEND_UNAVAILABLE (via the registry) when the probe failed. */
  static create(): CpuBackend {
    const probe = probeCpu();
    if (!probe.available || !cached?.addon) throw new Error(probe.reason);
    return new CpuBackend(cached.addon);
  }

  protected allocStorage(dtype: DType, size: number): Storage {
    const buffer = this.addon.alloc(storageBytes(dtype, size));
    const array = dtype === 'f32' ? new Float32Array(buffer, 0, size) : new Uint16Array(buffer, 0, size);
    const addon = this.addon;
    return { array: () => array, free: () => addon.free(buffer) };
  }

  protected releaseContext(): void {
    // The context belongs to the thread's addon instance and is destroyed with it (thread exit).
  }
}
