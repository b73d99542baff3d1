// Renders docs/demo-samples.png: 8 prompts (one per row, listed in docs/demo-samples.md) × 2 seeds with the
// built-in demo model, each image scaled ×2 (nearest). Usage: node training/sample-grid.mjs [MODEL_DIR]
import { writeFileSync } from 'node:fs';
import { PNG } from 'pngjs';
import { SanaPipeline } from '../dist/ts/index.js';

const PROMPTS = [
  'a red circle on a blue background',
  'a red triangle on a blue background',
  'a large green circle at the top left on a white background',
  'a yellow square at the bottom right on a black background',
  'a white circle at the top right on a red background',
  'a small blue square at the bottom left on a yellow background',
  'a black triangle at the center on a green background',
  'a large yellow triangle at the top right on a green background',
];
const SEEDS = [1n, 2n];
const S = 2;
const GAP = 4;
const pipe = await SanaPipeline.fromPretrained(process.argv[2]);
const tiles = [];
for (const prompt of PROMPTS) for (const seed of SEEDS) tiles.push((await pipe.generate(prompt, { seed })).images[0]);
await pipe.dispose();
const tw = tiles[0].width * S;
const th = tiles[0].height * S;
const png = new PNG({ width: SEEDS.length * (tw + GAP) - GAP, height: PROMPTS.length * (th + GAP) - GAP });
png.data.fill(255);
tiles.forEach((img, k) => {
  const ox = (k % SEEDS.length) * (tw + GAP);
  const oy = Math.floor(k / SEEDS.length) * (th + GAP);
  for (let y = 0; y < th; y++)
    for (let x = 0; x < tw; x++) {
      const src = (Math.floor(y / S) * img.width + Math.floor(x / S)) * 3;
      const dst = ((oy + y) * png.width + ox + x) * 4;
      png.data[dst] = img.data[src];
      png.data[dst + 1] = img.data[src + 1];
      png.data[dst + 2] = img.data[src + 2];
    }
});
writeFileSync('docs/demo-samples.png', PNG.sync.write(png));
writeFileSync('docs/demo-samples.md', `# Demo model samples\n\n![samples](demo-samples.png)\n\nRows, top to bottom (columns: seeds ${SEEDS.join(', ')}; default 20 steps, guidance 4.5):\n\n${PROMPTS.map((p, i) => `${i + 1}. ${p}`).join('\n')}\n\nRows 2–5 are (shape, colour, background) combinations the DiT never saw in training. Regenerate with \`node training/sample-grid.mjs\`.\n`);
console.log('wrote docs/demo-samples.png and docs/demo-samples.md');
