// The backend registry: one list of names, priorities for 'auto', device specs parsed in one place.
import { describe, expect, it } from 'vitest';

import { BACKEND_NAMES } from '../../ts/backends/backend.js';
import { backendNames, createBackend, deviceForms, parseDevice, probeBackends, registerBackend } from '../../ts/backends/registry.js';
import { WasmBackend } from '../../ts/backends/wasm.js';
import { expectedCudaProbe } from '../fixtures/cuda.js';

describe('backend registry', () => {
  it('knows every backend name once, in the order auto tries them (cuda > cpu > wasm)', () => {
    expect(backendNames()).toEqual(['cuda', 'cpu', 'wasm']);
    expect([...backendNames()].sort()).toEqual([...BACKEND_NAMES].sort());
    expect(probeBackends().map((p) => p.name)).toEqual(backendNames());
    expect(deviceForms()).toBe('cuda:N, cpu, wasm');
  });

  it.each([
    ['cpu', { name: 'cpu', device: 0, label: 'cpu' }],
    ['wasm', { name: 'wasm', device: 0, label: 'wasm' }],
    ['cuda', { name: 'cuda', device: 0, label: 'cuda:0' }],
    ['cuda:3', { name: 'cuda', device: 3, label: 'cuda:3' }],
  ])('parses the device %s', (spec, want) => {
    expect(parseDevice(spec)).toEqual(want);
  });

  it.each(['gpu', 'cpu:1', 'cuda:', 'cuda:-1', 'CPU', ''])('refuses the device %j, naming the forms it takes', (spec) => {
    expect(() => parseDevice(spec)).toThrow(expect.objectContaining({ code: 'ERR_SANA_INVALID_OPTION', message: expect.stringContaining('Expected one of cuda:N, cpu, wasm for a device') }));
  });

  it('a registration with a higher priority is what auto picks; re-registering replaces, not duplicates', async () => {
    const wasm = { name: 'wasm' as const, indexed: false, probe: () => ({ available: true }), create: () => WasmBackend.create() };
    registerBackend({ ...wasm, priority: 1000 });
    try {
      expect(backendNames()).toEqual(['wasm', 'cuda', 'cpu']);
      const be = await createBackend('auto');
      expect(be.name).toBe('wasm');
      expect(be.info.selection).toEqual({ requested: 'auto', skipped: [] });
      be.dispose();
    } finally {
      registerBackend({ ...wasm, priority: 100 });
    }
    expect(backendNames()).toEqual(['cuda', 'cpu', 'wasm']);
  });

  it('an explicit unavailable backend fails with its probe reason; an unknown name is an invalid option', async () => {
    const cuda = expectedCudaProbe();
    if (cuda) await expect(createBackend('cuda')).rejects.toMatchObject({ code: 'ERR_SANA_BACKEND_UNAVAILABLE', message: `backend cuda is unavailable: ${cuda.reason}` });
    await expect(createBackend('gpu' as 'cpu')).rejects.toMatchObject({ code: 'ERR_SANA_INVALID_OPTION', message: expect.stringContaining('Expected one of auto, cuda, cpu, wasm for backend') });
  });
});
