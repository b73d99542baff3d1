#!/usr/bin/env node
// The `sana` command. `sana backends` reports which compute backends and kernel variants run here and why
// the others do not (the generate/info/render commands build on the pipeline).
import { createBackend, probeBackends } from '../backends/registry.js';
import { SanaError } from '../errors.js';

const usage = `Usage: sana <command>

Commands:
  backends        which backends (cuda, cpu, wasm) and kernel variants run on this machine, and why not

Examples:
  npx sana backends
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
