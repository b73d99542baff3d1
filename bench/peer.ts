// The peer cases of ../shared/peer (SANA_PEER_DIR) as benches read them: weights generated once by their
// make-weights.mjs into .peer/ (git-ignored), the stored inputs as our calls take them, the torch outputs.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { SafetensorsFile } from '../ts/io/safetensors.js';
import type { TransformerInput } from '../ts/models/sana-transformer.js';
import { packageRoot } from '../ts/paths.js';

export const peerSrc = process.env.SANA_PEER_DIR ?? join(packageRoot(), '..', 'shared', 'peer');
export const peerOut = join(packageRoot(), '.peer');

/** The folder of peer case `name` with its weights (generated on first use). */
export function materialise(name: string): string {
  const dir = join(peerOut, name);
  if (!existsSync(join(dir, name.startsWith('gemma') ? 'model.safetensors' : 'diffusion_pytorch_model.safetensors'))) {
    console.error(`generating ${name} weights into ${dir} ...`);
    execFileSync(process.execPath, [join(peerSrc, 'make-weights.mjs'), join(peerSrc, name), dir], { stdio: 'inherit' });
  }
  return dir;
}

type Stored = { data: Float32Array | BigInt64Array; shape: number[] };

/** A transformer case's inputs as SanaTransformer2DModel.forward takes them, and as stored (for ORT feeds). */
export function transformerInput(dir: string): { input: TransformerInput; tensors: Record<string, Stored> } {
  const f = SafetensorsFile.open(join(dir, 'inputs.safetensors'));
  const names = ['hidden_states', 'encoder_hidden_states', 'encoder_attention_mask', 'timestep'];
  const tensors: Record<string, Stored> = {};
  for (const k of names) {
    const t = f.read(k);
    tensors[k] = { data: t.data as Float32Array | BigInt64Array, shape: t.info.shape };
  }
  f.close();
  const [hs, ehs, mask, t] = names.map((k) => tensors[k]);
  const input: TransformerInput = {
    hiddenStates: hs.data as Float32Array,
    shape: hs.shape as [number, number, number, number],
    encoderHiddenStates: ehs.data as Float32Array,
    textLength: ehs.shape[1],
    encoderAttentionMask: Array.from(mask.data as BigInt64Array, Number),
    timestep: t.data as Float32Array,
  };
  return { input, tensors };
}

/** A decoder case's latent. */
export function decoderInput(dir: string): { z: Float32Array; shape: [number, number, number, number] } {
  const f = SafetensorsFile.open(join(dir, 'inputs.safetensors'));
  const z = f.read('latent');
  f.close();
  return { z: z.data as Float32Array, shape: z.info.shape as [number, number, number, number] };
}

/** The torch output of a transformer or decoder case. */
export function readOutput(dir: string): Float32Array {
  const out = SafetensorsFile.open(join(dir, 'outputs.safetensors'));
  const expected = out.read('output').data as Float32Array;
  out.close();
  return expected;
}
