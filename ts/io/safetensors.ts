/**
 * safetensors reader: validates the whole header before reading or allocating any tensor data, then reads
 * tensors lazily, one at a time, in their stored dtype.
 *
 * Format: u64 little-endian header length N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets},
 * "__metadata__": {str: str}}, then the data buffer. The rules follow the reference implementation (the Rust
 * crate): header ≤ 100,000,000 bytes, strict UTF-8 and JSON (duplicate keys rejected), known dtypes,
 * integer shapes and offsets, bytes = product(shape) × dtype size, and the tensors, sorted by offset, tile the
 * buffer exactly (no gap, overlap, alias or trailing byte).
 */
import { closeSync } from 'node:fs';
import { basename } from 'node:path';

import { SanaError } from '../errors.js';
import { openRegularFile, readExactly } from './files.js';
import { formatJson, isObject, JsonSyntaxError, parseJson, type JsonValue } from './json.js';

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL';

const DTYPE_SIZE: Record<SafetensorsDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
};
const MAX_HEADER = 100_000_000n;
const MAX_TENSOR_BYTES = BigInt(Number.MAX_SAFE_INTEGER);

export type TensorData =
  | Float64Array
  | Float32Array
  | Uint16Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | BigUint64Array
  | Uint32Array
  | Uint8Array;

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** absolute byte offset of the data in the file, and its length */
  offset: number;
  byteLength: number;
}

function formatError(file: string, message: string, cause?: unknown): SanaError {
  return new SanaError('ERR_SANA_MODEL_FORMAT', `${basename(file)}: ${message}`, cause ? { cause } : undefined);
}

export class SafetensorsFile {
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Readonly<Record<string, string>>;
  private fd: number | null;

  private constructor(
    readonly path: string,
    fd: number,
    tensors: Map<string, TensorInfo>,
    metadata: Record<string, string>,
  ) {
    this.fd = fd;
    this.tensors = tensors;
    this.metadata = metadata;
  }

  /** Opens and validates a file; throws ERR_SANA_MODEL_FORMAT naming the file (and tensor) on any defect. */
  static open(path: string): SafetensorsFile {
    const { fd, size } = openRegularFile(path, basename(path));
    try {
      const { tensors, metadata } = readHeader(path, fd, size);
      return new SafetensorsFile(path, fd, tensors, metadata);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Reads one tensor's data (a fresh, aligned typed array of its stored dtype; F16/BF16 as Uint16Array). */
  read(name: string): { info: TensorInfo; data: TensorData } {
    const info = this.tensors.get(name);
    if (!info) throw formatError(this.path, `no tensor named ${JSON.stringify(name)}`);
    if (this.fd === null) throw new SanaError('ERR_SANA_DISPOSED', `${basename(this.path)}: file was closed`);
    const buf = new ArrayBuffer(info.byteLength);
    readExactly(this.fd, new Uint8Array(buf), info.offset, `${basename(this.path)}: tensor ${JSON.stringify(name)}`);
    return { info, data: typedArray(info.dtype, buf) };
  }

  /** Reads a tensor's raw bytes (from byte `start` of the tensor, target.byteLength of them) straight into
   * `target`, e.g. a backend tensor's memory or a conversion chunk: no intermediate copy. */
  readInto(name: string, target: Uint8Array, start = 0): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw formatError(this.path, `no tensor named ${JSON.stringify(name)}`);
    if (this.fd === null) throw new SanaError('ERR_SANA_DISPOSED', `${basename(this.path)}: file was closed`);
    if (start < 0 || start + target.byteLength > info.byteLength)
      throw formatError(this.path, `tensor ${JSON.stringify(name)} has ${info.byteLength} bytes; cannot read ${target.byteLength} from ${start}`);
    readExactly(this.fd, target, info.offset + start, `${basename(this.path)}: tensor ${JSON.stringify(name)}`);
    return info;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function typedArray(dtype: SafetensorsDType, buf: ArrayBuffer): TensorData {
  switch (dtype) {
    case 'F64': return new Float64Array(buf);
    case 'F32': return new Float32Array(buf);
    case 'F16':
    case 'BF16':
    case 'U16': return new Uint16Array(buf);
    case 'I64': return new BigInt64Array(buf);
    case 'I32': return new Int32Array(buf);
    case 'I16': return new Int16Array(buf);
    case 'I8': return new Int8Array(buf);
    case 'U64': return new BigUint64Array(buf);
    case 'U32': return new Uint32Array(buf);
    case 'U8':
    case 'BOOL': return new Uint8Array(buf);
  }
}

function readHeader(path: string, fd: number, fileSize: number): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  const size = BigInt(fileSize);
  if (size < 8n) throw formatError(path, `file of ${size} bytes is too small for the 8-byte header length`);
  const lenBytes = Buffer.alloc(8);
  readExactly(fd, lenBytes, 0, basename(path));
  const headerLen = lenBytes.readBigUInt64LE(0);
  if (headerLen > MAX_HEADER) throw formatError(path, `header length ${headerLen} exceeds the 100,000,000-byte limit`);
  if (8n + headerLen > size) throw formatError(path, `header length ${headerLen} runs past the end of the ${size}-byte file`);
  const headerBytes = Buffer.alloc(Number(headerLen));
  readExactly(fd, headerBytes, 8, basename(path));

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch (e) {
    throw formatError(path, 'header is not valid UTF-8', e);
  }
  let header: JsonValue;
  try {
    header = parseJson(text, { bigints: 'all', rejectDuplicates: true });
  } catch (e) {
    if (e instanceof JsonSyntaxError) throw formatError(path, `header is not valid JSON: ${e.message}`, e);
    throw e;
  }
  if (!isObject(header)) throw formatError(path, 'header is not a JSON object');

  const dataStart = 8n + headerLen;
  const bufferSize = size - dataStart;
  const tensors = new Map<string, TensorInfo>();
  const ranges: { name: string; begin: bigint; end: bigint }[] = [];
  let metadata: Record<string, string> = {};

  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isObject(entry)) throw formatError(path, '__metadata__ is not an object of strings');
      for (const [k, v] of Object.entries(entry))
        if (typeof v !== 'string') throw formatError(path, `__metadata__ value of ${JSON.stringify(k)} is not a string`);
      metadata = entry as Record<string, string>;
      continue;
    }
    const where = `tensor ${JSON.stringify(name)}`;
    if (!isObject(entry)) throw formatError(path, `${where}: entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = entry;
    if (dtype === undefined) throw formatError(path, `${where}: missing dtype`);
    if (typeof dtype !== 'string' || !(dtype in DTYPE_SIZE))
      throw formatError(path, `${where}: unknown dtype ${formatJson(dtype)} (expected one of ${Object.keys(DTYPE_SIZE).join(', ')})`);
    if (shape === undefined) throw formatError(path, `${where}: missing shape`);
    if (!Array.isArray(shape) || !shape.every((d) => typeof d === 'bigint' && d >= 0n))
      throw formatError(path, `${where}: shape must be a list of non-negative integers, got ${formatJson(shape)}`);
    if (offsets === undefined) throw formatError(path, `${where}: missing data_offsets`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((d) => typeof d === 'bigint' && d >= 0n))
      throw formatError(path, `${where}: data_offsets must be two non-negative integers, got ${formatJson(offsets)}`);
    const [begin, end] = offsets as bigint[];
    let count = 1n;
    for (const d of shape as bigint[]) count *= d;
    const bytes = count * BigInt(DTYPE_SIZE[dtype as SafetensorsDType]);
    if (bytes > MAX_TENSOR_BYTES) throw formatError(path, `${where}: ${dtype} ${formatJson(shape)} is ${bytes} bytes, too large to address`);
    if (end < begin) throw formatError(path, `${where}: data_offsets [${begin}, ${end}] end before they begin`);
    if (end - begin !== bytes)
      throw formatError(path, `${where}: ${dtype} ${formatJson(shape)} needs ${bytes} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
    if (end > bufferSize)
      throw formatError(path, `${where}: data_offsets [${begin}, ${end}] run past the ${bufferSize}-byte data buffer (file truncated?)`);
    tensors.set(name, {
      name,
      dtype: dtype as SafetensorsDType,
      shape: (shape as bigint[]).map(Number),
      offset: Number(dataStart + begin),
      byteLength: Number(bytes),
    });
    ranges.push({ name, begin, end });
  }

  // The tensors must tile the buffer: sorted by offset, each starts where the previous ended.
  ranges.sort((a, b) => (a.begin < b.begin ? -1 : a.begin > b.begin ? 1 : a.end < b.end ? -1 : a.end > b.end ? 1 : 0));
  let cursor = 0n;
  let prev: string | undefined;
  for (const r of ranges) {
    if (r.begin !== cursor) {
      const what = r.begin < cursor ? `overlaps ${JSON.stringify(prev)}` : `leaves ${r.begin - cursor} unreferenced bytes before it`;
      throw formatError(path, `tensor ${JSON.stringify(r.name)} at data_offsets [${r.begin}, ${r.end}] ${what}`);
    }
    cursor = r.end;
    prev = r.name;
  }
  if (cursor !== bufferSize)
    throw formatError(path, `the tensors cover ${cursor} bytes but the data buffer has ${bufferSize} (trailing or missing bytes)`);
  return { tensors, metadata };
}

