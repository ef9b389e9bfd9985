// The CPU path's operators, in plain JS over Float32Arrays. Matrices are decoded one row at a
// time from the packed weights, so the CPU path needs no dequantized copy of the model.

import { halfToFloat, rowDecoder } from './decode.js';
import { rotateRows, rotationSeed, unrotateRow } from './vq.js';

// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), the same approximation as the shaders.
export function erf(v) {
  const a = Math.abs(v);
  const t = 1 / (1 + 0.3275911 * a);
  const poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t;
  return Math.sign(v) * (1 - poly * Math.exp(-a * a));
}

export const ACTIVATIONS = {
  none: (v) => v,
  gelu: (v) => 0.5 * v * (1 + erf(v * Math.SQRT1_2)),
  gelu_tanh: (v) => 0.5 * v * (1 + Math.tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))), // GPT-2's gelu_new
};

/**
 * For one row of x (a decode step's GEMV), a function dot(row, x) = x . W[row] that reads the packed
 * row as it lies, each weight dequantized exactly as rowDecoder writes it (float32-rounded
 * scale * level) and multiplied in at once: no decoded copy of the row (the per-row decode into a
 * buffer cost int8 and int4 eight times float32's time here). Raw float32 rows and whole-word
 * uniform codes (int8/4/3/2/1 words); null for the others (tables, fitted levels, bit streams),
 * which decode a row first.
 */
export function rowDot(weight, formats) {
  const { entry, parts } = weight;
  const fmt = formats[entry.format];
  const { k, words_per_row: wpr, groups_per_row: gpr, group_size: gsize } = entry.matrix;
  const codes = parts.codes.values;
  if (fmt.layout === 'raw') {
    return (row, x) => {
      let acc = 0;
      const o = row * k;
      for (let i = 0; i < k; i++) acc += x[i] * codes[o + i];
      return acc;
    };
  }
  if (fmt.layout !== 'words' || fmt.levels !== 'uniform') return null;
  const { bits, values_per_word: vpw, symmetric_zero: symmetricZero } = fmt;
  const mask = (1 << bits) - 1;
  const scales = parts.scales.values;
  const half = entry.spec.scale_dtype === 'float16';
  const zeros = parts.zeros?.values;
  return (row, x) => {
    let acc = 0;
    const base = row * wpr;
    for (let i0 = 0, gi = 0; i0 < k; i0 += gsize, gi++) {
      const g = row * gpr + gi; // per-tensor scales: gpr 0, one group
      const scale = half ? halfToFloat(scales[g]) : scales[g];
      const zero = zeros ? zeros[g] : symmetricZero;
      const i1 = Math.min(k, i0 + gsize);
      for (let i = i0; i < i1;) {
        const wi = (i / vpw) | 0;
        const word = codes[base + wi];
        const end = Math.min(i1, (wi + 1) * vpw);
        for (let shift = (i - wi * vpw) * bits; i < end; i++, shift += bits) {
          acc += x[i] * Math.fround(scale * (((word >>> shift) & mask) - zero));
        }
      }
    }
    return acc;
  };
}

/** y[m, n] = act(sum_k x[m, k] W[n, k] + b[n]) (+ residual[m, n]) for x of shape [rows, k]; W packed. */
export function linear(x, rows, weight, bias, activation, formats, residual = null, outputs = null) {
  const { rows: n, k } = weight.entry.matrix;
  // a codebook-format matrix is stored as W R^T: rotate the inputs to match (ulpq_build/vq/)
  const seed = rotationSeed(weight);
  if (seed) x = rotateRows(x, rows, k, seed);
  const dot = rows === 1 ? rowDot(weight, formats) : null;
  if (dot) return linearRow(x, weight, bias, activation, dot, residual, outputs);
  const decode = rowDecoder(weight, formats);
  const b = bias ? bias.parts.codes.values : null;
  const act = ACTIVATIONS[activation];
  const wRow = new Float32Array(k);
  const y = new Float32Array(rows * n);
  // `outputs`: only these output columns are computed (the others stay 0): the WebGPU self-test
  // checks a sample, so a large model's initialisation does not decode a whole matrix in JS
  const count = outputs ? outputs.length : n;
  for (let o = 0; o < count; o++) {
    const j = outputs ? outputs[o] : o;
    decode(j, wRow);
    for (let m = 0; m < rows; m++) {
      let acc = 0;
      const xo = m * k;
      for (let i = 0; i < k; i++) acc += x[xo + i] * wRow[i];
      if (b) acc += b[j];
      y[m * n + j] = residual ? act(acc) + residual[m * n + j] : act(acc);
    }
  }
  return y;
}

/** linear() for one row of x, through rowDot: each weight read once, from its packed word. */
function linearRow(x, weight, bias, activation, dot, residual, outputs) {
  const n = weight.entry.matrix.rows;
  const b = bias ? bias.parts.codes.values : null;
  const act = ACTIVATIONS[activation];
  const y = new Float32Array(n);
  const count = outputs ? outputs.length : n;
  for (let o = 0; o < count; o++) {
    const j = outputs ? outputs[o] : o;
    let acc = dot(j, x);
    if (b) acc += b[j];
    y[j] = residual ? act(acc) + residual[j] : act(acc);
  }
  return y;
}

/** y[t, :] (+)= table[ids[t], :] for a packed table; ids >= rows give zeros. */
export function embedRows(table, ids, formats, into = null) {
  const { rows, k } = table.entry.matrix;
  const decoder = rowDecoder(table, formats);
  const seed = rotationSeed(table); // a table stored rotated (bundles keep tables unrotated): undo it per row
  const decode = seed ? (id, out) => { decoder(id, out); unrotateRow(out, k, seed); } : decoder;
  const y = into ?? new Float32Array(ids.length * k);
  const row = new Float32Array(k);
  const cache = new Map(); // a batch repeats ids (padding, positions): decode each row once
  ids.forEach((id, t) => {
    if (id >= rows) return;
    let values = cache.get(id);
    if (!values) {
      decode(id, row);
      values = row.slice();
      cache.set(id, values);
    }
    const out = y.subarray(t * k, (t + 1) * k);
    if (into) for (let i = 0; i < k; i++) out[i] += values[i];
    else out.set(values);
  });
  return y;
}

export function layernorm(x, rows, cols, gamma, beta, eps) {
  const y = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let mean = 0;
    for (let i = 0; i < cols; i++) mean += x[o + i];
    mean /= cols;
    let variance = 0;
    for (let i = 0; i < cols; i++) variance += (x[o + i] - mean) ** 2;
    const inv = 1 / Math.sqrt(variance / cols + eps);
    for (let i = 0; i < cols; i++) y[o + i] = (x[o + i] - mean) * inv * gamma[i] + beta[i];
  }
  return y;
}

/** Scaled dot-product attention per sequence and head; q, k, v [batch*seq, heads*d]; mask [batch*seq] or null. */
export function attention(q, k, v, mask, batch, seq, heads, d) {
  const stride = heads * d;
  const y = new Float32Array(batch * seq * stride);
  const scale = 1 / Math.sqrt(d);
  const p = new Float64Array(seq);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      for (let s = 0; s < seq; s++) {
        const qo = (b * seq + s) * stride + h * d;
        let max = -Infinity;
        for (let j = 0; j < seq; j++) {
          if (mask && !(mask[b * seq + j] > 0.5)) { p[j] = -Infinity; continue; }
          const ko = (b * seq + j) * stride + h * d;
          let dot = 0;
          for (let e = 0; e < d; e++) dot += q[qo + e] * k[ko + e];
          p[j] = dot * scale;
          if (p[j] > max) max = p[j];
        }
        let total = 0;
        for (let j = 0; j < seq; j++) { p[j] = p[j] === -Infinity ? 0 : Math.exp(p[j] - max); total += p[j]; }
        const inv = total > 0 ? 1 / total : 0;
        for (let e = 0; e < d; e++) {
          let acc = 0;
          for (let j = 0; j < seq; j++) if (p[j] !== 0) acc += p[j] * v[(b * seq + j) * stride + h * d + e];
          y[qo + e] = acc * inv;
        }
      }
    }
  }
  return y;
}

/** Mean over each sequence's kept tokens, then (normalize) divided by the L2 norm. */
export function meanpool(x, mask, batch, seq, hidden, normalize) {
  const y = new Float32Array(batch * hidden);
  const acc = new Float64Array(hidden);
  for (let b = 0; b < batch; b++) {
    acc.fill(0);
    let count = 0;
    for (let s = 0; s < seq; s++) {
      if (!(mask[b * seq + s] > 0.5)) continue;
      count += 1;
      const o = (b * seq + s) * hidden;
      for (let i = 0; i < hidden; i++) acc[i] += x[o + i];
    }
    let norm = 0;
    for (let i = 0; i < hidden; i++) { acc[i] /= Math.max(count, 1e-9); norm += acc[i] * acc[i]; }
    const scale = normalize ? 1 / Math.max(Math.sqrt(norm), 1e-12) : 1;
    for (let i = 0; i < hidden; i++) y[b * hidden + i] = acc[i] * scale;
  }
  return y;
}

/** Patches of an NCHW image, each row (c, i, j) in the conv weight's order. */
export function im2col(image, batch, channels, height, width, patch) {
  const gw = Math.floor(width / patch);
  const gh = Math.floor(height / patch);
  const cols = channels * patch * patch;
  const y = new Float32Array(batch * gh * gw * cols);
  for (let b = 0; b < batch; b++) {
    for (let py = 0; py < gh; py++) {
      for (let px = 0; px < gw; px++) {
        const row = (b * gh * gw + py * gw + px) * cols;
        for (let c = 0; c < channels; c++) {
          for (let i = 0; i < patch; i++) {
            for (let j = 0; j < patch; j++) {
              y[row + (c * patch + i) * patch + j] = image[((b * channels + c) * height + py * patch + i) * width + px * patch + j];
            }
          }
        }
      }
    }
  }
  return y;
}

/** [CLS] + patch embeddings, plus position embeddings: [batch * (P + 1), hidden]. */
export function vitTokens(patches, cls, pos, batch, nPatches, hidden) {
  const seq = nPatches + 1;
  const y = new Float32Array(batch * seq * hidden);
  for (let b = 0; b < batch; b++) {
    for (let s = 0; s < seq; s++) {
      const o = (b * seq + s) * hidden;
      for (let i = 0; i < hidden; i++) {
        const value = s === 0 ? cls[i] : patches[(b * nPatches + s - 1) * hidden + i];
        y[o + i] = value + pos[s * hidden + i];
      }
    }
  }
  return y;
}

/** Rows ids[i] of a [rows, cols] activation. */
export function gatherRows(x, cols, ids) {
  const y = new Float32Array(ids.length * cols);
  ids.forEach((id, i) => y.set(x.subarray(id * cols, (id + 1) * cols), i * cols));
  return y;
}
