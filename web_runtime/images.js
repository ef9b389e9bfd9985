// Image preprocessing for ViT bundles: RGBA (ImageData or {width, height, data}) to the model's
// normalised NCHW floats, as ulpq_build/reference.py's vit_preprocess does (bilinear resize first
// when the size differs; grey-scale models take the luma of RGB).

import { checkImages } from './inputs.js';

function bilinear(src, width, height, size) {
  if (width === size && height === size) return src;
  const out = new Float32Array(size * size * 4);
  const sx = width / size;
  const sy = height / size;
  for (let y = 0; y < size; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), height - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, height - 1);
    const wy = fy - y0;
    for (let x = 0; x < size; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), width - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, width - 1);
      const wx = fx - x0;
      for (let c = 0; c < 4; c++) {
        const at = (yy, xx) => src[(yy * width + xx) * 4 + c];
        out[(y * size + x) * 4 + c] = (at(y0, x0) * (1 - wx) + at(y0, x1) * wx) * (1 - wy) + (at(y1, x0) * (1 - wx) + at(y1, x1) * wx) * wy;
      }
    }
  }
  return out;
}

/** Images -> {data: Float32Array [batch, channels, size, size], batch}. */
export function preprocessImages(images, spec) {
  checkImages(images);
  const size = spec.image_size;
  const channels = spec.channels;
  const data = new Float32Array(images.length * channels * size * size);
  images.forEach((image, b) => {
    const { width, height } = image;
    const rgba = bilinear(image.data, width, height, size);
    for (let p = 0; p < size * size; p++) {
      const r = rgba[p * 4];
      const g = rgba[p * 4 + 1];
      const bl = rgba[p * 4 + 2];
      const values = channels === 1 ? [0.299 * r + 0.587 * g + 0.114 * bl] : [r, g, bl];
      for (let c = 0; c < channels; c++) {
        data[(b * channels + c) * size * size + p] = (values[c] * spec.rescale - spec.mean[c]) / spec.std[c];
      }
    }
  });
  return { data, batch: images.length };
}

/** A grey-scale sample of the bundle ({width, height, grey_base64}) as RGBA {width, height, data}. */
export function sampleToImage(sample) {
  const grey = Uint8Array.from(atob(sample.grey_base64), (c) => c.charCodeAt(0));
  const data = new Uint8ClampedArray(grey.length * 4);
  grey.forEach((v, i) => { data.set([v, v, v, 255], i * 4); });
  return { width: sample.width, height: sample.height, data };
}
