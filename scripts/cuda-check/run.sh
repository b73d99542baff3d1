#!/usr/bin/env bash
# npm run check:cuda — the CUDA device check in one call, on a GPU machine that has only this repository and the
# .cuda-check/ folder that `npm run check:cuda:prepare` made here (carried along): builds the addons with CUDA,
# runs the kernel suites (every op on cuda against the references, same tolerances as cpu), the golden parity
# suite with cuda among the backends and the pool suite (workers on the GPU), then bench/cuda.ts. Writes to
# $OUT (default .cuda-check/out): gpu.txt, build.txt, tests.json (vitest's JSON report), tests.txt,
# bench.jsonl, summary.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
CHECK=$PWD/.cuda-check
OUT=${OUT:-$CHECK/out}
mkdir -p "$OUT"
[ -f "$CHECK/deps.tar.xz" ] || { echo "check:cuda: no .cuda-check/ here: run npm run check:cuda:prepare on the build machine and carry the folder" >&2; exit 2; }
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*" | tee -a "$OUT/summary.txt"; }

if ! command -v node >/dev/null; then
  mkdir -p /tmp/sana-check/bin
  xz -dc "$CHECK/node.xz" >/tmp/sana-check/bin/node && chmod +x /tmp/sana-check/bin/node
  export PATH=/tmp/sana-check/bin:$PATH
fi
[ -d node_modules ] && [ -d dist ] || tar -xJf "$CHECK/deps.tar.xz"
[ -d "$CHECK/golden" ] || tar -xJf "$CHECK/golden.tar.xz" -C "$CHECK"
if ! command -v nvcc >/dev/null && [ -z "${CUDACXX:-}" ]; then
  for d in /usr/local/cuda/bin /usr/local/cuda-*/bin /opt/cuda/bin; do [ -x "$d/nvcc" ] && export PATH=$d:$PATH && break; done
fi
export SANA_GOLDEN_DIR=$CHECK/golden SANA_PEER_DIR=$CHECK/peer SANA_REQUIRE_FIXTURES=0
(nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; nvcc --version | tail -2; node --version) >"$OUT/gpu.txt" 2>&1
stamp "node $(node --version), $(head -1 "$OUT/gpu.txt")"

node scripts/build-native.mjs --strict >"$OUT/build.txt" 2>&1
build=$?
stamp "build (CUDA): exit $build"
[ $build -eq 0 ] || { tail -30 "$OUT/build.txt"; exit 1; }
probe=$(node --input-type=module -e "import { probeBackends } from './dist/ts/backends/registry.js'; console.log(JSON.stringify(probeBackends().find((p) => p.name === 'cuda')))")
stamp "cuda probe: $probe"

node node_modules/vitest/vitest.mjs run test/kernels test/parity/golden.test.ts test/pool --reporter=default --reporter=json --outputFile.json="$OUT/tests.json" >"$OUT/tests.txt" 2>&1
tests=$?
stamp "kernel, golden and pool suites: exit $tests, $(grep -E 'Tests ' "$OUT/tests.txt" | tail -1 | sed 's/\x1b\[[0-9;]*m//g')"
grep -E '×|FAIL' "$OUT/tests.txt" | sed 's/\x1b\[[0-9;]*m//g' | head -40 >>"$OUT/summary.txt"

timeout 420 node dist/bench/cuda.js >"$OUT/bench.jsonl" 2>"$OUT/bench.err"
stamp "bench: exit $?"
cat "$OUT/bench.jsonl" "$OUT/summary.txt"
[ $tests -eq 0 ]
