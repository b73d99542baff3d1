#!/usr/bin/env node
// Builds the native addon with cmake-js (offline: headers come from node-api-headers). Run by `npm install`.
// Without --strict a failed build does not fail the install: the package then runs on its WASM build and
// the cpu backend's probe reports the reason recorded in build/native-build-error.txt.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
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
// The CUDA addon is built where nvcc is found (CUDACXX, else PATH); its absence or a failed CUDA build never
// costs the cpu addon (except with --strict, which CI uses so that a CUDA compile error fails the build).
// Why it is missing is recorded in build/cuda-build-error.txt for the cuda probe to report.
const cudaErrorFile = join(root, 'build', 'cuda-build-error.txt');
function findNvcc() {
  if (process.env.SANA_SKIP_CUDA === '1') return { reason: 'SANA_SKIP_CUDA=1 was set at build time' };
  if (process.env.CUDACXX) return existsSync(process.env.CUDACXX) ? { nvcc: process.env.CUDACXX } : { reason: `CUDACXX=${process.env.CUDACXX} does not exist` };
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, 'nvcc');
    if (dir && existsSync(candidate)) return { nvcc: candidate };
  }
  return { reason: 'no nvcc at build time (put the CUDA toolkit on PATH or set CUDACXX, then run npm run build:native)' };
}

// configure every time (the CUDA choice is a cache variable), then an incremental build
function compile(nvcc) {
  const run = (cmd, extra) => spawnSync(process.execPath, [cmakeJs, cmd, '--out', 'build', '--config', 'Release', ...extra], {
    cwd: root,
    stdio: ['ignore', 'inherit', 'pipe'],
    encoding: 'utf8',
  });
  const configured = run('configure', [`--CDSANA_CUDA_COMPILER=${nvcc ?? ''}`]);
  return configured.status === 0 && !configured.error ? run('build', []) : configured;
}
const firstErrorOf = (res) => (res.stderr ?? '').split('\n').find((l) => /error|not found|No CMAKE/i.test(l))?.trim() ?? '';

const cuda = findNvcc();
let cudaReason = cuda.reason;
let res = compile(cuda.nvcc);
if (res.status !== 0 && !res.error && cuda.nvcc) {
  process.stderr.write(res.stderr ?? '');
  cudaReason = `the CUDA build with ${cuda.nvcc} failed${firstErrorOf(res) ? `: ${firstErrorOf(res)}` : ''}`;
  if (strict) fail(cudaReason);
  console.warn(`sana-node: ${cudaReason}; building without the cuda backend.`);
  res = compile(undefined);
}
if (res.error) fail(`could not run cmake-js: ${res.error.message}`);
if (res.status !== 0) {
  process.stderr.write(res.stderr ?? '');
  fail(`cmake-js exited with ${res.status}${firstErrorOf(res) ? `: ${firstErrorOf(res)}` : ''}`);
}
rmSync(errorFile, { force: true });
if (cudaReason) {
  rmSync(join(root, 'build', 'Release', 'sana_cuda.node'), { force: true });
  writeFileSync(cudaErrorFile, cudaReason + '\n');
} else {
  rmSync(cudaErrorFile, { force: true });
}
