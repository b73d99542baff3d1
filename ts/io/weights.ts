/**
 * The weights of one component folder as diffusers / transformers publish them: `<base>.safetensors`, or
 * shards listed by `<base>.safetensors.index.json` (`weight_map`: tensor → shard file), with optional
 * variant names (`<base>.fp16.safetensors`, `<base>.safetensors.index.bf16.json`). Every shard is
 * validated when opened; tensor data is read on demand.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join, resolve, sep } from 'node:path';

import { SanaError } from '../errors.js';
import { isObject, JsonSyntaxError, parseJson } from './json.js';
import { SafetensorsFile, type TensorData, type TensorInfo } from './safetensors.js';

function formatError(message: string, cause?: unknown): SanaError {
  return new SanaError('ERR_SANA_MODEL_FORMAT', message, cause ? { cause } : undefined);
}

export class WeightStore {
  private constructor(
    readonly dir: string,
    private readonly files: SafetensorsFile[],
    private readonly where: Map<string, SafetensorsFile>,
  ) {}

  /** Opens `<base>[.variant].safetensors` or its sharded index in `dir`. */
  static open(dir: string, base: string, variant?: string): WeightStore {
    const single = variant ? `${base}.${variant}.safetensors` : `${base}.safetensors`;
    const index = variant ? `${base}.safetensors.index.${variant}.json` : `${base}.safetensors.index.json`;
    if (existsSync(join(dir, single))) {
      const f = SafetensorsFile.open(join(dir, single));
      return new WeightStore(dir, [f], new Map([...f.tensors.keys()].map((k) => [k, f])));
    }
    if (existsSync(join(dir, index))) return WeightStore.openSharded(dir, index);
    const present = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.safetensors') || f.endsWith('.json')) : [];
    throw formatError(`${basename(dir)}: no weights: neither ${single} nor ${index} in ${dir} (found: ${present.join(', ') || 'nothing'})`);
  }

  private static openSharded(dir: string, index: string): WeightStore {
    let parsed;
    try {
      parsed = parseJson(readFileSync(join(dir, index), 'utf8'), { rejectDuplicates: true });
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
          if (!existsSync(full)) throw formatError(`${index}: shard ${file} (holding ${tensor}) is missing from ${dir}`);
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
    return new WeightStore(dir, [...shards.values()], where);
  }

  names(): string[] {
    return [...this.where.keys()];
  }

  info(name: string): TensorInfo | undefined {
    return this.where.get(name)?.tensors.get(name);
  }

  read(name: string): { info: TensorInfo; data: TensorData } {
    const f = this.where.get(name);
    if (!f) throw formatError(`${basename(this.dir)}: missing tensor ${name}`);
    return f.read(name);
  }

  readInto(name: string, target: Uint8Array, start = 0): TensorInfo {
    const f = this.where.get(name);
    if (!f) throw formatError(`${basename(this.dir)}: missing tensor ${name}`);
    return f.readInto(name, target, start);
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}
