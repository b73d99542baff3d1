/**
 * Input images for image-to-image: a PNG or JPEG file (decoded by pngjs / jpeg-js), its bytes, or raw RGB(A)
 * pixels; converted to the VAE's input, NCHW in [−1, 1], resized and centre-cropped to cover the target size
 * (the bilinear resize-and-crop that post-processing uses; diffusers resizes with PIL, so pixels differ slightly).
 */
import { readFileSync } from 'node:fs';

import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';

import { describeValue, SanaError } from '../errors.js';
import { resizeAndCrop } from './postprocess.js';

/** A file path, the bytes of a PNG/JPEG file, or pixels: `data` holds width·height·channels bytes (3: RGB, 4: RGBA). */
export type ImageInput = string | Uint8Array | { width: number; height: number; data: Uint8Array | Uint8ClampedArray };

const MAX_PIXELS = 8192 * 8192;

function bad(what: string, value: unknown): SanaError {
  return new SanaError('ERR_SANA_INVALID_OPTION', `Expected ${what} for image but received ${describeValue(value)}`);
}

/** Decoded pixels as RGB bytes. */
export function decodeImage(input: ImageInput): { width: number; height: number; rgb: Uint8Array } {
  if (typeof input === 'string' || input instanceof Uint8Array) {
    let bytes: Uint8Array;
    const name = typeof input === 'string' ? input : 'the image bytes';
    if (typeof input === 'string') {
      try {
        bytes = readFileSync(input);
      } catch (e) {
        throw new SanaError('ERR_SANA_INVALID_OPTION', `image: cannot read ${input}: ${(e as Error).message}`, { cause: e });
      }
    } else bytes = input;
    const png = bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47;
    const jpg = bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
    if (!png && !jpg) throw new SanaError('ERR_SANA_INVALID_OPTION', `image: ${name} is neither a PNG nor a JPEG file`);
    let rgba: { width: number; height: number; data: Uint8Array };
    try {
      rgba = png ? PNG.sync.read(Buffer.from(bytes)) : jpeg.decode(bytes, { useTArray: true, maxResolutionInMP: MAX_PIXELS / 1e6, formatAsRGBA: true });
    } catch (e) {
      throw new SanaError('ERR_SANA_INVALID_OPTION', `image: ${name} is not a readable ${png ? 'PNG' : 'JPEG'} file: ${(e as Error).message}`, { cause: e });
    }
    return toRgb(rgba.width, rgba.height, rgba.data, 4);
  }
  if (typeof input !== 'object' || input === null || !(input.data instanceof Uint8Array || input.data instanceof Uint8ClampedArray))
    throw bad('a file path, PNG/JPEG bytes or { width, height, data }', input);
  const { width, height, data } = input;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1 || width * height > MAX_PIXELS)
    throw bad(`a width and height of 1 to ${Math.sqrt(MAX_PIXELS)} pixels`, `${width}x${height}`);
  const channels = data.length / (width * height);
  if (channels !== 3 && channels !== 4) throw bad(`${width * height * 3} (RGB) or ${width * height * 4} (RGBA) bytes of data for ${width}x${height}`, `${data.length} bytes`);
  return toRgb(width, height, data, channels);
}

function toRgb(width: number, height: number, data: ArrayLike<number>, channels: number): { width: number; height: number; rgb: Uint8Array } {
  if (width * height > MAX_PIXELS) throw bad(`at most ${MAX_PIXELS} pixels`, `${width}x${height}`);
  const rgb = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) for (let c = 0; c < 3; c++) rgb[p * 3 + c] = data[p * channels + c];
  return { width, height, rgb };
}

/** The VAE input [1, 3, height, width] in [−1, 1] (x/255·2 − 1, as VaeImageProcessor normalises). */
export function imageToVaeInput(input: ImageInput, height: number, width: number): Float32Array {
  const img = decodeImage(input);
  const n = img.width * img.height;
  const x = new Float32Array(3 * n);
  for (let p = 0; p < n; p++) for (let c = 0; c < 3; c++) x[c * n + p] = Math.fround(Math.fround(img.rgb[p * 3 + c] / 255) * 2 - 1);
  return resizeAndCrop(x, [1, 3, img.height, img.width], height, width);
}
