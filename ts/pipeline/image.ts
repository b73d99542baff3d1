/** Generated images: 8-bit RGB pixels, row-major, and PNG encoding through pngjs. */
import { PNG } from 'pngjs';

export class GeneratedImage {
  constructor(
    readonly width: number,
    readonly height: number,
    /** RGB, row-major, width·height·3 bytes */
    readonly data: Uint8ClampedArray,
  ) {}

  /** Encodes the image as an RGB PNG file. */
  async toPNG(): Promise<Buffer> {
    const png = new PNG({ width: this.width, height: this.height, colorType: 2, inputColorType: 2, inputHasAlpha: false });
    png.data = Buffer.from(this.data.buffer, this.data.byteOffset, this.data.byteLength);
    return PNG.sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false });
  }
}
