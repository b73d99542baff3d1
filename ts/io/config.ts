/** Reading `config.json` files as diffusers / transformers write them, with typed, validated getters. */
import { basename, join } from 'node:path';

import { describeValue, SanaError } from '../errors.js';
import { readTextFile } from './files.js';
import { isObject, JsonSyntaxError, parseJson, type JsonValue } from './json.js';

export class ConfigReader {
  private readonly used = new Set<string>();
  /** structural counts read so far (layers, blocks): see checkCounts */
  private readonly counts: { key: string; total: number; value: JsonValue }[] = [];

  constructor(
    /** for messages: "<folder>/config.json" */
    readonly label: string,
    readonly raw: { [key: string]: JsonValue },
  ) {}

  /** Reads and parses a config file; Python's NaN/Infinity literals are accepted (diffusers writes them).
   * Integers beyond 2^53 stay exact (BigInt), so no getter takes a rounded one for valid. */
  static load(dir: string, file = 'config.json', overrides: { [key: string]: JsonValue } = {}): ConfigReader {
    const label = `${basename(dir)}/${file}`;
    const text = readTextFile(join(dir, file), label);
    let raw: JsonValue;
    try {
      raw = parseJson(text, { nonFinite: true, rejectDuplicates: false, bigints: 'unsafe' });
    } catch (e) {
      if (e instanceof JsonSyntaxError) throw new SanaError('ERR_SANA_MODEL_FORMAT', `${label}: ${file} is not valid JSON: ${e.message}`, { cause: e });
      throw e;
    }
    if (!isObject(raw)) throw new SanaError('ERR_SANA_MODEL_FORMAT', `${label}: ${file} is not a JSON object`);
    return new ConfigReader(label, { ...raw, ...overrides });
  }

  error(key: string, what: string, value: unknown): SanaError {
    return new SanaError('ERR_SANA_MODEL_FORMAT', `${this.label}: Expected ${what} for ${key} but received ${describeValue(value)}`);
  }

  private get(key: string): JsonValue | undefined {
    this.used.add(key);
    return this.raw[key];
  }

  has(key: string): boolean {
    return this.raw[key] !== undefined;
  }

  /** Keys that upstream files carry but that have no effect on this model: read, not reported as unknown. */
  ignore(...keys: string[]): void {
    for (const k of keys) this.used.add(k);
  }

  int(key: string, def?: number, min = 0): number {
    const v = this.get(key) ?? def;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw this.error(key, `an integer >= ${min}`, v);
    return v;
  }

  /** An integer that says how many layers or blocks the model builds. */
  count(key: string, def: number, min = 0): number {
    const v = this.int(key, def, min);
    this.recordCount(key, v, v);
    return v;
  }

  /** A count the model derives from `value` itself (e.g. the sum of a per-stage list). */
  recordCount(key: string, total: number, value: JsonValue): void {
    this.counts.push({ key, total, value });
  }

  /** Every layer or block needs tensors of its own, so no count can exceed the checkpoint's tensor count:
   * checked before the per-layer parameter specs are built (a config asking for 10^9 layers would
   * otherwise exhaust memory building them). */
  checkCounts(tensors: number, file: string): void {
    for (const { key, total, value } of this.counts)
      if (total > tensors)
        throw this.error(key, `at most ${tensors} layers in all (${file} holds ${tensors} tensors and each layer needs its own)`, value);
  }

  number(key: string, def?: number, check: (v: number) => boolean = Number.isFinite, what = 'a finite number'): number {
    const v = this.get(key) ?? def;
    if (typeof v !== 'number' || !check(v)) throw this.error(key, what, v);
    return v;
  }

  /** A number or null; `def` when the key is absent. */
  nullableNumber(key: string, def: number | null, check: (v: number) => boolean = (v) => Number.isFinite(v) && v > 0, what = 'null or a positive number'): number | null {
    const v = this.get(key);
    if (v === undefined) return def;
    if (v === null) return null;
    if (typeof v !== 'number' || !check(v)) throw this.error(key, what, v);
    return v;
  }

  bool(key: string, def?: boolean): boolean {
    const v = this.get(key) ?? def;
    if (typeof v !== 'boolean') throw this.error(key, 'true or false', v);
    return v;
  }

  /** A string from `allowed` (null allowed when listed as null). */
  choice<T extends string | null>(key: string, allowed: readonly T[], def?: T): T {
    const raw = this.get(key);
    const v = raw === undefined ? def : raw;
    if (!allowed.includes(v as T)) throw this.error(key, `one of ${allowed.map((a) => describeValue(a)).join(', ')}`, v);
    return v as T;
  }

  /** Keys the model did not read (private "_" keys excluded): reported as warnings, never silently used. */
  unusedKeys(): string[] {
    return Object.keys(this.raw).filter((k) => !k.startsWith('_') && !this.used.has(k));
  }
}
