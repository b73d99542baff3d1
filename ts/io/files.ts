/**
 * Opening the files of a model folder as a hostile folder may present them: every file must be a regular
 * file (a FIFO would block `open` forever, `/dev/zero` would feed a read until memory runs out), text is
 * read up to a size cap, and every failure is a SanaError naming the path, never a raw Node error.
 */
import { closeSync, constants, fstatSync, openSync, readSync, statSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';

import { SanaError } from '../errors.js';

/** Largest JSON/text file a loader reads (Gemma's tokenizer.json, the biggest real one, is ≈ 17 MB). */
export const MAX_TEXT_BYTES = 64 * 1024 * 1024;

/** A model-folder defect (ERR_SANA_MODEL_FORMAT) with its message as given. */
export function formatError(message: string, cause?: unknown): SanaError {
  return new SanaError('ERR_SANA_MODEL_FORMAT', message, cause ? { cause } : undefined);
}

function kind(s: Stats): string {
  if (s.isDirectory()) return 'a directory';
  if (s.isFIFO()) return 'a FIFO (named pipe)';
  if (s.isCharacterDevice()) return 'a character device';
  if (s.isBlockDevice()) return 'a block device';
  if (s.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** Why an fs call on `path` failed, in words (ENOTDIR: some folder on the way is a file). */
function explain(path: string, e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ENOENT': return `${path} does not exist`;
    case 'ENOTDIR': return `${dirname(path)} is not a folder (a file is where a folder belongs)`;
    case 'EACCES':
    case 'EPERM': return `${path}: permission denied`;
    case 'ELOOP': return `${path}: too many levels of symbolic links`;
    default: return `${path}: ${(e as Error).message}`;
  }
}

/** Opens a regular file for reading. O_NONBLOCK makes opening a FIFO return at once (instead of waiting for
 * a writer), so the type check after it cannot hang; it has no effect on regular files. */
export function openRegularFile(path: string, what: string): { fd: number; size: number } {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (e) {
    throw formatError(`${what}: cannot open: ${explain(path, e)}`, e);
  }
  try {
    const s = fstatSync(fd);
    if (!s.isFile()) throw formatError(`${what}: ${path} is ${kind(s)}, not a regular file`);
    return { fd, size: s.size };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** Fills `target` from `position` of an open file; a short read (the file shrank) is an error. */
export function readExactly(fd: number, target: Uint8Array, position: number, what: string): void {
  let done = 0;
  while (done < target.byteLength) {
    let got: number;
    try {
      got = readSync(fd, target, done, target.byteLength - done, position + done);
    } catch (e) {
      throw formatError(`${what}: read failed (${(e as Error).message})`, e);
    }
    if (got === 0) throw formatError(`${what}: ends early (file changed while open?)`);
    done += got;
  }
}

/** The UTF-8 text of a regular file of at most `maxBytes`. */
export function readTextFile(path: string, what: string, maxBytes = MAX_TEXT_BYTES): string {
  const { fd, size } = openRegularFile(path, what);
  try {
    if (size > maxBytes) throw formatError(`${what}: ${path} is ${size} bytes, over the ${maxBytes}-byte limit for a text file`);
    const bytes = new Uint8Array(size);
    readExactly(fd, bytes, 0, what);
    return Buffer.from(bytes.buffer, 0, size).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** What is at `path`: 'file', 'dir', 'missing', or (for anything else) an error naming it. Symlinks are
 * followed; a dangling one counts as missing. */
export function entryKind(path: string, what: string): 'file' | 'dir' | 'missing' {
  let s: Stats;
  try {
    s = statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'missing';
    throw formatError(`${what}: ${explain(path, e)}`, e);
  }
  if (s.isFile()) return 'file';
  if (s.isDirectory()) return 'dir';
  throw formatError(`${what}: ${path} is ${kind(s)}, not a regular file or folder`);
}

/** Throws unless `path` is a folder. */
export function requireFolder(path: string, what: string): void {
  const k = entryKind(path, what);
  if (k === 'missing') throw formatError(`${what}: the folder ${path} does not exist`);
  if (k === 'file') throw formatError(`${what}: ${path} is a file, but a folder belongs there`);
}
