import { codebookRowDecoder, rotationSeed, unrotateRow } from './vq.js';

// Dequantize rows of a packed tensor on the CPU, driven only by the manifest's format table
// (bits, layout, level kind, table) and the tensor's matrix constants: the same rules as
// ulpq_build/formats.py and the WGSL templates, with no format special-cased here.

/** IEEE half (as a u16) to a JS number. */
export function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/**
 * A function decode(row, out) that writes row `row` of the tensor, dequantized, into the
 * Float32Array `out` (length k).
 */
export function rowDecoder(tensor, formats) {
  const { entry, parts } = tensor;
  const fmt = formats[entry.format];
  if (!fmt) throw new Error(`tensor ${entry.name}: format ${entry.format} is missing from the manifest`);
  const { k, words_per_row: wordsPerRow, groups_per_row: groupsPerRow, group_size: groupSize,
    codebook_stride: codebookStride } = entry.matrix;
  const codes = parts.codes.values;
  if (fmt.layout === 'raw') {
    return (row, out) => out.set(codes.subarray(row * k, row * k + k));
  }
  if (fmt.levels === 'codebook') return codebookRowDecoder(tensor, fmt); // rows as stored: still rotated
  const bits = fmt.bits;
  const mask = (1 << bits) - 1;
  const scaleValues = parts.scales.values;
  const scaleAt = entry.spec.scale_dtype === 'float16' ? (g) => halfToFloat(scaleValues[g]) : (g) => scaleValues[g];
  const zeros = parts.zeros?.values;
  const codebook = parts.codebook?.values;
  const table = Float32Array.from(fmt.table); // float32 levels, as numpy and WGSL hold them
  const level = {
    uniform: zeros ? (u, row, g) => u - zeros[g] : (u) => u - fmt.symmetric_zero,
    table: (u) => table[u],
    fitted: (u, row) => codebook[row * codebookStride + u],
  }[fmt.levels];
  const codeAt = fmt.layout === 'words'
    ? (base, i) => (codes[base + Math.floor(i / fmt.values_per_word)] >>> ((i % fmt.values_per_word) * bits)) & mask
    : (base, i) => {
      // continuous bit stream: the value may straddle into the next word
      const bit = i * bits;
      const w = base + (bit >>> 5);
      const off = bit & 31;
      let v = codes[w] >>> off;
      if (off + bits > 32) v |= codes[w + 1] << (32 - off);
      return v & mask;
    };
  return (row, out) => {
    const base = row * wordsPerRow;
    for (let i = 0; i < k; i++) {
      const g = row * groupsPerRow + Math.floor(i / groupSize);
      out[i] = scaleAt(g) * level(codeAt(base, i), row, g);
    }
  };
}

/** The whole tensor as a Float32Array (tests and small tensors such as biases), in its original basis. */
export function decodeTensor(tensor, formats) {
  const { rows, k } = tensor.entry.matrix;
  const out = new Float32Array(rows * k);
  const decode = rowDecoder(tensor, formats);
  const seed = rotationSeed(tensor); // a codebook format's rows are stored rotated: undone here
  for (let r = 0; r < rows; r++) {
    decode(r, out.subarray(r * k, (r + 1) * k));
    if (seed) unrotateRow(out.subarray(r * k, (r + 1) * k), k, seed);
  }
  return out;
}
