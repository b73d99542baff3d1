/**
 * The activation memory of a backend: freed activation blocks are kept by size class and handed to the next
 * request of that class, so that a denoising step — which allocates the same sizes as the step before —
 * allocates nothing new after the first one, and memory-bound ops stop paying for fresh pages (a fresh 18 MB
 * output costs ~3× the op itself in page faults). Weights are not cached: disposing a model returns their
 * memory at once. The cache holds at most `limit` bytes; past that a freed block is released. Before a fresh
 * block is allocated, cached blocks (largest first) are released until live and cached activations fit within
 * 256 MiB above the most live activation bytes seen so far, so the cache adds at most that to a peak, as the
 * old fixed 256 MiB cap did, while holding a whole working set of big maps: a warm 512² DC-AE decode (maps of
 * 128–256 MB) allocated 44 fresh maps with the fixed cap and 9 with this rule.
 */
import { bytesPerElement, type DType } from '../tensor/dtype.js';
import type { Storage } from '../tensor/tensor.js';

export type Usage = 'weight' | 'activation';

/** Default cap of the cached (free) activation bytes per backend. */
export const DEFAULT_CACHE_BYTES = 1024 * 1024 * 1024;
/** How far live plus cached activations may rise above the most live activations seen (see the header). */
export const PEAK_SLACK_BYTES = 256 * 1024 * 1024;

/** Bytes rounded up to a size class: 256-byte steps up to 64 KiB, then 8 steps per power of two (at most
 * 12.5 % slack), so that requests of similar size share blocks. */
export function sizeClass(bytes: number): number {
  if (bytes <= 65536) return Math.max(256, Math.ceil(bytes / 256) * 256);
  const step = 2 ** Math.floor(Math.log2(bytes)) / 8;
  return Math.ceil(bytes / step) * step;
}

export interface CacheCounters {
  /** live tensors and their bytes, by usage */
  tensors: number;
  weightBytes: number;
  activationBytes: number;
  /** freed activation blocks kept for reuse */
  cachedBytes: number;
  /** most live bytes at once: of both together, of weights, of activations */
  peakBytes: number;
  peakWeightBytes: number;
  peakActivationBytes: number;
  /** blocks obtained from the system so far (a steady state adds none) */
  allocations: number;
}

interface Block {
  storage: Storage;
  bytes: number;
}

export class BlockCache {
  readonly counters: CacheCounters = { tensors: 0, weightBytes: 0, activationBytes: 0, cachedBytes: 0, peakBytes: 0, peakWeightBytes: 0, peakActivationBytes: 0, allocations: 0 };
  private readonly free = new Map<number, Block[]>();
  private closed = false;

  constructor(
    /** the backend's raw allocation of `bytes` bytes, freed by the returned storage */
    private readonly allocate: (bytes: number) => Storage,
    /** most cached bytes; 0 turns the cache off */
    public limit = DEFAULT_CACHE_BYTES,
  ) {}

  /** Storage for `size` elements (possibly a larger cached block); its `free()` returns an activation block to
   * the cache. */
  take(dtype: DType, size: number, usage: Usage): Storage {
    const c = this.counters;
    const width = bytesPerElement(dtype);
    const bytes = usage === 'weight' ? size * width : sizeClass(size * width);
    // blocks are raw bytes: any dtype may reuse any block of its size class
    let block = usage === 'activation' ? this.free.get(bytes)?.pop() : undefined;
    if (block) c.cachedBytes -= block.bytes;
    else {
      if (usage === 'activation') this.releaseAbove(c.peakActivationBytes + PEAK_SLACK_BYTES - c.activationBytes - bytes);
      block = { storage: this.allocate(bytes), bytes };
      c.allocations++;
    }
    c.tensors++;
    if (usage === 'weight') c.weightBytes += bytes;
    else c.activationBytes += bytes;
    c.peakBytes = Math.max(c.peakBytes, c.weightBytes + c.activationBytes);
    c.peakWeightBytes = Math.max(c.peakWeightBytes, c.weightBytes);
    c.peakActivationBytes = Math.max(c.peakActivationBytes, c.activationBytes);
    const b = block;
    let freed = false;
    return {
      location: b.storage.location,
      handle: b.storage.handle,
      bytes: b.bytes,
      host: b.storage.host,
      free: () => {
        if (freed) return;
        freed = true;
        c.tensors--;
        if (usage === 'weight') {
          c.weightBytes -= b.bytes;
          b.storage.free();
          return;
        }
        c.activationBytes -= b.bytes;
        if (this.closed || c.cachedBytes + b.bytes > this.limit) {
          b.storage.free();
          return;
        }
        c.cachedBytes += b.bytes;
        const list = this.free.get(b.bytes);
        if (list) list.push(b);
        else this.free.set(b.bytes, [b]);
      },
    };
  }

  /** Releases every cached block (live tensors are untouched). */
  trim(): void {
    this.releaseAbove(0);
  }

  /** Releases cached blocks, largest first, until at most `bytes` stay cached. */
  private releaseAbove(bytes: number): void {
    const c = this.counters;
    if (c.cachedBytes <= bytes) return;
    for (const size of [...this.free.keys()].sort((a, b) => b - a)) {
      const list = this.free.get(size)!;
      while (list.length && c.cachedBytes > bytes) {
        list.pop()!.storage.free();
        c.cachedBytes -= size;
      }
      if (!list.length) this.free.delete(size);
      if (c.cachedBytes <= bytes) return;
    }
  }

  /** Trims, and from now on releases activation blocks when they are freed (the backend is gone). */
  close(): void {
    this.closed = true;
    this.trim();
  }
}
