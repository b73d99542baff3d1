/** The raw kernel surface under KernelBackend, and how op arguments travel to it. */
import type { Activation } from './backend.js';
import { invalidArgument } from '../errors.js';
import type { Tensor, View4 } from '../tensor/tensor.js';

/** One op of the kernels' table (SANA_OPS in native/include/sana_ops.h): its C name and the kinds of its
 * arguments after the context, one letter each (p pointer, i integer, f float, v 4-D view, a attention params). */
export interface OpDescription {
  name: string;
  signature: string;
}

/** The raw kernel surface shared by the native addon (native/napi/addon.cpp) and the wasm glue
 * (ts/backends/wasm.ts): every op runs through one generic call whose arguments are doubles in a shared
 * buffer, so an op is described once, in C, and needs no binding code. */
export interface RawKernels {
  info(): { variant: string; threads: number; variants: { name: string; supported: boolean }[] };
  setThreads(threads: number): void;
  setVariant(variant: string): void;
  /** the ops in op-number order */
  readonly ops: readonly OpDescription[];
  /** the argument slots of the next call (asked before each call: the wasm heap may have moved) */
  args(): Float64Array;
  call(op: number, nargs: number): void;
}

/** An op argument: a tensor (its address) or null, a number, a 4-D view, or the attention params' fields. */
export type OpArg = Tensor | View4 | number | null | readonly number[];

const ACTS: Record<Activation, number> = { none: 0, relu: 1, silu: 2, 'gelu-tanh': 3 };

/** The C ABI's sana_act code of an activation name. */
export function activationCode(op: string, act: Activation | undefined): number {
  if (act === undefined) return 0;
  const code = ACTS[act];
  if (code === undefined) throw invalidArgument(op, 'one of none, relu, silu, gelu-tanh', 'act', act);
  return code;
}

export function checkEps(op: string, eps: number): void {
  if (!(eps > 0 && eps < 1)) throw invalidArgument(op, '0 < eps < 1', 'eps', eps);
}

export function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}

/** Writes an op's arguments into the argument slots as its signature says (a tensor is its address, a view its
 * address and four strides, the attention params their fields); returns the slot count. */
export function encodeArgs(signature: string, args: readonly OpArg[], slots: Float64Array): number {
  let n = 0;
  for (let i = 0; i < signature.length; i++) {
    const a = args[i];
    const kind = signature[i];
    if (kind === 'p') slots[n++] = a === null ? 0 : (a as Tensor).address;
    else if (kind === 'v') {
      const v = a as View4;
      slots[n++] = v.tensor.address + v.offset * 4;
      for (let j = 0; j < 4; j++) slots[n++] = v.strides[j];
    } else if (kind === 'a') for (const x of a as readonly number[]) slots[n++] = x;
    else slots[n++] = a as number;
  }
  return n;
}
