// The CPU path's operators, in plain JS over Float32Arrays. Matrices are decoded one row at a
// time from the packed weights, so the CPU path needs no dequantized copy of the model.

import { rowDecoder } from './decode.js';

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
};

/** y[m, n] = act(sum_k x[m, k] W[n, k] + b[n]) for x of shape [rows, k]; W packed. */
export function linear(x, rows, weight, bias, activation, formats) {
  const { rows: n, k } = weight.entry.matrix;
  const decode = rowDecoder(weight, formats);
  const b = bias ? bias.parts.codes.values : null;
  const act = ACTIVATIONS[activation];
  const wRow = new Float32Array(k);
  const y = new Float32Array(rows * n);
  for (let j = 0; j < n; j++) {
    decode(j, wRow);
    for (let m = 0; m < rows; m++) {
      let acc = 0;
      const xo = m * k;
      for (let i = 0; i < k; i++) acc += x[xo + i] * wRow[i];
      if (b) acc += b[j];
      y[m * n + j] = act(acc);
    }
  }
  return y;
}
