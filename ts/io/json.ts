/**
 * A strict JSON reader for checkpoint headers and configs. Unlike JSON.parse it can reject duplicate keys,
 * keep integer literals exact (BigInt) and, for Python-written configs, accept NaN / Infinity / -Infinity
 * (diffusers writes `"lambda_min_clipped": -Infinity`). Whitespace is JSON's four characters only, so a BOM
 * or NUL padding is an error, as in serde_json.
 */
export type JsonValue = null | boolean | number | bigint | string | JsonValue[] | { [key: string]: JsonValue };

export interface JsonOptions {
  /** integer literals as BigInt: 'all' of them, or only those beyond ±(2^53 − 1) that a number would round
   * ('unsafe'; configs: a rounded 2^64 must not pass for a valid size, and messages print it exactly) */
  bigints?: 'all' | 'unsafe';
  /** accept NaN, Infinity, -Infinity as numbers (Python's json.dumps writes them) */
  nonFinite?: boolean;
  /** a repeated key in one object is an error (default true) */
  rejectDuplicates?: boolean;
}

export class JsonSyntaxError extends Error {}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export function parseJson(text: string, opts: JsonOptions = {}): JsonValue {
  const rejectDuplicates = opts.rejectDuplicates ?? true;
  let i = 0;
  const n = text.length;

  const fail = (what: string): never => {
    const near = JSON.stringify(text.slice(i, i + 20));
    throw new JsonSyntaxError(`${what} at offset ${i} (near ${near})`);
  };
  const ws = () => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
  };
  const literal = (word: string, value: JsonValue): JsonValue => {
    if (text.startsWith(word, i)) {
      i += word.length;
      return value;
    }
    return fail('invalid literal');
  };

  function str(): string {
    i++; // opening quote
    let out = '';
    let start = i;
    for (;;) {
      if (i >= n) fail('unterminated string');
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        out += text.slice(start, i);
        i++;
        return out;
      }
      if (c < 0x20) fail('control character in string');
      if (c === 0x5c) {
        out += text.slice(start, i);
        const e = text[i + 1];
        i += 2;
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            const hex = text.slice(i, i + 4);
            if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('invalid \\u escape');
            out += String.fromCharCode(parseInt(hex, 16));
            i += 4;
            break;
          }
          default:
            i -= 2;
            fail('invalid escape');
        }
        start = i;
        continue;
      }
      i++;
    }
  }

  function num(): number | bigint {
    const m = /^-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (!m) return fail('invalid number');
    i += m[0].length;
    if (opts.bigints && !m[1] && !m[2]) {
      const big = BigInt(m[0]);
      if (opts.bigints === 'all' || big > MAX_SAFE || big < -MAX_SAFE) return big;
    }
    return Number(m[0]);
  }

  function value(depth: number): JsonValue {
    if (depth > 64) fail('nesting too deep');
    ws();
    if (i >= n) fail('unexpected end of input');
    const c = text[i];
    if (c === '{') {
      i++;
      const obj: { [key: string]: JsonValue } = Object.create(null);
      ws();
      if (text[i] === '}') {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a string key');
        const key = str();
        if (rejectDuplicates && Object.prototype.hasOwnProperty.call(obj, key)) fail(`duplicate key ${JSON.stringify(key)}`);
        ws();
        if (text[i] !== ':') fail("expected ':'");
        i++;
        obj[key] = value(depth + 1);
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return obj;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c === '[') {
      i++;
      const arr: JsonValue[] = [];
      ws();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return arr;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return str();
    if (c === 't') return literal('true', true);
    if (c === 'f') return literal('false', false);
    if (c === 'n') return literal('null', null);
    if (opts.nonFinite) {
      if (text.startsWith('NaN', i)) return literal('NaN', NaN);
      if (text.startsWith('Infinity', i)) return literal('Infinity', Infinity);
      if (text.startsWith('-Infinity', i)) return literal('-Infinity', -Infinity);
    }
    if (c === '-' || (c >= '0' && c <= '9')) return num();
    return fail('unexpected character');
  }

  const v = value(0);
  ws();
  if (i !== n) fail('trailing characters after the JSON value');
  return v;
}

export function isObject(v: JsonValue | undefined): v is { [key: string]: JsonValue } {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** JSON text of a parsed value for messages, BigInts in exact digits (JSON.stringify throws on them). */
export function formatJson(v: JsonValue | undefined): string {
  if (v === undefined) return 'nothing';
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v)) return `[${v.map(formatJson).join(',')}]`;
  if (isObject(v)) return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}:${formatJson(x)}`).join(',')}}`;
  return JSON.stringify(v);
}
