#!/usr/bin/env bash
# Builds the WASM SIMD128 kernels from the same sources as the native addon into wasm/dist/ (committed).
# Deterministic: CI rebuilds it and fails on any difference (`bash wasm/build.sh --check`).
# Needs Debian's emscripten (apt-get install emscripten); its Node glue is broken on Node 18+, so the
# module is an ES module for web/worker environments and ts/backends/wasm.ts hands it the .wasm bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
export NODE_PATH=/usr/share/nodejs  # Debian's emscripten finds acorn & co. only there
out=wasm/dist
if [[ "${1:-}" == "--check" ]]; then out=$(mktemp -d); fi
mkdir -p "$out"
exports='_malloc,_free'
for f in $(grep 'SANA_API' native/include/sana_ops.h | grep -o '\bsana_[a-z0-9_]*(' | tr -d '('); do
  exports="$exports,_$f"
done
emcc -std=gnu++17 -O3 -msimd128 -ffp-contract=fast -fno-math-errno -fno-exceptions \
  native/core/context.cpp native/core/cpuid.cpp native/core/validation.cpp native/core/call.cpp native/kernels/dispatch.cpp native/kernels/ref/ref_ops.cpp \
  native/kernels/wasm/variant-wasm-simd128.cpp \
  -sMODULARIZE=1 -sEXPORT_ES6=1 -sEXPORT_NAME=createSanaKernels -sENVIRONMENT=web,worker \
  -sALLOW_MEMORY_GROWTH=1 -sMAXIMUM_MEMORY=4GB -sINITIAL_MEMORY=64MB -sTOTAL_STACK=1MB -sFILESYSTEM=0 \
  -sEXPORTED_FUNCTIONS="[$exports]" -sEXPORTED_RUNTIME_METHODS='[UTF8ToString]' \
  -o "$out/sana-kernels.mjs"
if [[ "${1:-}" == "--check" ]]; then
  if ! cmp -s "$out/sana-kernels.wasm" wasm/dist/sana-kernels.wasm || ! cmp -s "$out/sana-kernels.mjs" wasm/dist/sana-kernels.mjs; then
    echo "wasm/dist is stale: run 'npm run build:wasm' and commit the result" >&2
    exit 1
  fi
  echo "wasm/dist matches a fresh build"
fi
