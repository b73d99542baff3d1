#!/usr/bin/env node
// The `sana` command. Exit codes: 0 ok, 1 runtime error (bad model folder, failed generation), 2 usage error
// (unknown command or option, invalid option value), 130 interrupted (Ctrl-C). Errors print the message, not a stack trace.
import { writeFile } from 'node:fs/promises';

import { MultiBar, SingleBar } from 'cli-progress';
import { Command, CommanderError, InvalidArgumentError } from 'commander';

import { backendNames, createBackend, deviceForms, probeBackends } from '../backends/registry.js';
import { describeValue, SanaError } from '../errors.js';
import { choosePrecision, PRECISION_CHOICES, type PrecisionChoice } from '../models/precision.js';
import { demoModelDir } from '../paths.js';
import type { PipelineClass } from '../pipeline/components.js';
import { inspectPipeline } from '../pipeline/inspect.js';
import { parseLoraSpec } from '../models/lora.js';
import type { BackendChoice, DecodeMode } from '../pipeline/pipeline-core.js';
import { SanaPipeline, type GenerateOptions } from '../pipeline/sana-pipeline.js';
import { createSanaPool, readRenderJobs } from '../pool/sana-pool.js';
import { renderViaQueue, workerCli, type BatchCliOptions, type QueueCliOptions } from './farm.js';

const expected = (what: string, value: string) => new InvalidArgumentError(`Expected ${what} but received ${describeValue(value)}`);

function integer(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) throw expected(`an integer from ${min} to ${max}`, value);
    return n;
  };
}

function number(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw expected('a number', value);
  return n;
}

/** --lora file[:scale], repeatable */
function lora(value: string, previous: { path: string; scale: number }[] = []): { path: string; scale: number }[] {
  try {
    return [...previous, parseLoraSpec(value)];
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

function seed(value: string): bigint {
  if (!/^\d+$/.test(value) || BigInt(value) >= 1n << 64n) throw expected('an integer from 0 to 2^64 − 1', value);
  return BigInt(value);
}

function size(value: string): { width: number; height: number } {
  const m = /^(\d+)x(\d+)$/.exec(value);
  if (!m) throw expected('WIDTHxHEIGHT, e.g. 1024x768', value);
  return { width: Number(m[1]), height: Number(m[2]) };
}

function tile(value: string): { size: number; stride: number } {
  const m = /^(\d+)\/(\d+)$/.exec(value);
  if (!m) throw expected('TILE/STRIDE in pixels, e.g. 1024/896', value);
  return { size: Number(m[1]), stride: Number(m[2]) };
}

function tiling(t?: { size: number; stride: number }): GenerateOptions['tiling'] {
  return t && { tileSampleMinHeight: t.size, tileSampleMinWidth: t.size, tileSampleStrideHeight: t.stride, tileSampleStrideWidth: t.stride };
}

function choice(...allowed: string[]) {
  return (value: string): string => {
    if (!allowed.includes(value)) throw expected(`one of ${allowed.join(', ')}`, value);
    return value;
  };
}

async function backends(): Promise<void> {
  for (const p of probeBackends()) {
    let line = `${p.name.padEnd(5)} ${p.available ? 'available' : `unavailable: ${p.reason}`}`;
    if (p.available) {
      const b = await createBackend(p.name);
      const i = b.info;
      line += ` (variant ${i.variant}, ${i.threads} thread${i.threads === 1 ? '' : 's'}; variants here: ${i.variants.join(', ')})`;
      b.dispose();
    }
    process.stdout.write(line + '\n');
  }
}

async function info(opts: { model: string; variant?: string }): Promise<void> {
  const { pipeline, components, warnings } = inspectPipeline(opts.model, opts.variant);
  if (opts.model === demoModelDir())
    process.stdout.write(`model: the built-in demo model (${opts.model}): a 64×64 Sana trained on pictures of one shape on a plain background, see training/README.md\n`);
  process.stdout.write(`pipeline: ${pipeline} (${PIPELINE_SUMMARY[pipeline]})\n`);
  for (const c of components) {
    const weights = c.parameters !== undefined
      ? `, ${c.tensors} tensors, ${c.parameters.toLocaleString('en-US')} parameters (${Object.entries(c.dtypes ?? {}).map(([d, n]) => `${d} ${n.toLocaleString('en-US')}`).join(', ')})`
      : '';
    process.stdout.write(`${c.name}: ${c.className ?? 'none'}${weights}\n  ${JSON.stringify(c.config)}\n`);
  }
  for (const w of warnings) process.stdout.write(`warning: ${w}\n`);
  process.stdout.write('backends:\n');
  for (const p of probeBackends()) process.stdout.write(`  ${p.name.padEnd(5)} ${p.available ? 'available' : `unavailable: ${p.reason}`}\n`);
  // what --precision auto picks here, from the stored dtypes and the backend auto would use
  const be = await createBackend('auto');
  const on = be.info;
  be.dispose();
  process.stdout.write(`precision (auto, on ${on.name} ${on.variant}):\n`);
  for (const c of components.filter((c) => c.dtypes))
    process.stdout.write(`  ${c.name}: ${describePrecision(choosePrecision('auto', on, Object.keys(c.dtypes!), c.name !== 'vae'))}\n`);
}

const PIPELINE_SUMMARY: Record<PipelineClass, string> = {
  SanaPipeline: 'flow matching with classifier-free guidance, 20 steps by default',
  SanaSprintPipeline: 'Sana-Sprint: SCM consistency sampling with embedded guidance, 2 steps by default',
};

function describePrecision(d: { precision: string; reason: string }): string {
  return `${d.precision} (${d.reason})`;
}

interface GenerateCliOptions {
  model: string;
  negative?: string;
  size?: { width: number; height: number };
  width?: number;
  height?: number;
  steps?: number;
  guidance?: number;
  seed?: bigint;
  scheduler?: 'flow-dpm-solver' | 'flow-euler';
  backend?: BackendChoice;
  threads?: number;
  precision?: PrecisionChoice;
  numImages?: number;
  image?: string;
  strength?: number;
  lora?: { path: string; scale: number }[];
  maxSequenceLength?: number;
  chi: boolean;
  binning: boolean;
  decode?: 'auto' | DecodeMode;
  tile?: { size: number; stride: number };
  output: string;
}

async function generate(prompt: string, opts: GenerateCliOptions): Promise<void> {
  if (opts.size && (opts.width !== undefined || opts.height !== undefined))
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected either --size or --width/--height for size but received both`);
  const width = opts.size?.width ?? opts.width;
  const height = opts.size?.height ?? opts.height;
  const t0 = performance.now();
  const pipe = await SanaPipeline.fromPretrained(opts.model, { backend: opts.backend, threads: opts.threads, precision: opts.precision });
  try {
    for (const w of pipe.warnings) process.stderr.write(`warning: ${w}\n`);
    for (const l of opts.lora ?? []) process.stderr.write(`LoRA ${await pipe.loadLora(l.path, { scale: l.scale })} (scale ${l.scale})\n`);
    const precision = Object.entries(pipe.precision).map(([c, d]) => `${c} ${describePrecision(d)}`).join(', ');
    const loadMs = performance.now() - t0;
    let decodeNote = '';
    const bar = new SingleBar({ format: 'sana |{bar}| {value}/{total} steps | {stage}', stream: process.stderr, hideCursor: true, noTTYOutput: true, notTTYSchedule: 2000 });
    const gen: GenerateOptions = {
      negativePrompt: opts.negative, width, height, steps: opts.steps, guidanceScale: opts.guidance, seed: opts.seed,
      scheduler: opts.scheduler, numImagesPerPrompt: opts.numImages, useResolutionBinning: opts.binning ? undefined : false,
      image: opts.image, strength: opts.strength,
      maxSequenceLength: opts.maxSequenceLength, complexHumanInstruction: opts.chi ? undefined : null,
      decode: opts.tile ? (opts.decode ?? 'tiled') : opts.decode, tiling: tiling(opts.tile), // --tile implies --decode tiled
      onProgress: (e) => {
        if (e.status === 'encode') bar.start(opts.steps ?? 20, 0, { stage: 'encoding the prompt' });
        else if (e.status === 'step') {
          bar.setTotal(e.totalSteps); // the pipeline's default when --steps is not given (Sana 20, Sprint 2)
          bar.update(e.step, { stage: `${(e.stepMs / 1000).toFixed(2)} s/step` });
        }
        else if (e.status === 'decode') {
          bar.update({ stage: `decoding (${e.mode})` });
          decodeNote = `${e.mode}: ${e.reason}`;
        } else if (e.status === 'decode-pass') bar.update({ stage: `decoding (sharded, pass ${e.index + 1}/${e.count})` });
        else if (e.status === 'warning') process.stderr.write(`warning: ${e.message}\n`);
        else if (e.status === 'done') bar.stop();
      },
    };
    let result;
    try {
      result = await pipe.generate(prompt, gen);
    } finally {
      bar.stop();
    }
    const files = result.images.map((_, i) => (result.images.length === 1 ? opts.output : opts.output.replace(/(\.png)?$/i, `-${i + 1}.png`)));
    for (let i = 0; i < files.length; i++) await writeFile(files[i], await result.images[i].toPNG());
    const t = result.timings;
    const stepsMs = t.stepMs.reduce((a, b) => a + b, 0);
    const binned = result.generatedSize.width !== result.images[0].width || result.generatedSize.height !== result.images[0].height
      ? ` (generated at ${result.generatedSize.width}x${result.generatedSize.height})` : '';
    process.stderr.write(
      `wrote ${files.join(', ')} ${result.images[0].width}x${result.images[0].height}${binned}, seed ${result.seed}: load ${(loadMs / 1000).toFixed(1)} s, ` +
        `encode ${t.encodeMs.toFixed(0)} ms, ${t.stepMs.length} steps ${(stepsMs / 1000).toFixed(1)} s (${(stepsMs / t.stepMs.length).toFixed(0)} ms/step), decode ${t.decodeMs.toFixed(0)} ms (${decodeNote}); precision: ${precision}\n`,
    );
  } finally {
    pipe.dispose();
  }
}

interface RenderCliOptions extends BatchCliOptions {
  model: string;
  devices?: string;
  threadsPerWorker?: number;
  precision?: PrecisionChoice;
}

async function render(prompts: string, opts: RenderCliOptions): Promise<void> {
  const jobs = readRenderJobs(prompts);
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const pool = await createSanaPool({ model: opts.model, devices: opts.devices, threadsPerWorker: opts.threadsPerWorker, maxAttempts: opts.maxAttempts, precision: opts.precision });
  const bars = new MultiBar({ format: '{name} |{bar}| {value}/{total} {unit} | {stage}', stream: process.stderr, hideCursor: true, noTTYOutput: true, notTTYSchedule: 5000 });
  let summary;
  try {
    process.stderr.write(`rendering ${jobs.length} prompt(s) from ${prompts} on ${pool.devices.map((d) => `${d.label} (${d.backendInfo?.variant}, ${d.config.threads} thread${d.config.threads === 1 ? '' : 's'})`).join(', ')} into ${opts.out}\n`);
    const overall = bars.create(jobs.length, 0, { name: 'all   ', unit: 'images', stage: '' });
    const perDevice = new Map(pool.devices.map((d) => [d.label, bars.create(opts.steps ?? 20, 0, { name: d.label.padEnd(6), unit: 'steps', stage: 'idle' })]));
    let done = 0;
    summary = await pool.render(jobs, {
      outDir: opts.out, seed: opts.seed, steps: opts.steps, guidanceScale: opts.guidance, width: opts.size?.width, height: opts.size?.height, decode: opts.decode,
      signal: abort.signal,
      onProgress: (e) => {
        if (e.status === 'image-skipped' || e.status === 'task-done') overall.update(++done, { stage: e.status === 'image-skipped' ? `skipped ${e.file} (exists)` : `${e.label} done on ${e.device}` });
        else if (e.status === 'task-start') perDevice.get(e.device)?.update(0, { stage: e.label });
        else if (e.status === 'task-retry') process.stderr.write(`warning: ${e.label} failed on ${e.device}, retrying elsewhere: ${e.error}\n`);
        else if (e.status === 'worker' && e.event.status === 'step') {
          perDevice.get(e.device)?.setTotal(e.event.totalSteps);
          perDevice.get(e.device)?.update(e.event.step, {});
        }
      },
    });
  } finally {
    bars.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await pool.dispose();
  }
  process.stderr.write(`rendered ${summary.rendered.length}, skipped ${summary.skipped.length} (already there) in ${(summary.wallMs / 1000).toFixed(1)} s\n`);
  for (const d of summary.perDevice)
    process.stderr.write(`  ${d.device}: ${d.images} image${d.images === 1 ? '' : 's'}, ${d.imagesPerMinute.toFixed(1)} images/min while busy\n`);
}

function program(): Command {
  const p = new Command('sana')
    .description('Sana text-to-image in Node.js')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .showHelpAfterError('(run sana --help for usage)');
  p.command('backends').description('which backends (cuda, cpu, wasm) and kernel variants run here, and why not').action(backends);
  p.command('info')
    .description('a Sana pipeline folder: components, configs, parameter counts and dtypes (reads headers only), and the backends that can run it')
    .option('--model <dir>', 'diffusers-layout pipeline folder (default: the built-in demo model)', demoModelDir())
    .option('--variant <name>', 'weights variant, e.g. fp16 or bf16')
    .action(info);
  p.command('generate')
    .description('text to PNG')
    .argument('<prompt>', 'what to draw')
    .option('--model <dir>', 'diffusers-layout pipeline folder, e.g. ./Sana_600M_1024px_diffusers (default: the built-in demo model)', demoModelDir())
    .option('--negative <text>', 'negative prompt', '')
    .option('--size <WxH>', 'output size, e.g. 1024x768', size)
    .option('--width <px>', 'output width', integer(32, 8192))
    .option('--height <px>', 'output height', integer(32, 8192))
    .option('--steps <n>', 'denoising steps (default 20; Sana-Sprint 2)', integer(1, 1000))
    .option('--guidance <scale>', 'classifier-free guidance scale (default 4.5; <= 1 turns it off); Sana-Sprint: the embedded guidance (default 4.5)', number)
    .option('--seed <n>', 'seed of the initial noise (torch.Generator-compatible)', seed)
    .option('--scheduler <name>', "flow-dpm-solver or flow-euler (default: the model folder's scheduler)", choice('flow-dpm-solver', 'flow-euler'))
    .option('--backend <name>', `auto (default) or one of ${backendNames().join(', ')}`, choice('auto', ...backendNames()))
    .option('--threads <n>', 'compute threads (default: all cores)', integer(1, 256))
    .option('--precision <mode>', 'auto (default: bf16 GEMMs on a CPU with AMX/AVX-512-BF16 and a 16-bit checkpoint, else fp32), fp32 or bf16', choice(...PRECISION_CHOICES))
    .option('--num-images <n>', 'images per prompt', integer(1, 64))
    .option('--image <file>', 'image-to-image: start from this PNG or JPEG (resized and centre-cropped to the size)')
    .option('--strength <s>', 'image-to-image: share of the schedule that runs, in (0, 1] (default 0.6; 1 ignores the image)', number)
    .option('--lora <file[:scale]>', 'a LoRA adapter for the transformer (.safetensors or a folder holding one), scale default 1; repeatable', lora)
    .option('--no-binning', 'generate at the exact size instead of the nearest aspect-ratio bin')
    .option('--no-chi', "leave out Sana's complex human instruction before the prompt")
    .option('--max-sequence-length <n>', 'text tokens the transformer sees (default 300)', integer(2, 4096))
    .option('--decode <mode>', 'DC-AE decode: auto (default: full if it fits a quarter of the memory, else sharded), full, tiled or sharded (exact, bounded memory)', choice('auto', 'full', 'tiled', 'sharded'))
    .option('--tile <size/stride>', 'tiled decode (implies --decode tiled): tile and stride in pixels (default 512/448; 1024/896 from 4096 px)', tile)
    .option('-o, --output <file>', 'PNG file (several images: file-1.png, file-2.png, ...)', 'out.png')
    .addHelpText('after', '\nExamples:\n  sana generate "a red fox in the snow" --model ./Sana_600M_1024px_diffusers --size 1024x1024 --seed 42 -o fox.png\n  sana info --model ./Sana_600M_1024px_diffusers\n  sana backends\n')
    .action(generate);
  p.command('render')
    .description('batch render: the prompts of a file spread over a pool of workers, one PNG each; rerun to resume. With --queue: a render farm (Redis + BullMQ) instead')
    .argument('[prompts]', 'a .txt file (one prompt per line, # comments) or .jsonl ({"prompt", "seed"?, "negativePrompt"?, "width"?, "height"?, "steps"?, "guidanceScale"?, "lora"?: ["file[:scale]", ...]} per line)')
    .option('--model <dir>', 'diffusers-layout pipeline folder (default: the built-in demo model)', demoModelDir())
    .option('--devices <list>', `one worker per entry (${deviceForms()}), e.g. cpu,cpu or cuda:0,cuda:1 (default: one worker per GPU where CUDA runs, else one CPU worker per two cores)`)
    .option('--out <dir>', 'output folder: <index>-seed<seed>-<prompt slug>.png; existing files are skipped', 'renders')
    .option('--size <WxH>', 'output size, e.g. 1024x768', size)
    .option('--steps <n>', 'denoising steps (default 20; Sana-Sprint 2)', integer(1, 1000))
    .option('--guidance <scale>', 'classifier-free guidance scale, or the embedded guidance of Sana-Sprint (default 4.5)', number)
    .option('--seed <n>', 'seed of prompt i when its line names none: seed + i', integer(0, Number.MAX_SAFE_INTEGER), 0)
    .option('--decode <mode>', 'DC-AE decode in each worker: auto, full, tiled or sharded', choice('auto', 'full', 'tiled', 'sharded'))
    .option('--threads-per-worker <n>', 'kernel threads of each CPU worker (default: the cores divided among them)', integer(1, 256))
    .option('--precision <mode>', 'auto (default), fp32 or bf16: as for sana generate', choice(...PRECISION_CHOICES))
    .option('--max-attempts <n>', 'tries per image before the render fails (a crashed worker\'s image goes to another)', integer(1, 100), 3)
    .option('--queue <url>', 'submit the batch to a render farm: redis://host:6379[/db] (sana worker processes render it)')
    .option('--name <batch>', 'with --queue: the batch name (default: the prompts file name)')
    .option('--wait', 'with --queue: follow the batch and write the images into --out as they arrive')
    .option('--status <batch>', 'with --queue: report the state of a batch')
    .option('--cancel <batch>', 'with --queue: remove the waiting images of a batch and stop its running ones')
    .option('--redis-timeout <s>', 'with --queue: how long a lost Redis connection is waited for', integer(1, 86400), 60)
    .addHelpText('after', '\nExamples:\n  sana render prompts.txt --model ./Sana_600M_1024px_diffusers --devices cpu,cpu --out renders/\n  sana render prompts.jsonl --queue redis://farm:6379/0 --name posters --wait --out renders/\n  sana render --queue redis://farm:6379/0 --status posters\n')
    .action((prompts: string | undefined, opts: RenderCliOptions & QueueCliOptions) => {
      if (opts.queue) return renderViaQueue(prompts, opts);
      for (const only of ['name', 'wait', 'status', 'cancel'] as const)
        if (opts[only] !== undefined) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected --queue with --${only}`);
      if (!prompts) throw new SanaError('ERR_SANA_INVALID_OPTION', 'Expected a prompts file');
      return render(prompts, opts);
    });
  p.command('worker')
    .description('render farm worker: renders the jobs of a Redis queue (BullMQ) on a pool of devices until SIGTERM/Ctrl-C')
    .requiredOption('--queue <url>', 'redis://host:6379[/db]')
    .option('--model <dir>', 'diffusers-layout pipeline folder, the same on every worker (default: the built-in demo model)', demoModelDir())
    .option('--devices <list>', `one pipeline per entry (${deviceForms()}), e.g. cpu,cpu or cuda:0,cuda:1 (default: every GPU, else one CPU worker per two cores)`)
    .option('--out <dir>', 'shared output folder (e.g. a network mount) for images returned as files: <dir>/<batch>/<file name>')
    .option('--result <mode>', 'auto (inline up to --inline-max-bytes, else a file in --out; the default with --out), inline (the default without) or file', choice('auto', 'inline', 'file'))
    .option('--inline-max-bytes <n>', 'largest PNG returned in the job result', integer(0, 512 * 2 ** 20), 2 * 2 ** 20)
    .option('--threads-per-worker <n>', 'kernel threads of each CPU device (default: the cores divided among them)', integer(1, 256))
    .option('--precision <mode>', 'auto (default), fp32 or bf16: as for sana generate', choice(...PRECISION_CHOICES))
    .option('--lock-duration <s>', "how long a job's lock lives unrenewed: a dead worker's job is rendered elsewhere after about this", integer(1, 3600), 30)
    .option('--stalled-interval <s>', 'how often this worker checks for jobs of dead workers', integer(1, 3600), 30)
    .option('--redis-timeout <s>', 'how long a lost Redis connection is waited for before the worker exits', integer(1, 86400), 60)
    .addHelpText('after', '\nExample:\n  sana worker --queue redis://farm:6379/0 --model ./Sana_600M_1024px_diffusers --devices cuda:0,cuda:1 --out /mnt/renders\n')
    .action(workerCli);
  return p;
}

async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2; // commander printed the message
    const message = err instanceof SanaError ? err.message : (err as Error)?.stack ?? String(err);
    process.stderr.write(`sana: ${message}\n`);
    if (err instanceof SanaError && err.code === 'ERR_SANA_ABORTED') return 130;
    return err instanceof SanaError && err.code === 'ERR_SANA_INVALID_OPTION' ? 2 : 1;
  }
}

main(process.argv.slice(2)).then((code) => process.exit(code));
