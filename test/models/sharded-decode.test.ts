// Exact sharded DC-AE decoding (ts/models/dcae-sharded.ts) against the untiled decode, on random-weight decoders
// of several configs, latent sizes and shard grids — down to one latent pixel per shard, so every shard edge
// cuts through every stage's receptive field — on every available backend.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import type { Backend } from '../../ts/backends/backend.js';
import { createBackend, probeBackends } from '../../ts/backends/registry.js';
import type { JsonValue } from '../../ts/io/json.js';
import { AutoencoderDC } from '../../ts/models/autoencoder-dc.js';
import { runShardTask, shardedDecode, type ShardOptions } from '../../ts/models/dcae-sharded.js';
import { golden, needs, reportSkipped } from '../fixtures/shared.js';
import { maxRelDiff, randomDcae, randomLatents } from '../fixtures/random-dcae.js';
import { demoModelDir } from '../../ts/paths.js';

const root = mkdtempSync(join(tmpdir(), 'sana-sharded-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** EfficientViT at the two highest resolutions (3×3 aggregation) and the lowest, pixel-shuffle up-sampling. */
const MIXED: Record<string, JsonValue> = {
  in_channels: 3, latent_channels: 8, attention_head_dim: 4,
  decoder_block_types: ['EfficientViTBlock', 'EfficientViTBlock', 'ResBlock', 'EfficientViTBlock'],
  decoder_block_out_channels: [8, 8, 16, 16], decoder_layers_per_block: [1, 2, 1, 1],
  decoder_qkv_multiscales: [[3], [3], [], [5]], upsample_block_type: 'pixel_shuffle',
  encoder_block_types: 'ResBlock', encoder_block_out_channels: [8, 8, 16, 16], encoder_layers_per_block: [1, 1, 1, 1],
  encoder_qkv_multiscales: [[], [], [], []],
};

const GOLDEN_DECODER = 'golden dcae_tiny (f8, EfficientViT ×2 stages)';
const DECODERS: { name: string; dir: () => string }[] = [
  ...(golden.present ? [{ name: GOLDEN_DECODER, dir: () => join(golden.dir, 'dcae_tiny') }] : []),
  { name: 'random mixed (f8, EfficientViT at full resolution, pixel-shuffle)', dir: () => randomDcae(join(root, 'mixed'), MIXED, 7) },
  { name: 'demo model VAE (f16)', dir: () => join(demoModelDir(), 'vae') },
];

const backends: Backend[] = [];
for (const p of probeBackends()) if (p.available && p.name !== 'cuda') backends.push(await createBackend(p.name));

async function decodeSharded(vae: AutoencoderDC, z: Float32Array, shape: [number, number, number, number], opts: ShardOptions) {
  const passes: number[] = [];
  const out = await shardedDecode(vae.config, z, shape, async (tasks, pass) => {
    passes.push(tasks.length);
    expect(pass.index).toBe(passes.length - 1);
    return tasks.map((t) => runShardTask(vae, t));
  }, opts);
  return { out, passes };
}

describe.each(backends.map((b) => [b.name, b] as const))('sharded decode on %s', (_, be) => {
  describe.each(DECODERS)('$name', ({ dir }) => {
    let vae: AutoencoderDC;
    it.each([
      { h: 5, w: 7, grid: [2, 3] as [number, number] },
      { h: 6, w: 6, grid: [6, 6] as [number, number] }, // one latent pixel per shard
      { h: 3, w: 9, grid: [3, 4] as [number, number] },
      { h: 4, w: 5, grid: [1, 1] as [number, number] },
    ])('latent $h×$w, grid $grid equals the untiled decode', async ({ h, w, grid }) => {
      vae ??= AutoencoderDC.fromFolder(dir(), be);
      const C = vae.config.latentChannels;
      const shape: [number, number, number, number] = [2, C, h, w];
      const z = randomLatents(2 * C * h * w, h * 100 + w);
      const full = vae.decode(z, shape);
      const { out, passes } = await decodeSharded(vae, z, shape, { grid });
      expect(out.length).toBe(full.length);
      expect(maxRelDiff(out, full)).toBeLessThan(2e-5);
      expect(Math.max(...passes)).toBe(Math.min(grid[0], h) * Math.min(grid[1], w));
    });
  });
});

reportSkipped(golden, `sharded decode of ${GOLDEN_DECODER}`);

describe('sharded decode: bad input', () => {
  it.skipIf(!golden.present)(needs(golden, 'a non-finite result gives ERR_SANA_NON_FINITE, never a NaN image; wrong shapes and grids are named'), async () => {
    const be = backends[0];
    const vae = AutoencoderDC.fromFolder(join(golden.dir, 'dcae_tiny'), be);
    const run = (z: Float32Array, shape: [number, number, number, number]) => shardedDecode(vae.config, z, shape, async (tasks) => tasks.map((t) => runShardTask(vae, t)), { grid: [2, 2] });
    const z = randomLatents(16 * 4 * 4, 1);
    // a shard of the last pass that comes back with a NaN (as a faulty device would give it)
    const poisoned = shardedDecode(vae.config, z, [1, 16, 4, 4], async (tasks, pass) => tasks.map((t) => {
      const r = runShardTask(vae, t);
      if (pass.index === pass.count - 1 && t.kind === 'local') new Float32Array(t.output.buffer, 4 * t.output.offset, 1)[0] = NaN;
      return r;
    }), { grid: [2, 2] });
    await expect(poisoned).rejects.toMatchObject({ code: 'ERR_SANA_NON_FINITE' });
    await expect(run(z, [1, 8, 4, 4])).rejects.toMatchObject({ code: 'ERR_SANA_INVALID_ARGUMENT', message: expect.stringMatching(/Expected latents \[B, 16, h, w\]/) });
    await expect(run(randomLatents(256, 2), [1, 16, 4, 4], )).resolves.toHaveLength(3 * 32 * 32);
    await expect(shardedDecode(vae.config, randomLatents(256, 2), [1, 16, 4, 4], async (tasks) => tasks.map((t) => runShardTask(vae, t)), { grid: [0, 2] }))
      .rejects.toMatchObject({ code: 'ERR_SANA_INVALID_OPTION' });
    vae.dispose();
  });
});
