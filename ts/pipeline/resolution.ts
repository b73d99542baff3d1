/**
 * Resolution binning as SanaPipeline does it: the table is chosen by the transformer's sample_size, the
 * requested height/width ratio snaps to the nearest key (first key wins ties, compared in float64), and the
 * image is generated at the bin's size, then resized and centre-cropped back (postprocess.ts).
 * Tables: ../shared/design/sana-spec.md Appendix A (key = height/width → height × width in pixels).
 */
import { SanaError } from '../errors.js';

const TABLES: Record<string, string> = {
  ASPECT_RATIO_512_BIN:
    '0.25:256x1024 0.28:256x928 0.32:288x896 0.33:288x864 0.35:288x832 0.4:320x800 0.42:320x768 0.48:352x736 0.5:352x704 0.52:352x672 0.57:384x672 0.6:384x640 0.68:416x608 0.72:416x576 0.78:448x576 0.82:448x544 0.88:480x544 0.94:480x512 1.0:512x512 1.07:512x480 1.13:544x480 1.21:544x448 1.29:576x448 1.38:576x416 1.46:608x416 1.67:640x384 1.75:672x384 2.0:704x352 2.09:736x352 2.4:768x320 2.5:800x320 3.0:864x288 4.0:1024x256',
  ASPECT_RATIO_1024_BIN:
    '0.25:512x2048 0.28:512x1856 0.32:576x1792 0.33:576x1728 0.35:576x1664 0.4:640x1600 0.42:640x1536 0.48:704x1472 0.5:704x1408 0.52:704x1344 0.57:768x1344 0.6:768x1280 0.68:832x1216 0.72:832x1152 0.78:896x1152 0.82:896x1088 0.88:960x1088 0.94:960x1024 1.0:1024x1024 1.07:1024x960 1.13:1088x960 1.21:1088x896 1.29:1152x896 1.38:1152x832 1.46:1216x832 1.67:1280x768 1.75:1344x768 2.0:1408x704 2.09:1472x704 2.4:1536x640 2.5:1600x640 3.0:1728x576 4.0:2048x512',
  ASPECT_RATIO_2048_BIN:
    '0.25:1024x4096 0.26:1024x3968 0.27:1024x3840 0.28:1024x3712 0.32:1152x3584 0.33:1152x3456 0.35:1152x3328 0.4:1280x3200 0.42:1280x3072 0.48:1408x2944 0.5:1408x2816 0.52:1408x2688 0.57:1536x2688 0.6:1536x2560 0.68:1664x2432 0.72:1664x2304 0.78:1792x2304 0.82:1792x2176 0.88:1920x2176 0.94:1920x2048 1.0:2048x2048 1.07:2048x1920 1.13:2176x1920 1.21:2176x1792 1.29:2304x1792 1.38:2304x1664 1.46:2432x1664 1.67:2560x1536 1.75:2688x1536 2.0:2816x1408 2.09:2944x1408 2.4:3072x1280 2.5:3200x1280 2.89:3328x1152 3.0:3456x1152 3.11:3584x1152 3.62:3712x1024 3.75:3840x1024 3.88:3968x1024 4.0:4096x1024',
  ASPECT_RATIO_4096_BIN:
    '0.25:2048x8192 0.26:2048x7936 0.27:2048x7680 0.28:2048x7424 0.32:2304x7168 0.33:2304x6912 0.35:2304x6656 0.4:2560x6400 0.42:2560x6144 0.48:2816x5888 0.5:2816x5632 0.52:2816x5376 0.57:3072x5376 0.6:3072x5120 0.68:3328x4864 0.72:3328x4608 0.78:3584x4608 0.82:3584x4352 0.88:3840x4352 0.94:3840x4096 1.0:4096x4096 1.07:4096x3840 1.13:4352x3840 1.21:4352x3584 1.29:4608x3584 1.38:4608x3328 1.46:4864x3328 1.67:5120x3072 1.75:5376x3072 2.0:5632x2816 2.09:5888x2816 2.4:6144x2560 2.5:6400x2560 2.89:6656x2304 3.0:6912x2304 3.11:7168x2304 3.62:7424x2048 3.75:7680x2048 3.88:7936x2048 4.0:8192x2048',
};

export interface AspectBin {
  ratio: number;
  height: number;
  width: number;
}

function parse(table: string): AspectBin[] {
  return table.split(' ').map((e) => {
    const [key, hw] = e.split(':');
    const [height, width] = hw.split('x').map(Number);
    return { ratio: Number(key), height, width };
  });
}

const BY_SAMPLE_SIZE: Record<number, string> = { 16: 'ASPECT_RATIO_512_BIN', 32: 'ASPECT_RATIO_1024_BIN', 64: 'ASPECT_RATIO_2048_BIN', 128: 'ASPECT_RATIO_4096_BIN' };

/** Whether SanaPipeline has a bin table for a transformer of this sample_size. */
export function hasAspectRatioBins(sampleSize: number): boolean {
  return sampleSize in BY_SAMPLE_SIZE;
}

/** The bin table SanaPipeline uses for a transformer of this sample_size. */
export function aspectRatioBins(sampleSize: number): { name: string; bins: AspectBin[] } {
  const name = BY_SAMPLE_SIZE[sampleSize];
  if (!name) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected a transformer sample_size of 16, 32, 64 or 128 for resolution binning but received ${sampleSize}`);
  return { name, bins: parse(TABLES[name]) };
}

/** The bin nearest to height/width (ties: the first in table order). */
export function classifyHeightWidthBin(height: number, width: number, bins: AspectBin[]): AspectBin {
  const ar = height / width;
  let best = bins[0];
  for (const b of bins) if (Math.abs(b.ratio - ar) < Math.abs(best.ratio - ar)) best = b;
  return best;
}
