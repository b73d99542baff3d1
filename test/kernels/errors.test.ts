// Bad input to every op, on every backend: a SanaError with a code and a message that names the op and
// the argument; the process never aborts. Native checks are also exercised directly (bypassing the TS
// validation) so the addon's own buffer checks are proven, not just the TS layer's.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import type { Backend } from '../../ts/backends/backend.js';
import { createBackend, probeBackends } from '../../ts/backends/registry.js';
import { SanaError } from '../../ts/errors.js';
import { packageRoot } from '../../ts/paths.js';
import { view4 } from '../../ts/tensor/tensor.js';

const backends: Backend[] = [];
for (const p of probeBackends()) if (p.available) backends.push(await createBackend(p.name));
afterAll(() => backends.forEach((b) => b.dispose()));

function expectSanaError(fn: () => unknown, code: string, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(SanaError);
  expect((caught as SanaError).code).toBe(code);
  expect((caught as SanaError).message).toMatch(message);
}

const ARG = 'ERR_SANA_INVALID_ARGUMENT';

describe.each(backends.map((b) => ({ name: b.name, b })))('$name backend', ({ b }) => {
  const t = (shape: number[], dtype: 'f32' | 'f16' | 'bf16' = 'f32') => b.tensor(shape, dtype, new Float32Array(shape.reduce((x, y) => x * y, 1)).fill(0.5));

  it('linear: inner dimensions must agree', () =>
    expectSanaError(() => b.linear(t([4, 8]), t([3, 7])), ARG, /^linear: Expected a last dimension of 7 .* for x\.shape but received \[4, 8\]/));
  it('linear: bias shape, activation name, fastBf16 needs bf16 weights', () => {
    expectSanaError(() => b.linear(t([4, 8]), t([3, 8]), { bias: t([4]) }), ARG, /linear: Expected \[3\] for bias\.shape but received \[4\]/);
    expectSanaError(() => b.linear(t([4, 8]), t([3, 8]), { act: 'tanh' as never }), ARG, /linear: .* for act but received "tanh"/);
    expectSanaError(() => b.linear(t([4, 8]), t([3, 8]), { fastBf16: true }), ARG, /fastBf16 for w\.dtype but received "f32"/);
  });
  it('linear: x must be f32', () => expectSanaError(() => b.linear(t([4, 8], 'bf16'), t([3, 8])), ARG, /linear: Expected an f32 tensor for x\.dtype/));
  it('packWeight: f32 or bf16 linear weights only; glumbconv weights share one layout', () => {
    expectSanaError(() => b.packWeight(t([4, 8], 'f16')), ARG, /packWeight: Expected f32 or bf16 weights for w\.dtype but received "f16"/);
    expectSanaError(() => b.packWeight(t([4, 8, 3, 3])), ARG, /packWeight: Expected a linear weight \[out, in\] .* for w\.shape but received \[4, 8, 3, 3\]/);
    expectSanaError(
      () => b.glumbconv(t([1, 15, 4]), { wInverted: b.packWeight(t([6, 4])), wDepth: t([6, 1, 3, 3]), wPoint: t([4, 3, 1, 1]) }, { height: 3, width: 5 }),
      ARG, /glumbconv: Expected the layout of wInverted \(packed32\) for wPoint\.layout but received "dense"/);
  });
  it('conv2d: groups must divide the channels', () =>
    expectSanaError(() => b.conv2d(t([1, 6, 5, 5]), t([4, 3, 3, 3]), { groups: 4 }), ARG, /conv2d: Expected a divisor of Cin \(6\) and Cout \(4\) for groups but received 4/));
  it('conv2d: input smaller than the kernel, bad stride', () => {
    expectSanaError(() => b.conv2d(t([1, 2, 2, 2]), t([3, 2, 5, 5])), ARG, /conv2d: .* for x\.shape/);
    expectSanaError(() => b.conv2d(t([1, 2, 6, 6]), t([3, 2, 3, 3]), { stride: 0 }), ARG, /conv2d: Expected a positive integer for stride but received 0/);
  });
  it('linearAttention: k must match q', () =>
    expectSanaError(() => b.linearAttention(t([1, 4, 2, 8]), t([1, 5, 2, 8]), t([1, 4, 2, 8])), ARG, /linearAttention: .* for k\.shape but received \[1, 5, 2, 8\]/));
  it('linearAttention: a view reaching past its tensor', () => {
    const x = t([1, 4, 16]);
    expectSanaError(() => b.linearAttention(view4(x, [1, 4, 2, 8], [64, 16, 8, 1], 8), x, x), ARG, /linearAttention: .* for q but received "a view reaching element 71"/);
  });
  it('attention: causal needs as many keys as queries; heads must group', () => {
    expectSanaError(() => b.attention(t([1, 4, 2, 8]), t([1, 5, 2, 8]), t([1, 5, 2, 8]), { causal: true }), ARG, /attention: .* with causal for k\.shape\[1\] but received 5/);
    expectSanaError(() => b.attention(t([1, 4, 3, 8]), t([1, 4, 2, 8]), t([1, 4, 2, 8])), ARG, /attention: Expected a divisor of the 3 query heads/);
  });
  it('glumbconv: tokens must match the grid', () =>
    expectSanaError(
      () => b.glumbconv(t([1, 12, 4]), { wInverted: t([6, 4, 1, 1]), wDepth: t([6, 1, 3, 3]), wPoint: t([4, 3, 1, 1]) }, { height: 3, width: 5 }),
      ARG, /glumbconv: Expected tokens \[B, 15, C\] for a 3×5 grid for x\.shape but received \[1, 12, 4\]/));
  it('glumbconv: weights must share one dtype', () =>
    expectSanaError(
      () => b.glumbconv(t([1, 15, 4]), { wInverted: t([6, 4, 1, 1]), wDepth: t([6, 1, 3, 3], 'bf16'), wPoint: t([4, 3, 1, 1]) }, { height: 3, width: 5 }),
      ARG, /glumbconv: Expected the dtype of wInverted \(f32\) for wDepth\.dtype but received "bf16"/));
  it('layerNorm: eps range and scale/shift pairing', () => {
    expectSanaError(() => b.layerNorm(t([2, 8]), { eps: 0 }), ARG, /layerNorm: Expected 0 < eps < 1 for eps but received 0/);
    expectSanaError(() => b.layerNorm(t([2, 8]), { eps: 1e-6, scale: t([1, 8]) }), ARG, /layerNorm: Expected both scale and shift or neither for shift/);
  });
  it('residual: shapes must agree; gate rows must divide', () => {
    expectSanaError(() => b.residual(t([2, 8]), t([2, 7])), ARG, /residual: Expected the shape of x \[2,8\] for y\.shape but received \[2, 7\]/);
    expectSanaError(() => b.residual(t([3, 8]), t([3, 8]), { gate: t([2, 8]) }), ARG, /residual: Expected \[nb, 8\] with nb dividing the 3 rows for gate\.shape/);
  });
  it('mul: shapes must agree', () =>
    expectSanaError(() => b.mul(t([2, 8]), t([8, 2])), ARG, /mul: Expected the shape of x \[2,8\] for y\.shape but received \[8, 2\]/));
  it('rmsNorm: (1+w) needs a weight; weight shape', () => {
    expectSanaError(() => b.rmsNorm(t([2, 8]), { eps: 1e-6, onePlusWeight: true }), ARG, /rmsNorm: Expected a weight with onePlusWeight for weight/);
    expectSanaError(() => b.rmsNorm(t([2, 8]), { eps: 1e-6, weight: t([7]) }), ARG, /rmsNorm: Expected \[8\] for weight\.shape but received \[7\]/);
  });
  it('rmsNormChannels: needs an NCHW map', () =>
    expectSanaError(() => b.rmsNormChannels(t([2, 8]), { eps: 1e-5 }), ARG, /rmsNormChannels: Expected an NCHW map .* for x\.shape but received \[2, 8\]/));
  it('pixelShuffle: r² must divide the channels', () =>
    expectSanaError(() => b.pixelShuffle(t([1, 6, 2, 2]), 2), ARG, /pixelShuffle: Expected a positive integer whose square divides 6 channels for r but received 2/));
  it('pixelShuffle: the repeated channels must make whole r² groups; accumulate needs out', () => {
    expectSanaError(() => b.pixelShuffle(t([1, 3, 2, 2]), 2, { repeat: 2 }), ARG, /pixelShuffle: Expected a positive integer whose square divides 3·2 repeated channels for r but received 2/);
    expectSanaError(() => b.pixelShuffle(t([1, 4, 2, 2]), 2, { repeat: 1.5 }), ARG, /pixelShuffle: Expected a positive integer for opts\.repeat but received 1\.5/);
    expectSanaError(() => b.pixelShuffle(t([1, 4, 2, 2]), 2, { accumulate: true }), ARG, /pixelShuffle: Expected the tensor to add to for opts\.out/);
  });
  it('conv2d: upsample is 1, or 2 with groups 1', () => {
    expectSanaError(() => b.conv2d(t([1, 4, 5, 5]), t([4, 1, 3, 3]), { groups: 4, upsample: 2 }), ARG, /conv2d: Expected 1, or 2 with groups 1 for upsample but received 2/);
    expectSanaError(() => b.conv2d(t([1, 4, 5, 5]), t([4, 4, 3, 3]), { upsample: 3 as 2 }), ARG, /conv2d: Expected 1, or 2 with groups 1 for upsample but received 3/);
  });
  it('pixelUnshuffle: r must divide H and W', () =>
    expectSanaError(() => b.pixelUnshuffle(t([1, 2, 5, 4]), 2), ARG, /pixelUnshuffle: Expected a positive integer dividing H=5 and W=4 for r but received 2/));
  it('activation: unknown name', () => expectSanaError(() => b.activation(t([5]), 'gelu' as never), ARG, /activation: .* for act but received "gelu"/));
  it('rope: odd head dim, wrong positions length', () => {
    expectSanaError(() => b.rope(t([1, 3, 2, 5])), ARG, /rope: Expected an even head dimension for x\.shape\[3\] but received 5/);
    expectSanaError(() => b.rope(t([1, 3, 2, 4]), { positions: b.tensor([2], 'i32', [0, 1]) }), ARG, /rope: Expected \[3\] for positions.shape but received \[2\]/);
    expectSanaError(() => b.rope(t([1, 3, 2, 4]), { positions: t([3]) }), ARG, /rope: Expected an i32 tensor for positions.dtype but received "f32"/);
  });
  it('tensor: data length must match the shape; shapes must be positive integers', () => {
    expectSanaError(() => b.tensor([2, 3], 'f32', new Float32Array(5)), ARG, /tensor: Expected 6 values for shape \[2,3\] for data but received Float32Array\(5\)/);
    expectSanaError(() => b.tensor([2, -1]), ARG, /empty: Expected a non-empty array of positive integers for shape but received \[2, -1\]/);
  });
  it('a disposed tensor is rejected', () => {
    const x = t([2, 8]);
    x.dispose();
    expectSanaError(() => b.layerNorm(x, { eps: 1e-6 }), 'ERR_SANA_DISPOSED', /layerNorm: x \(tensor #\d+\) was disposed/);
    expectSanaError(() => x.data, 'ERR_SANA_DISPOSED', /was disposed/);
  });
  it('a tensor of another backend is rejected', () => {
    const other = backends.find((o) => o !== b);
    if (!other) return expect(backends).toHaveLength(1);
    const x = other.tensor([2, 8], 'f32', new Float32Array(16).fill(1));
    expectSanaError(() => b.activation(x, 'relu'), ARG, new RegExp(`activation: Expected a tensor of this ${b.name} backend for x but received "a tensor of the ${other.name} backend"`));
    x.dispose();
  });
  it('an unknown kernel variant is rejected', () => expectSanaError(() => b.setVariant('avx9000'), ARG, /setVariant: Expected one of .* for variant but received avx9000/));
});

describe('native checks (addon called directly)', () => {
  const root = packageRoot();
  const available = probeBackends().find((p) => p.name === 'cpu')?.available;
  const addon = available ? createRequire(import.meta.url)(join(root, 'build', 'Release', 'sana_addon.node')) : undefined;
  const codeOf = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      return [(e as { code?: string }).code, (e as Error).message];
    }
    return ['no error', ''];
  };
  it.skipIf(!available)('the generic call: freed or foreign addresses, slot counts, values that do not fit, C ABI checks', () => {
    const ops: { name: string; signature: string }[] = addon.ops();
    const op = (name: string) => ops.findIndex((o) => o.name === name);
    expect(ops.find((o) => o.name === 'linear')?.signature).toBe('piipiipiip');
    const args: Float64Array = addon.argBuffer();
    const call = (name: string, values: number[]) => {
      args.set(values);
      return codeOf(() => addon.call(op(name), values.length));
    };
    const [xb, x] = addon.alloc(64);
    const [, w] = addon.alloc(64);
    const [, y] = addon.alloc(64);
    const linear = (xAddr: number, M = 2, act = 0) => [xAddr, M, 2, w, 0, 2, 0, act, 0, y];
    expect(call('linear', linear(x))).toEqual(['no error', '']);
    const live = (i: number, v: number) => [ARG, `linear: Expected argument ${i} to point into a live buffer of this addon but received ${v}.000000 (freed, or never allocated here)`];
    expect(call('linear', linear(x + 64))).toEqual(live(0, x + 64)); // one past the block
    expect(call('linear', linear(12345))).toEqual(live(0, 12345));
    addon.free(xb);
    expect(call('linear', linear(x))).toEqual(live(0, x)); // freed
    expect(call('linear', [y, 2, 2])).toEqual([ARG, 'linear: Expected 10 argument slots but received 3']);
    expect(call('linear', linear(y, 2.5))).toEqual([ARG, 'linear: Expected argument 1 (kind i) to fit its C type but slot 1 holds 2.5']);
    // checks that only the C ABI makes (the slots fit, the values are wrong)
    expect(call('linear', linear(y, -2))).toEqual([ARG, 'linear: Expected a positive size for M but received -2']);
    expect(call('linear', linear(y, 2, 9))).toEqual([ARG, 'linear: Expected an activation 0..3 for act but received 9']);
    expect(codeOf(() => addon.call(ops.length, 0))).toEqual([ARG, `call: Expected an op 0..${ops.length - 1} but received ${ops.length}`]);
    expect(codeOf(() => addon.setVariant('wasm-simd128'))).toEqual(['ERR_SANA_UNSUPPORTED', 'variant: wasm-simd128 is not built into this binary']);
    expect(codeOf(() => addon.free(new ArrayBuffer(8)))).toEqual([ARG, 'free: Expected an ArrayBuffer from alloc() for buffer but received another ArrayBuffer']);
  });
});

describe('registry', () => {
  it('an explicit backend that is unavailable throws with the probe reason; auto says what it skipped', () => {
    const script = `
      import { createBackend } from ${JSON.stringify(join(packageRoot(), 'dist', 'ts', 'backends', 'registry.js'))};
      const out = {};
      try { await createBackend('cpu'); } catch (e) { out.cpu = [e.code, e.message]; }
      try { await createBackend('cuda'); } catch (e) { out.cuda = [e.code, e.message]; }
      try { await createBackend('metal'); } catch (e) { out.metal = [e.code, e.message]; }
      const auto = await createBackend('auto');
      out.auto = [auto.name, auto.info.selection];
      console.log(JSON.stringify(out));`;
    const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, SANA_DISABLE_NATIVE: '1', SANA_DISABLE_CUDA: '1' }, encoding: 'utf8' }));
    expect(out.cpu).toEqual(['ERR_SANA_BACKEND_UNAVAILABLE', 'backend cpu is unavailable: disabled by SANA_DISABLE_NATIVE=1']);
    expect(out.cuda).toEqual(['ERR_SANA_BACKEND_UNAVAILABLE', 'backend cuda is unavailable: disabled by SANA_DISABLE_CUDA=1']);
    expect(out.metal[0]).toBe('ERR_SANA_INVALID_OPTION');
    expect(out.auto).toEqual(['wasm', { requested: 'auto', skipped: [
      { name: 'cuda', reason: 'disabled by SANA_DISABLE_CUDA=1' },
      { name: 'cpu', reason: 'disabled by SANA_DISABLE_NATIVE=1' },
    ] }]);
  });
});
