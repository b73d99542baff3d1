// Image-to-image on SanaPipeline (flow matching) and Sana-Sprint: strength 1 is text-to-image from the same
// noise, a small strength keeps the image, the built-in demo model turns a red circle blue when asked, the
// Sprint quirk warning, and bad inputs. Input images are real PNG/JPEG files written here.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { demoModelDir } from '../../ts/paths.js';
import { SanaPipelineCore, type ProgressEvent } from '../../ts/pipeline/pipeline-core.js';
import { golden, needs } from '../fixtures/shared.js';
import { tinySprintPipeline } from '../fixtures/tiny-pipeline.js';

const dir = mkdtempSync(join(tmpdir(), 'sana-img2img-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SIZE = 64;
/** RGB pixels of a white picture with a red disc in the middle. */
function redCircle(): Uint8Array {
  const rgb = new Uint8Array(SIZE * SIZE * 3).fill(255);
  for (let y = 0; y < SIZE; y++)
    for (let x = 0; x < SIZE; x++)
      if ((x - 31.5) ** 2 + (y - 31.5) ** 2 <= 15 ** 2) rgb.set([220, 20, 20], (y * SIZE + x) * 3);
  return rgb;
}
function inside(i: number): boolean {
  const p = Math.floor(i / 3);
  return ((p % SIZE) - 31.5) ** 2 + (Math.floor(p / SIZE) - 31.5) ** 2 <= 12 ** 2;
}
function writePng(file: string, rgb: Uint8Array): string {
  const png = new PNG({ width: SIZE, height: SIZE });
  for (let p = 0; p < SIZE * SIZE; p++) png.data.set([rgb[p * 3], rgb[p * 3 + 1], rgb[p * 3 + 2], 255], p * 4);
  writeFileSync(file, PNG.sync.write(png));
  return file;
}
const meanSquared = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, v, i) => s + (v - b[i]) ** 2, 0) / a.length;

describe('image-to-image on the built-in demo model (SanaPipeline)', () => {
  let pipe: SanaPipelineCore;
  const input = redCircle();
  let file = '';
  beforeAll(async () => {
    pipe = await SanaPipelineCore.fromPretrained(demoModelDir(), { backend: 'cpu' });
    file = writePng(join(dir, 'red-circle.png'), input);
  });
  afterAll(() => pipe?.dispose());
  const prompt = 'a blue circle on a white background';

  it('strength 1 is text-to-image from the same noise, bit for bit', async () => {
    const t2i = await pipe.generate(prompt, { seed: 11, outputType: 'latent' });
    const i2i = await pipe.generate(prompt, { seed: 11, outputType: 'latent', image: file, strength: 1 });
    expect(i2i.tensor!.data).toEqual(t2i.tensor!.data);
  });

  it('a small strength keeps the picture: closer to it than text-to-image, and the disc stays red', async () => {
    const kept = await pipe.generate(prompt, { seed: 12, image: file, strength: 0.2 });
    const t2i = await pipe.generate(prompt, { seed: 12 });
    const out = kept.images[0].data;
    // measured: 2178 against 8003 (the tiny demo VAE's own reconstruction error is most of the 2178)
    expect(meanSquared(out, input)).toBeLessThan(meanSquared(t2i.images[0].data, input) / 2);
    let red = 0;
    let n = 0;
    for (let i = 0; i < out.length; i += 3) if (inside(i)) (n++, out[i] > out[i + 2] + 60 && red++);
    expect(red / n).toBeGreaterThan(0.9);
  });

  it('asked for a blue circle, strength 0.8 turns the red disc blue (pass mark: 2 of 3 seeds) and keeps the white background', async () => {
    const events: ProgressEvent[] = [];
    let passed = 0;
    for (const seed of [1, 2, 3]) {
      const out = (await pipe.generate(prompt, { seed, image: file, strength: 0.8, onProgress: (e) => events.push(e) })).images[0].data;
      let blue = 0;
      let n = 0;
      let white = 0;
      let m = 0;
      for (let i = 0; i < out.length; i += 3) {
        if (inside(i)) (n++, out[i + 2] > out[i] + 60 && blue++);
        else if (((Math.floor(i / 3) % SIZE) - 31.5) ** 2 + (Math.floor(i / 3 / SIZE) - 31.5) ** 2 > 20 ** 2) (m++, Math.min(out[i], out[i + 1], out[i + 2]) > 180 && white++);
      }
      if (blue / n > 0.6 && white / m > 0.8) passed++;
    }
    expect(passed).toBeGreaterThanOrEqual(2);
    // 20 steps at strength 0.8: the first 4 are skipped
    expect(events.filter((e) => e.status === 'step').map((e) => (e as { totalSteps: number }).totalSteps)).toEqual(new Array(48).fill(16));
  });

  it('JPEG files and raw pixels work; bad inputs are named errors', async () => {
    const jpg = join(dir, 'red-circle.jpg');
    const rgba = new Uint8Array(SIZE * SIZE * 4);
    for (let p = 0; p < SIZE * SIZE; p++) rgba.set([input[p * 3], input[p * 3 + 1], input[p * 3 + 2], 255], p * 4);
    writeFileSync(jpg, jpeg.encode({ width: SIZE, height: SIZE, data: rgba }, 95).data);
    const fromJpeg = await pipe.generate(prompt, { seed: 4, image: jpg, strength: 0.3 });
    const fromPixels = await pipe.generate(prompt, { seed: 4, image: { width: SIZE, height: SIZE, data: input }, strength: 0.3 });
    expect(meanSquared(fromJpeg.images[0].data, fromPixels.images[0].data)).toBeLessThan(100); // JPEG is lossy
    const bad = (o: object, message: RegExp) => expect(pipe.generate(prompt, { seed: 1, ...o })).rejects.toMatchObject({ code: 'ERR_SANA_INVALID_OPTION', message: expect.stringMatching(message) });
    await bad({ image: file, strength: 0 }, /Expected a number in \(0, 1\] for strength but received 0/);
    await bad({ image: file, strength: 1.5 }, /for strength but received 1\.5/);
    await bad({ image: file, strength: Number.NaN }, /for strength/);
    await bad({ strength: 0.5 }, /Expected an image with strength/);
    await bad({ image: join(dir, 'missing.png') }, /image: cannot read .*missing\.png/);
    writeFileSync(join(dir, 'notes.txt'), 'not a picture');
    await bad({ image: join(dir, 'notes.txt') }, /notes\.txt is neither a PNG nor a JPEG file/);
    writeFileSync(join(dir, 'broken.png'), Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(20)]));
    await bad({ image: join(dir, 'broken.png') }, /broken\.png is not a readable PNG file/);
    await bad({ image: { width: SIZE, height: SIZE, data: new Uint8Array(10) } }, /Expected 12288 \(RGB\) or 16384 \(RGBA\) bytes of data for 64x64/);
    await bad({ image: file, latents: new Float32Array(32 * 4 * 4) }, /no latents with an image/);
  });
});

describe.skipIf(!golden.present)(needs(golden, 'image-to-image on Sana-Sprint'), () => {
  let pipe: SanaPipelineCore;
  let file = '';
  beforeAll(async () => {
    pipe = await SanaPipelineCore.fromPretrained(tinySprintPipeline(join(dir, 'sprint')), { backend: 'cpu' });
    file = writePng(join(dir, 'sprint-in.png'), redCircle());
  });
  afterAll(() => pipe?.dispose());

  it('2 steps: strength above 0.5 starts at π/2 and warns that the image is ignored; 0.5 starts at the middle step', async () => {
    const opts = { seed: 3, width: 32, height: 32, useResolutionBinning: false, image: file } as const;
    const warned: string[] = [];
    const steps: number[] = [];
    const record = (e: ProgressEvent) => (e.status === 'warning' ? warned.push(e.message) : e.status === 'step' && steps.push(e.totalSteps));
    await pipe.generate('a red cube', { ...opts, strength: 0.6, onProgress: record });
    expect(warned).toEqual([expect.stringMatching(/strength 0\.6 keeps all 2 steps, so sampling starts at t = 1\.5708 \(π\/2\).*ignores the image/)]);
    expect(steps).toEqual([2, 2]);
    warned.length = steps.length = 0;
    const half = await pipe.generate('a red cube', { ...opts, strength: 0.5, outputType: 'latent', onProgress: record });
    expect(warned).toEqual([]);
    expect(steps).toEqual([1]);
    // the image matters from the middle step on: another picture gives other latents
    const other = await pipe.generate('a red cube', { ...opts, strength: 0.5, outputType: 'latent', image: { width: 8, height: 8, data: new Uint8Array(8 * 8 * 3).fill(30) } });
    expect(other.tensor!.data).not.toEqual(half.tensor!.data);
  });
});
