// The holes a fuzzing run found in the loaders (FIFOs, devices, directories and files in each other's place,
// configs asking for 10^9 layers, numeric dtypes, integers beyond 2^53, shape mismatches caused by a config
// value, a corrupted shard header), each made in a copy of the built-in demo model. Every one must end in a
// SanaError with its code and the file/key in the message: in this thread (run in a child process, so a
// regression that hangs cannot stall the suite) and on the worker path (SanaPipeline).
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { SanaError } from '../../ts/errors.js';
import { SafetensorsFile } from '../../ts/io/safetensors.js';
import { demoModelDir, packageRoot } from '../../ts/paths.js';
import { SanaPipeline } from '../../ts/pipeline/sana-pipeline.js';
import { writeSafetensors } from '../fixtures/random-dcae.js';

const root = mkdtempSync(join(tmpdir(), 'sana-hostile-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const WEIGHTS = 'diffusion_pytorch_model.safetensors';
const INDEX = 'diffusion_pytorch_model.safetensors.index.json';
const shardName = (i: number) => `diffusion_pytorch_model-0000${i}-of-00002.safetensors`;

function fifo(path: string): void {
  rmSync(path, { recursive: true, force: true });
  execFileSync('mkfifo', [path]);
}

function replaceByDir(path: string): void {
  rmSync(path, { force: true });
  mkdirSync(path);
}

function editText(path: string, edit: (text: string) => string): void {
  const before = readFileSync(path, 'utf8');
  const after = edit(before);
  if (after === before) throw new Error(`test setup: the edit changed nothing in ${path}`);
  writeFileSync(path, after);
}

/** Sets a config key to a literal JSON text (so 1e9, 2^64 and the like are written exactly as given). */
function setConfig(dir: string, component: string, key: string, literal: string): void {
  editText(join(dir, component, 'config.json'), (t) => t.replace(new RegExp(`"${key}": [^,\\n}]+`), `"${key}": ${literal}`));
}

/** Splits a component's weights into two shards and an index, as diffusers writes large checkpoints. */
function shard(dir: string, component: string): void {
  const file = join(dir, component, WEIGHTS);
  const f = SafetensorsFile.open(file);
  const names = [...f.tensors.keys()];
  const tensors = names.map((name) => ({ name, shape: f.tensors.get(name)!.shape, data: f.read(name).data as Float32Array }));
  f.close();
  rmSync(file);
  const half = Math.ceil(tensors.length / 2);
  const weightMap: Record<string, string> = {};
  [tensors.slice(0, half), tensors.slice(half)].forEach((part, i) => {
    writeSafetensors(join(dir, component, shardName(i + 1)), part);
    for (const t of part) weightMap[t.name] = shardName(i + 1);
  });
  writeFileSync(join(dir, component, INDEX), JSON.stringify({ metadata: {}, weight_map: weightMap }));
}

/** Rewrites the JSON header of a safetensors file (the data stays; its offsets are relative to the header end). */
function editHeader(file: string, edit: (header: string) => string): void {
  const bytes = readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = edit(bytes.subarray(8, 8 + n).toString('utf8'));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(header)));
  writeFileSync(file, Buffer.concat([len, Buffer.from(header), bytes.subarray(8 + n)]));
}

interface Hole {
  name: string;
  make: (dir: string) => void;
  /** substrings the error message must contain: the file or key (and the value) */
  mentions: string[];
}

const HOLES: Hole[] = [
  { name: 'a FIFO as the transformer weights', make: (d) => fifo(join(d, 'transformer', WEIGHTS)), mentions: [WEIGHTS, 'FIFO'] },
  { name: 'a FIFO as a weight shard', make: (d) => (shard(d, 'transformer'), fifo(join(d, 'transformer', shardName(2)))), mentions: [shardName(2), 'FIFO'] },
  { name: 'a FIFO as the shard index', make: (d) => (shard(d, 'transformer'), fifo(join(d, 'transformer', INDEX))), mentions: [INDEX, 'FIFO'] },
  { name: 'a FIFO as config.json', make: (d) => fifo(join(d, 'vae', 'config.json')), mentions: ['vae/config.json', 'FIFO'] },
  { name: 'a FIFO as model_index.json', make: (d) => fifo(join(d, 'model_index.json')), mentions: ['model_index.json', 'FIFO'] },
  { name: 'a FIFO as tokenizer/tokenizer.json', make: (d) => fifo(join(d, 'tokenizer', 'tokenizer.json')), mentions: ['tokenizer/tokenizer.json', 'FIFO'] },
  {
    name: 'config.json linked to /dev/zero',
    make: (d) => (rmSync(join(d, 'vae', 'config.json')), symlinkSync('/dev/zero', join(d, 'vae', 'config.json'))),
    mentions: ['vae/config.json', 'character device'],
  },
  {
    name: 'model_index.json linked to /dev/urandom',
    make: (d) => (rmSync(join(d, 'model_index.json')), symlinkSync('/dev/urandom', join(d, 'model_index.json'))),
    mentions: ['model_index.json', 'character device'],
  },
  { name: 'a directory as the weights file', make: (d) => replaceByDir(join(d, 'transformer', WEIGHTS)), mentions: [WEIGHTS, 'directory'] },
  { name: 'a directory as a weight shard', make: (d) => (shard(d, 'transformer'), replaceByDir(join(d, 'transformer', shardName(1)))), mentions: [shardName(1), 'directory'] },
  { name: 'a directory as the shard index', make: (d) => (shard(d, 'transformer'), replaceByDir(join(d, 'transformer', INDEX))), mentions: [INDEX, 'directory'] },
  { name: 'a directory as model_index.json', make: (d) => replaceByDir(join(d, 'model_index.json')), mentions: ['model_index.json', 'directory'] },
  {
    name: 'a regular file as the vae folder',
    make: (d) => (rmSync(join(d, 'vae'), { recursive: true }), writeFileSync(join(d, 'vae'), 'not a folder')),
    mentions: ['vae', 'is a file, not a folder'],
  },
  { name: 'num_layers = 2^40', make: (d) => setConfig(d, 'transformer', 'num_layers', String(2 ** 40)), mentions: ['transformer/config.json', 'num_layers', '1099511627776'] },
  { name: 'num_layers = 1e9 (a float literal)', make: (d) => setConfig(d, 'transformer', 'num_layers', '1e9'), mentions: ['num_layers', '1000000000', WEIGHTS] },
  { name: 'num_layers = 2^53 + 1', make: (d) => setConfig(d, 'transformer', 'num_layers', '9007199254740993'), mentions: ['num_layers', '9007199254740993'] },
  { name: 'num_layers = 2^64', make: (d) => setConfig(d, 'transformer', 'num_layers', '18446744073709551616'), mentions: ['num_layers', '18446744073709551616'] },
  { name: 'num_hidden_layers = 1e9', make: (d) => setConfig(d, 'text_encoder', 'num_hidden_layers', '1000000000'), mentions: ['text_encoder/config.json', 'num_hidden_layers', '1000000000'] },
  {
    name: 'a decoder_layers_per_block entry of 1e9',
    make: (d) => editText(join(d, 'vae', 'config.json'), (t) => t.replace(/("decoder_layers_per_block": \[)\s*\d+/, '$11000000000')),
    mentions: ['vae/config.json', 'decoder_layers_per_block', '1000000000'],
  },
  { name: 'a numeric dtype in a header', make: (d) => editHeader(join(d, 'transformer', WEIGHTS), (h) => h.replace('"dtype":"F32"', '"dtype":32')), mentions: [WEIGHTS, 'dtype', '32'] },
  {
    name: 'a 2^64 dimension in a header',
    make: (d) => editHeader(join(d, 'transformer', WEIGHTS), (h) => h.replace('"shape":[', '"shape":[18446744073709551616,')),
    mentions: [WEIGHTS, '18446744073709551616'],
  },
  {
    name: 'a shape mismatch made by a config value',
    make: (d) => setConfig(d, 'transformer', 'mlp_ratio', '3.0'),
    mentions: ['transformer_blocks.0.ff.conv_inverted.weight', 'mlp_ratio = 3'],
  },
  {
    name: 'a tensor renamed in a corrupted shard header',
    make: (d) => {
      shard(d, 'transformer');
      editHeader(join(d, 'transformer', shardName(2)), (h) => h.replace('.weight"', '.weighX"'));
    },
    mentions: [shardName(2), '.weight'],
  },
  {
    name: 'a tensor the shard index does not list',
    make: (d) => {
      shard(d, 'transformer');
      const index = JSON.parse(readFileSync(join(d, 'transformer', INDEX), 'utf8'));
      delete index.weight_map['proj_out.weight'];
      writeFileSync(join(d, 'transformer', INDEX), JSON.stringify(index));
    },
    mentions: ['proj_out.weight', INDEX, 'holds it'],
  },
];

const folders = new Map<string, string>();
beforeAll(() => {
  HOLES.forEach((hole, i) => {
    const dir = join(root, `hole-${i}`);
    cpSync(demoModelDir(), dir, { recursive: true });
    hole.make(dir);
    folders.set(hole.name, dir);
  });
});

interface Outcome {
  code?: string;
  message?: string;
  ms: number;
}

/** Loads every folder with SanaPipelineCore in a child process; one JSON line per folder. */
function loadInThread(dirs: string[]): Outcome[] {
  const core = join(packageRoot(), 'dist', 'ts', 'pipeline', 'pipeline-core.js');
  const script = `
    import { SanaPipelineCore } from ${JSON.stringify(core)};
    for (const dir of process.argv.slice(1)) {
      const t0 = performance.now();
      try {
        (await SanaPipelineCore.fromPretrained(dir)).dispose();
        console.log(JSON.stringify({ ms: performance.now() - t0 }));
      } catch (e) {
        console.log(JSON.stringify({ code: e.code, message: e.message, ms: performance.now() - t0 }));
      }
    }`;
  let out: string;
  try {
    out = execFileSync(process.execPath, ['--input-type=module', '-e', script, ...dirs], { encoding: 'utf8', timeout: 60_000 });
  } catch (e) {
    out = String((e as { stdout?: string }).stdout ?? ''); // a hang: the cases after the last line fail below
  }
  return out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

describe('loader hardening: hostile model folders', () => {
  let inThread: Outcome[] = [];
  beforeAll(() => {
    inThread = loadInThread(HOLES.map((h) => folders.get(h.name)!));
  });

  HOLES.forEach((hole, i) => {
    it(`${hole.name}: in-thread load ends in a named ERR_SANA_MODEL_FORMAT within a second`, () => {
      const o = inThread[i];
      expect(o, 'the load returned (no hang)').toBeDefined();
      expect(o.code, o.message).toBe('ERR_SANA_MODEL_FORMAT');
      for (const m of hole.mentions) expect(o.message).toContain(m);
      expect(o.ms).toBeLessThan(1000);
    });

    it(`${hole.name}: the worker path (SanaPipeline) reports the same error`, async () => {
      const t0 = performance.now();
      let timer: NodeJS.Timeout | undefined;
      const err = await Promise.race([
        SanaPipeline.fromPretrained(folders.get(hole.name)!).then(async (p) => (await p.dispose(), new Error('loaded'))),
        new Promise<Error>((r) => (timer = setTimeout(() => r(new Error('no answer within 20 s')), 20_000))),
      ]).catch((e: Error) => e);
      clearTimeout(timer);
      expect(err).toBeInstanceOf(SanaError);
      expect((err as SanaError).code).toBe('ERR_SANA_MODEL_FORMAT');
      for (const m of hole.mentions) expect(err.message).toContain(m);
      // a generous bound: it includes starting the worker thread
      expect(performance.now() - t0).toBeLessThan(5000);
    });
  });
});
