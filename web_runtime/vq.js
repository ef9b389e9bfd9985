// Vector-quantized (codebook) formats on the CPU path, driven by the manifest's format row
// (stages: bits per code, decode kind, table offset; resid_scale) and the bundle's codebook tables
// (the tensor's `codebook` part, shared by every such tensor): ulpq_build/formats.py states the
// layout, ulpq_build/vq/ the maths, templates/_weights.wgsl.jinja and hadamard.wgsl.jinja the same
// decode and rotation for WebGPU.

import { halfToFloat } from './decode.js';

// Paley's Hadamard matrix of order 12: bit j of row r set where H[r, j] = -1 (incoherence.paley_hadamard_12)
const PALEY_NEGATIVE = [0, 2953, 1811, 3621, 3147, 2199, 303, 605, 1209, 2417, 739, 1477];
const INV_SQRT12 = 1 / Math.sqrt(12);

/** D's entry i for `seed`: -1 where the top bit of lowbias32(seed + i * 0x9E3779B9) is set. */
export function rotationSign(seed, i) {
  let h = (seed + Math.imul(i, 0x9e3779b9)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d) >>> 0;
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b) >>> 0;
  h ^= h >>> 16;
  return h >>> 31 ? -1 : 1;
}

/** n = b * p with p the power-of-two part; b is 1 or 12 for the rotations a bundle holds. */
export function splitSize(n) {
  let p = n & -n;
  let b = n / p;
  if (b === 3 && p >= 4) { b = 12; p /= 4; }
  if (b !== 1 && b !== 12) throw new Error(`no Hadamard rotation of ${n} values (n must be 2^m or 12 * 2^m)`);
  return { b, p };
}

/** In place on v (length b * p): the Paley block (transposed for the inverse) over the [12, p] view. */
function mixBlock(v, p, transpose) {
  const col = new Float64Array(12);
  for (let c = 0; c < p; c++) {
    for (let j = 0; j < 12; j++) col[j] = v[j * p + c];
    for (let r = 0; r < 12; r++) {
      let acc = 0;
      for (let j = 0; j < 12; j++) {
        const negative = transpose ? (PALEY_NEGATIVE[j] >> r) & 1 : (PALEY_NEGATIVE[r] >> j) & 1;
        acc += negative ? -col[j] : col[j];
      }
      v[r * p + c] = acc * INV_SQRT12;
    }
  }
}

/** In place: the Walsh-Hadamard transform (Sylvester order) of each length-p segment, times 1/sqrt(p). */
function fwht(v, p) {
  for (let h = 1; h < p; h *= 2) {
    // segments are p long and p a multiple of 2h: no butterfly crosses from one into the next
    for (let s = 0; s < v.length; s += 2 * h) {
      for (let i = s; i < s + h; i++) {
        const a = v[i];
        const c = v[i + h];
        v[i] = a + c;
        v[i + h] = a - c;
      }
    }
  }
  const scale = 1 / Math.sqrt(p);
  for (let i = 0; i < v.length; i++) v[i] *= scale;
}

/** R x for every row of x [rows, n] (R = (B kron H_p / sqrt p) D from `seed`): a new Float32Array. */
export function rotateRows(x, rows, n, seed) {
  const { b, p } = splitSize(n);
  const signs = Float64Array.from({ length: n }, (_, i) => rotationSign(seed, i));
  const y = new Float32Array(rows * n);
  const v = new Float64Array(n);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < n; i++) v[i] = x[r * n + i] * signs[i];
    if (b === 12) mixBlock(v, p, false);
    fwht(v, p);
    y.set(v, r * n);
  }
  return y;
}

/** R^T y for one row, in place (a table's row stored rotated, back to its original basis). */
export function unrotateRow(row, n, seed) {
  const { b, p } = splitSize(n);
  const v = Float64Array.from(row);
  fwht(v, p);
  if (b === 12) mixBlock(v, p, true);
  for (let i = 0; i < n; i++) row[i] = v[i] * rotationSign(seed, i);
}

/** A tensor's input-rotation seed (0: not rotated). */
export function rotationSeed(tensor) {
  return tensor.parts.seeds ? tensor.parts.seeds.values[0] : 0;
}

/**
 * decode(row, out): row `row` of a codebook-format tensor as stored (still rotated), float32 as
 * numpy's CodedMatrix.dequantize computes it: each stage's codeword divided by its float32
 * magnification, summed in float32, times the row's float16 scale.
 */
export function codebookRowDecoder(tensor, fmt) {
  const { entry, parts } = tensor;
  if (!parts.codebook) throw new Error(`tensor ${entry.name}: format ${fmt.name} needs the bundle's codebook tables`);
  const tables = parts.codebook.values;
  const codes = parts.codes.values;
  const scales = parts.scales.values;
  const { k, words_per_row: wpr, groups_per_row: gpr } = entry.matrix;
  const groups = k / fmt.group_dim;
  const stages = [];
  let word = 0;
  let magnify = 1;
  for (const st of fmt.stages) {
    stages.push({ ...st, word, perWord: 32 / st.bits, mask: st.bits === 32 ? 0xffffffff : (1 << st.bits) - 1, magnify });
    word += Math.ceil((groups * st.bits) / 32);
    magnify = Math.fround(magnify * Math.fround(fmt.resid_scale));
  }
  const v = new Float32Array(8);
  return (row, out) => {
    const scale = halfToFloat(scales[row * gpr]);
    const base = row * wpr;
    for (let g = 0; g < groups; g++) {
      stages.forEach((st, s) => {
        const c = (codes[base + st.word + Math.floor(g / st.perWord)] >>> ((g % st.perWord) * st.bits)) & st.mask;
        for (let i = 0; i < 8; i++) {
          let value;
          if (st.decode === 'e8p') {
            const a = tables[st.offset + (c >>> 8)];
            const signs = (c >>> 1) & 127;
            let negative = (signs >>> i) & 1;
            if (i === 7) negative = (popcount(signs) + (a >>> 16)) & 1;
            const magnitude = ((a >>> (2 * i)) & 3) + 0.5;
            value = (negative ? -magnitude : magnitude) + (c & 1 ? -0.25 : 0.25);
          } else if (st.decode === 'lut8') {
            value = ((tables[st.offset + c] >>> (4 * i)) & 15) * 0.5 - 2;
          } else {
            throw new Error(`format ${fmt.name}: stage decode '${st.decode}' is unknown to this runtime`);
          }
          v[i] = s === 0 ? value : Math.fround(v[i] + Math.fround(value / st.magnify));
        }
      });
      for (let i = 0; i < 8; i++) out[g * 8 + i] = Math.fround(v[i] * scale);
    }
  };
}

function popcount(x) {
  let n = 0;
  for (; x; x &= x - 1) n++;
  return n;
}
