import { SanaError, describeValue } from '../errors.js';
import type { Backend, BackendName } from './backend.js';
import { CpuBackend, probeCpu } from './cpu.js';
import { WasmBackend } from './wasm.js';

export interface BackendProbe {
  name: BackendName;
  available: boolean;
  reason?: string;
}

export interface CreateBackendOptions {
  /** Kernel threads (cpu); 0 or undefined = all available cores. */
  threads?: number;
  /** Most bytes of freed activation blocks the backend keeps for reuse (default 256 MiB; 0 = none). */
  cacheBytes?: number;
}

const ORDER: BackendName[] = ['cuda', 'cpu', 'wasm'];

/** Why each backend can or cannot run here; `auto` takes the first available in cuda > cpu > wasm. */
export function probeBackends(): BackendProbe[] {
  return ORDER.map((name): BackendProbe => {
    switch (name) {
      case 'cuda':
        return { name, available: false, reason: 'this build has no CUDA backend yet' };
      case 'cpu':
        return { name, ...probeCpu() };
      case 'wasm':
        return { name, available: true };
    }
  });
}

export async function createBackend(requested: 'auto' | BackendName = 'auto', opts: CreateBackendOptions = {}): Promise<Backend> {
  if (requested !== 'auto' && !ORDER.includes(requested))
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected one of auto, cpu, wasm, cuda for backend but received ${describeValue(requested)}`);
  const probes = probeBackends();
  const skipped: { name: BackendName; reason: string }[] = [];
  for (const probe of probes) {
    if (requested !== 'auto' && probe.name !== requested) continue;
    if (!probe.available) {
      if (requested !== 'auto')
        throw new SanaError('ERR_SANA_BACKEND_UNAVAILABLE', `backend ${requested} is unavailable: ${probe.reason}`);
      skipped.push({ name: probe.name, reason: probe.reason ?? 'unavailable' });
      continue;
    }
    const backend = probe.name === 'cpu' ? CpuBackend.create() : await WasmBackend.create();
    backend.selection = { requested, skipped };
    if (opts.threads !== undefined) backend.setThreads(opts.threads);
    if (opts.cacheBytes !== undefined) backend.setCacheLimit(opts.cacheBytes);
    return backend;
  }
  throw new SanaError('ERR_SANA_BACKEND_UNAVAILABLE', `no backend is available: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}
