import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/** The package root (holding package.json), found from this file whether it runs from ts/ or dist/ts/. */
export function packageRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === 'sana-node') return (root = dir);
    const up = dirname(dir);
    if (up === dir) throw new Error('sana-node: package root not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

/** The built-in demo model (trained by training/train_demo.py): what runs when no model folder is given. */
export function demoModelDir(): string {
  return join(packageRoot(), 'models', 'sana-shapes-demo');
}
