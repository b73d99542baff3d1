/** Reading `config.json` files as diffusers / transformers write them, with typed, validated getters. */
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';

import { describeValue, SanaError } from '../errors.js';
import { isObject, JsonSyntaxError, parseJson, type JsonValue } from './json.js';

export class ConfigReader {
  private readonly used = new Set<string>();

  constructor(
    /** for messages: "<folder>/config.json" */
    readonly label: string,
    readonly raw: { [key: string]: JsonValue },
  ) {}

  /** Reads and parses a config file; Python's NaN/Infinity literals are accepted (diffusers writes them). */
  static load(dir: string, file = 'config.json', overrides: { [key: string]: JsonValue } = {}): ConfigReader {
    const path = join(dir, file);
    const label = `${basename(dir)}/${file}`;
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new SanaError('ERR_SANA_MODEL_FORMAT', `${label}: cannot read ${file} in ${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
    }
    let raw: JsonValue;
    try {
      raw = parseJson(text, { nonFinite: true, rejectDuplicates: false });
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

  number(key: string, def?: number, check: (v: number) => boolean = Number.isFinite, what = 'a finite number'): number {
    const v = this.get(key) ?? def;
    if (typeof v !== 'number' || !check(v)) throw this.error(key, what, v);
    return v;
  }

  nullableNumber(key: string, check: (v: number) => boolean = (v) => Number.isFinite(v) && v > 0, what = 'null or a positive number'): number | null {
    const v = this.get(key);
    if (v === undefined || v === null) return null;
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
