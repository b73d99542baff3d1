#!/usr/bin/env node
// Builds the native addon with cmake-js (offline: headers come from node-api-headers). Run by `npm install`.
// Without --strict a failed build does not fail the install: the package then runs on its WASM build and
// the cpu backend's probe reports the reason recorded in build/native-build-error.txt.
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const strict = process.argv.includes('--strict');
const errorFile = join(root, 'build', 'native-build-error.txt');

function fail(reason) {
  mkdirSync(join(root, 'build'), { recursive: true });
  writeFileSync(errorFile, reason + '\n');
  console.warn(`sana-node: native addon not built (${reason.split('\n')[0]}); the wasm backend will be used.`);
  process.exit(strict ? 1 : 0);
}

if (process.env.SANA_SKIP_NATIVE_BUILD === '1') fail('SANA_SKIP_NATIVE_BUILD=1 was set');
if (process.arch !== 'x64') fail(`native kernels target x64, this is ${process.arch}`);

let cmakeJs;
try {
  cmakeJs = createRequire(import.meta.url).resolve('cmake-js/bin/cmake-js');
} catch {
  fail('cmake-js is not installed');
}
const res = spawnSync(process.execPath, [cmakeJs, 'compile', '--out', 'build', '--config', 'Release'], {
  cwd: root,
  stdio: ['ignore', 'inherit', 'pipe'],
  encoding: 'utf8',
});
if (res.error) fail(`could not run cmake-js: ${res.error.message}`);
if (res.status !== 0) {
  process.stderr.write(res.stderr ?? '');
  const firstError = (res.stderr ?? '').split('\n').find((l) => /error|not found|No CMAKE/i.test(l)) ?? '';
  fail(`cmake-js exited with ${res.status}${firstError ? `: ${firstError.trim()}` : ''}`);
}
rmSync(errorFile, { force: true });
