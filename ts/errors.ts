/** The one error class of sana-node: every failure the package reports carries a string `code`. */
export type SanaErrorCode =
  | 'ERR_SANA_INVALID_OPTION' // a user-facing option (pipeline, CLI) is wrong
  | 'ERR_SANA_INVALID_ARGUMENT' // an op was called with a wrong shape, dtype, length or value
  | 'ERR_SANA_MODEL_FORMAT' // a checkpoint file or config is malformed
  | 'ERR_SANA_BACKEND_UNAVAILABLE' // an explicitly requested backend cannot run here (probe's reason)
  | 'ERR_SANA_UNSUPPORTED' // valid request this build or CPU cannot serve (e.g. a kernel variant)
  | 'ERR_SANA_OUT_OF_MEMORY'
  | 'ERR_SANA_DISPOSED' // a tensor or backend was used after dispose()
  | 'ERR_SANA_ABORTED'
  | 'ERR_SANA_WORKER_FAILED' // a pool task failed on every try (crashed workers, native errors)
  | 'ERR_SANA_NON_FINITE' // a model produced NaN/Inf (e.g. NaN weights): never handed back as an image
  | 'ERR_SANA_QUEUE' // the render farm's Redis is unreachable (past the wait bound) or refused a command
  | 'ERR_SANA_NATIVE'; // an unexpected failure inside native code

export class SanaError extends Error {
  readonly code: SanaErrorCode;
  constructor(code: SanaErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SanaError';
    this.code = code;
  }
}

/** A worker's reply for a failed task: a structured-cloned Error loses its code, so it travels as plain data. */
export function errorReply(e: unknown): { error: { code: SanaErrorCode; message: string } } {
  const code: SanaErrorCode = e instanceof SanaError ? e.code : 'ERR_SANA_NATIVE';
  return { error: { code, message: e instanceof Error ? e.message : String(e) } };
}

/** Formats a received value for the message template `Expected <what> for <option> but received <value>`. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value)) return `[${value.map(describeValue).join(', ')}]`;
  if (ArrayBuffer.isView(value)) return `${value.constructor.name}(${(value as unknown as { length: number }).length})`;
  if (typeof value === 'object') return (value as object).constructor?.name ?? 'an object';
  return typeof value;
}

export function expected(what: string, option: string, value: unknown): string {
  return `Expected ${what} for ${option} but received ${describeValue(value)}`;
}

export function invalidArgument(op: string, what: string, option: string, value: unknown): SanaError {
  return new SanaError('ERR_SANA_INVALID_ARGUMENT', `${op}: ${expected(what, option, value)}`);
}

const nativeCodes = new Set<string>([
  'ERR_SANA_INVALID_ARGUMENT',
  'ERR_SANA_OUT_OF_MEMORY',
  'ERR_SANA_UNSUPPORTED',
  'ERR_SANA_NATIVE',
]);

/** Wraps an error thrown by the addon or the wasm glue (a plain Error with a `code`) in a SanaError. */
export function fromKernelError(err: unknown): SanaError {
  if (err instanceof SanaError) return err;
  const code = (err as { code?: unknown })?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (typeof code === 'string' && nativeCodes.has(code)) return new SanaError(code as SanaErrorCode, message);
  if (err instanceof RangeError && /memory|allocation/i.test(message))
    return new SanaError('ERR_SANA_OUT_OF_MEMORY', message, { cause: err });
  return new SanaError('ERR_SANA_NATIVE', message, { cause: err });
}
