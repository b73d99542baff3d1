/**
 * The one registry of compute backends: each registers its name, a priority for 'auto' (highest first), a
 * probe that says whether and why not it can run here, and a factory. Backend names, device specs
 * ('cpu', 'wasm', 'cuda:1') and their parsing live here only; the pipeline, the pool and the CLI take their
 * lists from it. A new backend (CUDA) is one folder plus one registerBackend call.
 */
import { SanaError, describeValue } from '../errors.js';
import { BACKEND_NAMES, type Backend, type BackendName } from './backend.js';
import { CpuBackend, probeCpu } from './cpu.js';
import { CudaBackend, cudaDeviceCount, probeCuda } from './cuda.js';
import { WasmBackend } from './wasm.js';

export interface BackendProbe {
  name: BackendName;
  available: boolean;
  reason?: string;
}

export interface CreateBackendOptions {
  /** Kernel threads (cpu); 0 or undefined = all available cores. */
  threads?: number;
  /** Most bytes of freed activation blocks the backend keeps for reuse (default 1 GiB, and never more than 256 MiB above the peak of live activations; 0 = none). */
  cacheBytes?: number;
  /** Device index of a device backend ('cuda:1' → 1; default 0). */
  device?: number;
}

interface Registration {
  name: BackendName;
  priority: number;
  /** whether it has devices to index ('cuda:N'); host backends take none */
  indexed: boolean;
  probe(): { available: boolean; reason?: string };
  /** indexed backends: how many devices this machine has (0 when the probe fails) */
  deviceCount?(): number;
  create(opts: CreateBackendOptions): Backend | Promise<Backend>;
}

const registrations: Registration[] = [];

/** Adds (or replaces) a backend; `auto` tries them by descending priority. */
export function registerBackend(r: Registration): void {
  const i = registrations.findIndex((x) => x.name === r.name);
  if (i >= 0) registrations.splice(i, 1);
  registrations.push(r);
  registrations.sort((a, b) => b.priority - a.priority);
}

registerBackend({ name: 'cuda', priority: 300, indexed: true, probe: probeCuda, deviceCount: cudaDeviceCount, create: (opts) => CudaBackend.create(opts.device ?? 0) });
registerBackend({ name: 'cpu', priority: 200, indexed: false, probe: probeCpu, create: () => CpuBackend.create() });
registerBackend({ name: 'wasm', priority: 100, indexed: false, probe: () => ({ available: true }), create: () => WasmBackend.create() });

/** The backend names, in the order 'auto' tries them. */
export function backendNames(): BackendName[] {
  return registrations.map((r) => r.name);
}

/** Why each backend can or cannot run here, in the order 'auto' tries them. */
export function probeBackends(): BackendProbe[] {
  return registrations.map((r) => ({ name: r.name, ...r.probe() }));
}

/** How many devices an indexed backend (cuda) has here; 1 for a host backend that is available, else 0. */
export function deviceCount(name: BackendName): number {
  const r = registrations.find((x) => x.name === name)!;
  if (!r.probe().available) return 0;
  return r.deviceCount ? r.deviceCount() : 1;
}

/** The device spellings parseDevice takes, for messages and help: "cuda:N, cpu, wasm". */
export function deviceForms(): string {
  return registrations.map((x) => (x.indexed ? `${x.name}:N` : x.name)).join(', ');
}

/** A device spec: a backend name, with ':N' for a device backend ('cuda:1'). */
export function parseDevice(spec: string): { name: BackendName; device: number; label: string } {
  const m = /^([a-z]+)(?::(\d+))?$/.exec(spec);
  const r = m ? registrations.find((x) => x.name === m[1]) : undefined;
  if (!m || !r || (m[2] !== undefined && !r.indexed)) {
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected one of ${deviceForms()} for a device but received ${describeValue(spec)}`);
  }
  const device = m[2] === undefined ? 0 : Number(m[2]);
  return { name: r.name, device, label: r.indexed ? `${r.name}:${device}` : r.name };
}

export async function createBackend(requested: 'auto' | BackendName = 'auto', opts: CreateBackendOptions = {}): Promise<Backend> {
  if (requested !== 'auto' && !(BACKEND_NAMES as readonly string[]).includes(requested))
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected one of auto, ${backendNames().join(', ')} for backend but received ${describeValue(requested)}`);
  const skipped: { name: BackendName; reason: string }[] = [];
  for (const r of registrations) {
    if (requested !== 'auto' && r.name !== requested) continue;
    const probe = r.probe();
    if (!probe.available) {
      if (requested !== 'auto')
        throw new SanaError('ERR_SANA_BACKEND_UNAVAILABLE', `backend ${requested} is unavailable: ${probe.reason}`);
      skipped.push({ name: r.name, reason: probe.reason ?? 'unavailable' });
      continue;
    }
    const backend = await r.create(opts);
    backend.selection = { requested, skipped };
    if (opts.threads !== undefined) backend.setThreads(opts.threads);
    if (opts.cacheBytes !== undefined) backend.setCacheLimit(opts.cacheBytes);
    return backend;
  }
  throw new SanaError('ERR_SANA_BACKEND_UNAVAILABLE', `no backend is available: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}
