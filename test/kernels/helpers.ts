import { createBackend } from '../../ts/backends/registry.js';
import type { Backend } from '../../ts/backends/backend.js';
import { decode } from '../../ts/tensor/dtype.js';
import type { Tensor } from '../../ts/tensor/tensor.js';
import { probeBackends } from '../../ts/backends/registry.js';

/** Deterministic uniform values in [lo, hi) that are never all zero. */
export function rand(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = lo + (hi - lo) * (((t ^ (t >>> 14)) >>> 0) / 4294967296);
  }
  if (out.every((v) => v === 0)) out[0] = 0.5;
  return out;
}

/** A float32 copy of a tensor's values, wherever it lives (a device tensor is read back). */
export async function readFloat32(t: Tensor): Promise<Float32Array> {
  const words = await t.read();
  return t.dtype === 'f32' ? (words as Float32Array) : decode(words, t.dtype);
}

/** max |a − ref| / max |ref|: the error relative to the output's scale (robust to cancellation). */
export function relError(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (a.length !== ref.length) throw new Error(`length ${a.length} != reference length ${ref.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) return Infinity;
    num = Math.max(num, Math.abs(a[i] - ref[i]));
    den = Math.max(den, Math.abs(ref[i]));
  }
  if (den === 0) throw new Error('reference is all zeros: the test inputs are degenerate');
  return num / den;
}

export interface Target {
  label: string;
  backend: Backend;
  variant: string;
}

/** Every kernel variant this machine supports on every available backend, plus the variants it cannot
 * run (reported as skipped with the reason). */
export async function kernelTargets(): Promise<{ targets: Target[]; skipped: { label: string; reason: string }[] }> {
  const targets: Target[] = [];
  const skipped: { label: string; reason: string }[] = [];
  for (const probe of probeBackends()) {
    if (!probe.available) {
      skipped.push({ label: probe.name, reason: probe.reason ?? 'unavailable' });
      continue;
    }
    const backend = await createBackend(probe.name);
    const names = { wasm: ['ref', 'wasm-simd128'], cpu: ['ref', 'baseline', 'avx2', 'avx512', 'avx512bf16', 'amx-bf16'], cuda: ['cuda'] }[probe.name];
    for (const variant of names) {
      if (backend.info.variants.includes(variant)) targets.push({ label: `${probe.name}/${variant}`, backend, variant });
      else skipped.push({ label: `${probe.name}/${variant}`, reason: `this CPU does not support ${variant}` });
    }
  }
  return { targets, skipped };
}
