// Encodes every training caption (and the empty negative prompt used for caption dropout) with sana-node's own
// prompt path — the same tokenizer, complex human instruction, selection and frozen Gemma-2 that generation
// uses — so the DiT trains on exactly the conditioning it will see. Usage: node training/encode-captions.mjs DIR
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SanaPipelineCore } from '../dist/ts/index.js';

const dir = process.argv[2];
if (!dir) throw new Error('usage: node training/encode-captions.mjs DIR (a folder written by train_demo.py init)');
const captions = JSON.parse(readFileSync(join(dir, 'captions.json'), 'utf8'));
const core = await SanaPipelineCore.fromPretrained(dir);
const rows = { cond: [], cond_mask: [], uncond: null, uncond_mask: null };
let length = 0;
let width = 0;
const chunk = 64;
for (let i = 0; i < captions.length; i += chunk) {
  const { cond, uncond } = core.encodePrompt(captions.slice(i, i + chunk), { guidance: true });
  length = cond.length;
  width = cond.embeds.length / (cond.batch * cond.length);
  rows.cond.push(cond.embeds);
  rows.cond_mask.push(Float32Array.from(cond.mask));
  rows.uncond ??= uncond.embeds.subarray(0, length * width);
  rows.uncond_mask ??= Float32Array.from(uncond.mask.slice(0, length));
  process.stdout.write(`\rencoded ${Math.min(i + chunk, captions.length)}/${captions.length}`);
}
core.dispose();
const concat = (parts) => {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) out.set(p, (o += p.length) - p.length);
  return out;
};
const N = captions.length;
const tensors = {
  cond: [concat(rows.cond), [N, length, width]],
  cond_mask: [concat(rows.cond_mask), [N, length]],
  uncond: [rows.uncond, [1, length, width]],
  uncond_mask: [rows.uncond_mask, [1, length]],
};
const header = {};
let offset = 0;
for (const [name, [data, shape]] of Object.entries(tensors)) {
  header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + data.byteLength] };
  offset += data.byteLength;
}
let json = JSON.stringify(header);
json += ' '.repeat((8 - (json.length % 8)) % 8);
const len = Buffer.alloc(8);
len.writeBigUInt64LE(BigInt(json.length));
const file = join(dir, 'caption-embeddings.safetensors');
writeFileSync(file, Buffer.concat([len, Buffer.from(json), ...Object.values(tensors).map(([d]) => Buffer.from(d.buffer, d.byteOffset, d.byteLength))]));
console.log(`\nwrote ${file}: ${N} captions × ${length} tokens × ${width}`);
