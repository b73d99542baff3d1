#!/usr/bin/env node
// The `sana` command. `sana backends` reports which compute backends and kernel variants run here and why
// the others do not (the generate/info/render commands build on the pipeline).
import { createBackend, probeBackends } from '../backends/registry.js';
import { SanaError } from '../errors.js';
import { inspectPipeline } from '../pipeline/inspect.js';

const usage = `Usage: sana <command> [options]

Commands:
  backends                 which backends (cuda, cpu, wasm) and kernel variants run on this machine, and why not
  info --model DIR         a Sana pipeline folder (diffusers layout): components, configs, parameter counts and
                           dtypes, read from model_index.json, the configs and the safetensors headers
       [--variant NAME]    weights variant, e.g. fp16 or bf16 (diffusion_pytorch_model.NAME.safetensors)

Examples:
  npx sana backends
  npx sana info --model ./Sana_600M_1024px_diffusers
`;

async function main(argv: string[]): Promise<number> {
  const [cmd] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h') {
    process.stdout.write(usage);
    return cmd ? 0 : 2;
  }
  if (cmd === 'backends') {
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
    return 0;
  }
  if (cmd === 'info') {
    const opt = (name: string) => {
      const i = argv.indexOf(name);
      return i > 0 ? argv[i + 1] : undefined;
    };
    const model = opt('--model');
    if (!model) {
      process.stderr.write(`sana: Expected a folder for --model but received nothing\n\n${usage}`);
      return 2;
    }
    const { components, warnings } = inspectPipeline(model, opt('--variant'));
    for (const c of components) {
      const weights = c.parameters !== undefined
        ? `, ${c.tensors} tensors, ${c.parameters.toLocaleString('en-US')} parameters (${Object.entries(c.dtypes ?? {}).map(([d, n]) => `${d} ${n.toLocaleString('en-US')}`).join(', ')})`
        : '';
      process.stdout.write(`${c.name}: ${c.className ?? 'none'}${weights}\n  ${JSON.stringify(c.config)}\n`);
    }
    for (const w of warnings) process.stdout.write(`warning: ${w}\n`);
    return 0;
  }
  process.stderr.write(`sana: unknown command ${JSON.stringify(cmd)}\n\n${usage}`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`sana: ${err instanceof SanaError ? err.message : (err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
