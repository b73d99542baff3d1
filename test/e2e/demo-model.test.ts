// The built-in demo model draws what the prompt names: for prompts that include (shape, colour, background)
// triples the DiT never saw together (training/shapes_data.py HELD_OUT), the generated image's background, the
// colour of its foreground and where that foreground sits are measured and compared with the prompt. The same
// checks run against a copy of the model whose transformer weights are replaced by random ones, and must fail
// there: they measure the conditioning, not the palette.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SanaPipeline } from '../../ts/index.js';
import { demoModelDir, packageRoot } from '../../ts/paths.js';

const PALETTE: Record<string, [number, number, number]> = {
  red: [220, 30, 30], green: [30, 180, 50], blue: [30, 60, 220], yellow: [240, 220, 30], white: [245, 245, 245], black: [15, 15, 15],
};
type Case = { prompt: string; colour: string; bg: string; position?: keyof typeof REGIONS };
/** Where the centroid of the shape must fall, as fractions of the side: [y0, y1, x0, x1]. */
const REGIONS = { 'top left': [0, 0.5, 0, 0.5], 'top right': [0, 0.5, 0.5, 1], 'bottom left': [0.5, 1, 0, 0.5], 'bottom right': [0.5, 1, 0.5, 1], center: [0.3, 0.7, 0.3, 0.7] } as const;
const CASES: Case[] = [
  { prompt: 'a red triangle on a blue background', colour: 'red', bg: 'blue' }, // held out
  { prompt: 'a large green circle at the top left on a white background', colour: 'green', bg: 'white', position: 'top left' }, // held out
  { prompt: 'a yellow square at the bottom right on a black background', colour: 'yellow', bg: 'black', position: 'bottom right' }, // held out
  { prompt: 'a white circle at the top right on a red background', colour: 'white', bg: 'red', position: 'top right' }, // held out
  { prompt: 'a large blue square at the bottom left on a yellow background', colour: 'blue', bg: 'yellow', position: 'bottom left' },
  { prompt: 'a black triangle at the center on a green background', colour: 'black', bg: 'green', position: 'center' },
];
const SEEDS = [1n, 2n, 3n];
// pass marks (the committed model's own rates are in training/README.md)
const FOREGROUND_MIN = 16; // of 18
const POSITION_MIN = 13; // of the 15 images whose prompt names a position

function nearest(rgb: number[]): string {
  let best = '';
  let bestD = Infinity;
  for (const [name, c] of Object.entries(PALETTE)) {
    const d = (rgb[0] - c[0]) ** 2 + (rgb[1] - c[1]) ** 2 + (rgb[2] - c[2]) ** 2;
    if (d < bestD) [best, bestD] = [name, d];
  }
  return best;
}

/** The facts of one image: background = majority colour of the border ring; foreground = pixels of another
 * palette colour; its majority colour and its centroid. */
function measure(data: Uint8ClampedArray, size: number) {
  const names = Array.from({ length: size * size }, (_, i) => nearest([data[3 * i], data[3 * i + 1], data[3 * i + 2]]));
  const votes = (list: string[]) => {
    const n = new Map<string, number>();
    for (const x of list) n.set(x, (n.get(x) ?? 0) + 1);
    return [...n.entries()].sort((a, b) => b[1] - a[1]);
  };
  const ring = names.filter((_, i) => { const y = Math.floor(i / size), x = i % size; return y < 3 || x < 3 || y >= size - 3 || x >= size - 3; });
  const bg = votes(ring)[0][0];
  const fg = names.map((n, i) => [n, i] as const).filter(([n]) => n !== bg);
  const colour = fg.length ? votes(fg.map(([n]) => n))[0][0] : 'none';
  const own = fg.filter(([n]) => n === colour);
  const cy = own.reduce((s, [, i]) => s + Math.floor(i / size), 0) / Math.max(own.length, 1) / size;
  const cx = own.reduce((s, [, i]) => s + (i % size), 0) / Math.max(own.length, 1) / size;
  return { bg, colour, area: own.length / (size * size), cy, cx };
}

/** How many of the images get the named background, how many also a foreground of the named colour, and how many
 * of those whose prompt names a position have that foreground's centroid in the named quadrant (or the centre). */
async function facts(pipe: SanaPipeline): Promise<{ background: number; foreground: number; position: number; failures: string[] }> {
  let background = 0;
  let foreground = 0;
  let position = 0;
  const failures: string[] = [];
  for (const c of CASES)
    for (const seed of SEEDS) {
      const img = (await pipe.generate(c.prompt, { seed })).images[0];
      const m = measure(img.data, img.width);
      const drawn = m.bg === c.bg && m.colour === c.colour && m.area > 0.02;
      const r = c.position && REGIONS[c.position];
      const placed = drawn && r && m.cy >= r[0] && m.cy < r[1] && m.cx >= r[2] && m.cx < r[3];
      if (m.bg === c.bg) background++;
      if (drawn) foreground++;
      if (placed) position++;
      if (!drawn || (r && !placed)) failures.push(`${c.prompt} (seed ${seed}): ${JSON.stringify(m)}`);
    }
  return { background, foreground, position, failures };
}

/** A copy of the demo model with the transformer's weights replaced by seeded random values of the same scale. */
function randomTransformerCopy(dir: string): string {
  const out = mkdtempSync(join(tmpdir(), 'sana-demo-random-'));
  cpSync(dir, out, { recursive: true });
  const file = join(out, 'transformer', 'diffusion_pytorch_model.safetensors');
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + 8 + n, buf.byteOffset + buf.length));
  let s = 12345;
  for (let i = 0; i < data.length; i++) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    data[i] = (s / 2 ** 31 - 0.5) * 0.2;
  }
  writeFileSync(file, Buffer.concat([buf.subarray(0, 8 + n), Buffer.from(data.buffer)]));
  return out;
}

describe('the built-in demo model', () => {
  let pipe: SanaPipeline;
  let randomDir: string;
  beforeAll(async () => {
    pipe = await SanaPipeline.fromPretrained();
    randomDir = randomTransformerCopy(demoModelDir());
  });
  afterAll(async () => {
    await pipe?.dispose();
    rmSync(randomDir, { recursive: true, force: true });
  });

  it('draws the named colour at the named place on the named background, also for held-out combinations', async () => {
    const { background, foreground, position, failures } = await facts(pipe);
    expect(background).toBe(CASES.length * SEEDS.length);
    expect(foreground, failures.join('\n')).toBeGreaterThanOrEqual(FOREGROUND_MIN);
    expect(position, failures.join('\n')).toBeGreaterThanOrEqual(POSITION_MIN);
  });

  it("the README's main-job command draws its prompt with no --model", () => {
    const readme = readFileSync(join(packageRoot(), 'README.md'), 'utf8');
    const first = /```sh\n(.*)\n/.exec(readme)?.[1] ?? '';
    const command = /npx sana (generate "([^"]+)" -o (\S+))/.exec(first);
    expect(command, first).not.toBeNull();
    const [, , prompt, file] = command!;
    const cwd = mkdtempSync(join(tmpdir(), 'sana-main-job-'));
    try {
      execFileSync(process.execPath, [join(packageRoot(), 'dist', 'ts', 'cli', 'sana.js'), 'generate', prompt, '-o', file], { cwd, stdio: 'pipe' });
      const png = PNG.sync.read(readFileSync(join(cwd, file)));
      const m = measure(new Uint8ClampedArray(png.data.filter((_, i) => i % 4 !== 3)), png.width);
      const [, colour, , bg] = /a (\w+) (\w+) on a (\w+) background/.exec(prompt) ?? [];
      expect([m.colour, m.bg]).toEqual([colour, bg]);
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  });

  it('the same checks fail for a model with random transformer weights', async () => {
    const random = await SanaPipeline.fromPretrained(randomDir);
    try {
      const { background, foreground, position } = await facts(random);
      expect(background).toBeLessThan(CASES.length * SEEDS.length / 2);
      expect(foreground).toBeLessThan(FOREGROUND_MIN / 3);
      expect(position).toBeLessThan(POSITION_MIN / 3);
    } finally {
      await random.dispose();
    }
  });
});
