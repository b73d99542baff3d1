/**
 * The building blocks of the models, stable-diffusion.cpp style: a module declares the weights it uses as
 * it is built (each checkpoint key written once, with its shape and the config values behind it) and runs
 * its forward on them. A model builds its module tree from the config, loads the declared weights
 * (Weights.load: check, read, fuse, repack) and then runs the tree.
 */
import type { Activation, Backend } from '../backends/backend.js';
import { SanaError } from '../errors.js';
import type { WeightStore } from '../io/weights.js';
import type { Tensor } from '../tensor/tensor.js';
import { Params, type LoadOptions, type ParamSpec } from './params.js';
import { choosePrecision } from './precision.js';

/** The weights a model declares, and what happens to them after reading. */
export class Weights {
  readonly specs: ParamSpec[] = [];
  /** fp32 GEMM weights repacked after loading */
  private readonly gemm: string[] = [];
  private readonly fusions: { name: string; parts: string[]; shape: number[] }[] = [];

  /** A matrix, kept in its stored dtype (bf16 in bf16 precision; `gemm`: read by the GEMM, so repacked when fp32 or bf16). */
  matrix(name: string, shape: number[], from: string, opts: { group?: string; gemm?: boolean } = {}): string {
    this.specs.push({ name, shape, from, group: opts.group });
    if (opts.gemm) this.gemm.push(name);
    return name;
  }

  /** A vector (bias, norm weight, modulation table) held as fp32. */
  vector(name: string, shape: number[], from: string): string {
    this.specs.push({ name, shape, vector: true, from });
    return name;
  }

  /** `name` [shape]: the declared `parts` concatenated along their first dim after loading (one GEMM
   * instead of several); the parts are dropped. Matrices among them must share a group. */
  fuse(name: string, parts: string[], shape: number[], gemm: boolean): string {
    this.fusions.push({ name, parts, shape });
    if (gemm) this.gemm.push(name);
    return name;
  }

  /** Checks, reads, fuses and repacks the declared weights. The precision is decided here (from the backend's
   * kernel variant and the stored dtypes of the GEMM matrices); bf16 holds those matrices as bf16.
   * `bf16Path` false: the model computes in fp32 whatever is asked (the DC-AE). */
  load(backend: Backend, store: WeightStore, component: string, opts: LoadOptions, bf16Path = true): Params {
    const stored = this.gemm.filter((n) => store.info(n)).map((n) => store.info(n)!.dtype);
    const precision = choosePrecision(opts.precision ?? 'auto', backend.info, stored, bf16Path);
    if (precision.precision === 'bf16' && opts.weightDtype === 'f16')
      throw new SanaError('ERR_SANA_INVALID_OPTION', `${component}: Expected precision fp32 with f16 weights (bf16 compute holds its weights as bf16) but received precision ${opts.precision ?? 'auto'} (${precision.reason})`);
    const weightDtype = precision.precision === 'bf16' ? 'bf16' : opts.weightDtype;
    const params = Params.load(backend, store, this.specs, component, weightDtype, opts.onBytesRead);
    params.precision = precision;
    try {
      for (const s of this.specs)
        if (s.vector || this.gemm.includes(s.name))
          params.origins.set(s.name, { kind: s.vector ? 'vector' : 'matrix', tensor: s.name, row: 0, rows: s.shape[0], cols: s.shape.slice(1).reduce((a, b) => a * b, 1) });
      for (const f of this.fusions) {
        params.fuse(backend, f.name, f.parts, f.shape);
        let row = 0;
        for (const part of f.parts) {
          const o = params.origins.get(part); // absent: a matrix outside the GEMM set (not adaptable)
          if (o) params.origins.set(part, { ...o, tensor: f.name, row });
          row += this.specs.find((s) => s.name === part)!.shape[0];
        }
      }
      params.packLinear(backend, this.gemm.filter((n) => params.has(n))); // fused parts are gone
    } catch (e) {
      params.dispose();
      throw e;
    }
    return params;
  }
}

/** Tensors (or anything else disposable, such as a TextConditioning) made while running a piece of a model,
 * freed together: the one lifetime rule of the models. */
export class Scope {
  private readonly tensors: { dispose(): void }[] = [];

  keep<T extends { dispose(): void }>(t: T): T {
    this.tensors.push(t);
    return t;
  }

  /** Hands a kept tensor back to the caller (it outlives the scope). */
  release<T extends { dispose(): void }>(t: T): T {
    const i = this.tensors.lastIndexOf(t);
    if (i >= 0) this.tensors.splice(i, 1);
    return t;
  }

  dispose(): void {
    for (const t of this.tensors.splice(0)) t.dispose();
  }
}

/** y = act(x·Wᵀ + b) (nn.Linear, or a 1×1 conv's [out, in, 1, 1] weight run on tokens). */
export class Linear {
  /** over weights by name: declared ones, or ones made after loading (Weights.fuse) */
  constructor(readonly weight: string, readonly bias: string | null) {}

  /** Declares `name.weight` [out, in] (or [out, in, 1, 1]) and, unless bias is false, `name.bias` [out]. */
  static declare(w: Weights, name: string, out: number, inp: number, from: string, opts: { bias?: boolean; conv1x1?: boolean; group?: string } = {}): Linear {
    const weight = w.matrix(`${name}.weight`, opts.conv1x1 ? [out, inp, 1, 1] : [out, inp], from, { group: opts.group, gemm: true });
    return new Linear(weight, opts.bias === false ? null : w.vector(`${name}.bias`, [out], from));
  }

  forward(be: Backend, p: Params, x: Tensor, opts: { act?: Activation; out?: Tensor } = {}): Tensor {
    const w = p.get(this.weight);
    return be.linear(x, w, { bias: this.bias === null ? undefined : p.get(this.bias), fastBf16: p.fastBf16(w), ...opts });
  }
}

/** RMSNorm over the last dim with a weight (diffusers' RMSNorm; `onePlus`: Gemma-2's x·(1 + w)). */
export class RmsNorm {
  readonly weight: string;

  constructor(w: Weights, name: string, dim: number, from: string, private readonly eps: number, private readonly onePlus = false) {
    this.weight = w.vector(`${name}.weight`, [dim], from);
  }

  forward(be: Backend, p: Params, x: Tensor): Tensor {
    return be.rmsNorm(x, { eps: this.eps, weight: p.get(this.weight), onePlusWeight: this.onePlus });
  }
}
