// One whole 1024² image at the real sizes, 20 steps (part `e2e` of npm run bench:models): Gemma-2-2B (all 26
// layers, bf16 weights as released), the 600M transformer and the DC-AE f32c32 decoder, random weights. The
// folder is assembled in .peer/sana_1024_e2e from the peer cases (layers 6..25 of Gemma are generated here into
// a second shard of a sharded checkpoint), with the demo model's tokenizer and scheduler. Prints the time of
// each stage and the peak RSS of each (VmHWM, reset between stages), in both precisions. Part `sprint`: the
// same image from a Sana-Sprint-shaped folder (.peer/sana_sprint_1024_e2e: the 600M with guidance embeds and
// qk-norm, SCMScheduler, 2 steps) beside the SanaPipeline one at 20 steps, in bf16.
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';

import { SafetensorsFile } from '../ts/io/safetensors.js';
import { SanaPipelineCore, type ProgressEvent } from '../ts/pipeline/pipeline-core.js';
import type { Precision } from '../ts/models/precision.js';
import { demoModelDir } from '../ts/paths.js';

const GEMMA_LAYERS = 26;
const PEER_LAYERS = 6;

/** Seeded bf16 words ~ U(−scale, scale). */
function bf16Uniform(n: number, seed: number, scale: number): Uint16Array {
  const out = new Uint16Array(n);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    f[0] = ((s / 2 ** 32) * 2 - 1) * scale;
    out[i] = u[0] >>> 16; // truncation is fine for random weights
  }
  return out;
}

/** A safetensors header (8-byte length + JSON padded to 8) for tensors written in this order after it. */
function safetensorsHeader(tensors: { name: string; dtype: 'F32' | 'BF16'; shape: number[] }[]): Buffer {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * (t.dtype === 'F32' ? 4 : 2);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, Buffer.from(json)]);
}

/** Gemma layers PEER_LAYERS..GEMMA_LAYERS−1 (the tensors of one layer, as the peer case names them) in one shard. */
function writeExtraLayers(file: string, H: number, I: number, q: number, kv: number): string[] {
  const names: string[] = [];
  const tensors: { name: string; shape: number[]; scale: number }[] = [];
  for (let l = PEER_LAYERS; l < GEMMA_LAYERS; l++) {
    const p = `layers.${l}.`;
    const add = (name: string, shape: number[], scale: number) => tensors.push({ name: p + name, shape, scale });
    add('self_attn.q_proj.weight', [q, H], 1 / Math.sqrt(H));
    add('self_attn.k_proj.weight', [kv, H], 1 / Math.sqrt(H));
    add('self_attn.v_proj.weight', [kv, H], 1 / Math.sqrt(H));
    add('self_attn.o_proj.weight', [H, q], 1 / Math.sqrt(q));
    add('mlp.gate_proj.weight', [I, H], 1 / Math.sqrt(H));
    add('mlp.up_proj.weight', [I, H], 1 / Math.sqrt(H));
    add('mlp.down_proj.weight', [H, I], 1 / Math.sqrt(I));
    for (const n of ['input_layernorm', 'post_attention_layernorm', 'pre_feedforward_layernorm', 'post_feedforward_layernorm']) add(`${n}.weight`, [H], 0.1);
  }
  for (const t of tensors) names.push(t.name);
  const fd = openSync(file, 'w');
  writeSync(fd, safetensorsHeader(tensors.map((t) => ({ name: t.name, dtype: 'BF16' as const, shape: t.shape }))));
  tensors.forEach((t, i) => {
    const data = bf16Uniform(t.shape.reduce((a, b) => a * b, 1), 1000 + i, t.scale);
    writeSync(fd, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  });
  closeSync(fd);
  return names;
}

/** The real-size pipeline folder (made once). */
function assemble(peerOut: string, materialise: (name: string) => string): string {
  const dir = join(peerOut, 'sana_1024_e2e');
  if (existsSync(join(dir, 'model_index.json'))) return dir;
  const demo = demoModelDir();
  const [transformer, vae, gemma] = ['sana_600m_full_1024', 'dcae_f32c32_decoder_512', 'gemma2_2b_6l'].map(materialise);
  for (const sub of ['transformer', 'vae', 'text_encoder', 'scheduler', 'tokenizer']) mkdirSync(join(dir, sub), { recursive: true });
  for (const f of ['config.json', 'diffusion_pytorch_model.safetensors']) {
    symlinkSync(join(transformer, f), join(dir, 'transformer', f));
    symlinkSync(join(vae, f), join(dir, 'vae', f));
  }
  for (const f of ['scheduler/scheduler_config.json', 'tokenizer/tokenizer.json', 'tokenizer/tokenizer_config.json', 'model_index.json'])
    writeFileSync(join(dir, f), readFileSync(join(demo, f)));
  const cfg = JSON.parse(readFileSync(join(gemma, 'config.json'), 'utf8'));
  writeFileSync(join(dir, 'text_encoder', 'config.json'), JSON.stringify({ ...cfg, num_hidden_layers: GEMMA_LAYERS }, null, 1));
  symlinkSync(join(gemma, 'model.safetensors'), join(dir, 'text_encoder', 'model-00001-of-00002.safetensors'));
  const peerHeader = JSON.parse(readFileSync(join(gemma, 'manifest.json'), 'utf8')).tensors.map((t: { name: string }) => t.name) as string[];
  console.error('generating Gemma layers 6..25 (3.1 GB of bf16) ...');
  const extra = writeExtraLayers(join(dir, 'text_encoder', 'model-00002-of-00002.safetensors'), cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
  const weightMap: Record<string, string> = {};
  for (const n of peerHeader) weightMap[n] = 'model-00001-of-00002.safetensors';
  for (const n of extra) weightMap[n] = 'model-00002-of-00002.safetensors';
  writeFileSync(join(dir, 'text_encoder', 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
  return dir;
}

/** Seeded fp32 values ~ U(−scale, scale) (from the bf16 generator's bits: random weights). */
function f32Uniform(n: number, seed: number, scale: number): Float32Array {
  const h = bf16Uniform(n, seed, scale);
  return Float32Array.from(h, (w) => new Float32Array(new Uint32Array([w << 16]).buffer)[0]);
}

/** The Sprint-shaped folder (made once): the e2e folder's text encoder and DC-AE, the 600M transformer with
 * guidance_embeds and qk_norm (its weights from the peer file through a sharded index, the Sprint-only ones —
 * timestep and guidance embedders, q/k norms — generated into a second shard), an SCMScheduler. */
function assembleSprint(peerOut: string, e2e: string): string {
  const dir = join(peerOut, 'sana_sprint_1024_e2e');
  if (existsSync(join(dir, 'model_index.json'))) return dir;
  mkdirSync(join(dir, 'transformer'), { recursive: true });
  mkdirSync(join(dir, 'scheduler'), { recursive: true });
  for (const sub of ['text_encoder', 'vae', 'tokenizer']) symlinkSync(join(e2e, sub), join(dir, sub));
  const index = JSON.parse(readFileSync(join(e2e, 'model_index.json'), 'utf8'));
  writeFileSync(join(dir, 'model_index.json'), JSON.stringify({ ...index, _class_name: 'SanaSprintPipeline', scheduler: ['diffusers', 'SCMScheduler'] }));
  writeFileSync(join(dir, 'scheduler', 'scheduler_config.json'), JSON.stringify({ _class_name: 'SCMScheduler', num_train_timesteps: 1000, prediction_type: 'trigflow', sigma_data: 0.5 }));
  const cfg = JSON.parse(readFileSync(join(e2e, 'transformer', 'config.json'), 'utf8'));
  writeFileSync(join(dir, 'transformer', 'config.json'), JSON.stringify({ ...cfg, guidance_embeds: true, qk_norm: 'rms_norm_across_heads' }, null, 1));
  symlinkSync(join(e2e, 'transformer', 'diffusion_pytorch_model.safetensors'), join(dir, 'transformer', 'diffusion_pytorch_model-00001-of-00002.safetensors'));
  const peer = SafetensorsFile.open(join(e2e, 'transformer', 'diffusion_pytorch_model.safetensors'));
  const baseNames = [...peer.tensors.keys()];
  peer.close();
  const D = cfg.num_attention_heads * cfg.attention_head_dim;
  const Dx = cfg.num_cross_attention_heads * cfg.cross_attention_head_dim;
  const extra: { name: string; shape: number[]; data: Float32Array }[] = [];
  const add = (name: string, shape: number[], scale: number) => extra.push({ name, shape, data: f32Uniform(shape.reduce((a, b) => a * b, 1), 2000 + extra.length, scale) });
  for (const e of ['timestep_embedder', 'guidance_embedder']) {
    add(`time_embed.${e}.linear_1.weight`, [D, 256], 1 / 16);
    add(`time_embed.${e}.linear_1.bias`, [D], 0.02);
    add(`time_embed.${e}.linear_2.weight`, [D, D], 1 / Math.sqrt(D));
    add(`time_embed.${e}.linear_2.bias`, [D], 0.02);
  }
  for (let l = 0; l < cfg.num_layers; l++)
    for (const [a, n] of [['attn1', D], ['attn2', Dx]] as const) for (const q of ['norm_q', 'norm_k']) extra.push({ name: `transformer_blocks.${l}.${a}.${q}.weight`, shape: [n], data: new Float32Array(n).fill(1) });
  const header = safetensorsHeader(extra.map((t) => ({ name: t.name, dtype: 'F32' as const, shape: t.shape })));
  writeFileSync(join(dir, 'transformer', 'diffusion_pytorch_model-00002-of-00002.safetensors'), Buffer.concat([header, ...extra.map((t) => Buffer.from(t.data.buffer))]));
  const weightMap: Record<string, string> = {};
  for (const n of baseNames) if (!n.startsWith('time_embed.emb.')) weightMap[n] = 'diffusion_pytorch_model-00001-of-00002.safetensors';
  for (const t of extra) weightMap[t.name] = 'diffusion_pytorch_model-00002-of-00002.safetensors';
  writeFileSync(join(dir, 'transformer', 'diffusion_pytorch_model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
  return dir;
}

/** Peak RSS since the last reset (VmHWM), in MiB; reset() starts a new stage. */
const hwm = {
  read: () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024,
  reset: () => writeFileSync('/proc/self/clear_refs', '5'),
};

export interface WholeImageOptions {
  threads: number;
  precisions?: Precision[];
  /** Sprint beside SanaPipeline instead of the precisions */
  sprint?: boolean;
  backend?: 'cpu' | 'cuda';
}

export async function wholeImage(peerOut: string, materialise: (name: string) => string, opts: WholeImageOptions): Promise<void> {
  const { threads, precisions = ['bf16', 'fp32'], sprint = false, backend = 'cpu' } = opts;
  const e2e = assemble(peerOut, materialise);
  const runs: { dir: string; precision: Precision; steps: number; label: string }[] = sprint
    ? [{ dir: e2e, precision: 'bf16', steps: 20, label: 'SanaPipeline, 20 steps' }, { dir: assembleSprint(peerOut, e2e), precision: 'bf16', steps: 2, label: 'Sana-Sprint shape, 2 steps' }]
    : precisions.map((precision) => ({ dir: e2e, precision, steps: 20, label: '20 steps' }));
  for (const { dir, precision, steps, label } of runs) {
    hwm.reset();
    const t0 = performance.now();
    const pipe = await SanaPipelineCore.fromPretrained(dir, { backend, threads, precision });
    const peak: Record<string, number> = { load: hwm.read() };
    let phase = 'encode + step 1'; // the first step event comes after step 1
    const next = (name: string) => {
      peak[phase] = Math.round(hwm.read());
      hwm.reset();
      phase = name;
    };
    hwm.reset();
    const onProgress = (e: ProgressEvent) => {
      if (e.status === 'step' && e.step === 1) next(`steps 2..${steps}`);
      if (e.status === 'decode') next('decode');
    };
    try {
      const r = await pipe.generate('a red fox in the snow', { width: 1024, height: 1024, steps, seed: 1, onProgress, decode: 'auto' });
      next('end');
      const t = r.timings;
      console.log(JSON.stringify({
        bench: `whole 1024² image, ${label}, real sizes (Gemma-2-2B 26 layers + 600M + DC-AE f32c32, random weights)`, backend, precision, threads: pipe.backendInfo.transformer.threads,
        precisionOf: Object.fromEntries(Object.entries(pipe.precision).map(([k, v]) => [k, v.precision])),
        seconds: { load: +((performance.now() - t0 - t.totalMs) / 1000).toFixed(1), encode: +(t.encodeMs / 1000).toFixed(1), steps: +(t.stepMs.reduce((a, b) => a + b, 0) / 1000).toFixed(1), decode: +(t.decodeMs / 1000).toFixed(1), total: +(t.totalMs / 1000).toFixed(1) },
        peakRssMiB: peak, image: `${r.images[0].width}x${r.images[0].height}`,
      }));
    } finally {
      pipe.dispose();
    }
  }
}
