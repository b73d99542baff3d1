/**
 * The weights of one component folder as diffusers / transformers publish them: `<base>.safetensors`, or
 * shards listed by `<base>.safetensors.index.json` (`weight_map`: tensor → shard file), with optional
 * variant names (`<base>.fp16.safetensors`, `<base>.safetensors.index.bf16.json`). Every shard is
 * validated when opened; tensor data is read on demand.
 */
import { readdirSync } from 'node:fs';
import { basename, join, resolve, sep } from 'node:path';

import { entryKind, formatError, readTextFile, requireFolder } from './files.js';
import { isObject, JsonSyntaxError, parseJson } from './json.js';
import { SafetensorsFile, type TensorData, type TensorInfo } from './safetensors.js';

export class WeightStore {
  private constructor(
    readonly dir: string,
    /** the file the tensor names come from: the single weights file or the shard index */
    readonly source: string,
    private readonly files: SafetensorsFile[],
    private readonly where: Map<string, SafetensorsFile>,
  ) {}

  /** Opens `<base>[.variant].safetensors` or its sharded index in `dir`. */
  static open(dir: string, base: string, variant?: string): WeightStore {
    const single = variant ? `${base}.${variant}.safetensors` : `${base}.safetensors`;
    const index = variant ? `${base}.safetensors.index.${variant}.json` : `${base}.safetensors.index.json`;
    requireFolder(dir, basename(dir));
    if (entryKind(join(dir, single), single) !== 'missing') {
      const f = SafetensorsFile.open(join(dir, single));
      return new WeightStore(dir, single, [f], new Map([...f.tensors.keys()].map((k) => [k, f])));
    }
    if (entryKind(join(dir, index), index) !== 'missing') return WeightStore.openSharded(dir, index);
    const present = readdirSync(dir).filter((f) => f.endsWith('.safetensors') || f.endsWith('.json'));
    throw formatError(`${basename(dir)}: no weights: neither ${single} nor ${index} in ${dir} (found: ${present.join(', ') || 'nothing'})`);
  }

  private static openSharded(dir: string, index: string): WeightStore {
    let parsed;
    try {
      parsed = parseJson(readTextFile(join(dir, index), index), { rejectDuplicates: true });
    } catch (e) {
      if (e instanceof JsonSyntaxError) throw formatError(`${index}: not valid JSON: ${e.message}`, e);
      throw e;
    }
    const map = isObject(parsed) ? parsed.weight_map : undefined;
    if (!isObject(map)) throw formatError(`${index}: Expected an object of tensor → shard file for weight_map but received ${map === undefined ? 'nothing' : typeof map}`);
    const root = resolve(dir) + sep;
    const shards = new Map<string, SafetensorsFile>();
    const where = new Map<string, SafetensorsFile>();
    try {
      for (const [tensor, file] of Object.entries(map)) {
        if (typeof file !== 'string' || file.length === 0) throw formatError(`${index}: weight_map entry of ${tensor} is not a file name`);
        const full = resolve(dir, file);
        if (!full.startsWith(root) || file.includes('/') || file.includes('\\'))
          throw formatError(`${index}: weight_map sends ${tensor} to ${file}, outside the model folder`);
        let shard = shards.get(file);
        if (!shard) {
          if (entryKind(full, `${index}: shard ${file}`) === 'missing') throw formatError(`${index}: shard ${file} (holding ${tensor}) is missing from ${dir}`);
          shard = SafetensorsFile.open(full);
          shards.set(file, shard);
        }
        if (!shard.tensors.has(tensor)) throw formatError(`${index}: weight_map places ${tensor} in ${file}, which does not contain it`);
        where.set(tensor, shard);
      }
    } catch (e) {
      for (const s of shards.values()) s.close();
      throw e;
    }
    return new WeightStore(dir, index, [...shards.values()], where);
  }

  /** Why `name` is not in this checkpoint, naming the file(s) looked in (and a shard that holds the tensor
   * although the index does not list it). */
  describeMissing(name: string): string {
    if (!this.source.endsWith('.json')) return `${this.source} has no tensor ${name}`;
    const holder = this.files.find((f) => f.tensors.has(name));
    const shards = this.files.map((f) => basename(f.path)).join(', ');
    return `the weight_map of ${this.source} does not list ${name}` + (holder ? ` (shard ${basename(holder.path)} holds it)` : ` (shards read: ${shards})`);
  }

  names(): string[] {
    return [...this.where.keys()];
  }

  info(name: string): TensorInfo | undefined {
    return this.where.get(name)?.tensors.get(name);
  }

  read(name: string): { info: TensorInfo; data: TensorData } {
    const f = this.where.get(name);
    if (!f) throw formatError(`${basename(this.dir)}: ${this.describeMissing(name)}`);
    return f.read(name);
  }

  readInto(name: string, target: Uint8Array, start = 0): TensorInfo {
    const f = this.where.get(name);
    if (!f) throw formatError(`${basename(this.dir)}: ${this.describeMissing(name)}`);
    return f.readInto(name, target, start);
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}
