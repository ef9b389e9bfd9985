// The CPU path's decoder operators (Llama/Qwen2/Mistral- and GPT-2-style), in plain JS over
// Float32Arrays, matching ulpq_build/decoder_reference.py. Activations use the linear op's layout:
// [rows, features] row-major with rows = batch * newTokens (batch-major); per-head vectors sit at
// columns h * headDim .. (h + 1) * headDim - 1. Sums, softmax and angles are taken in float64
// (JS numbers) and stored as float32, so only the storage rounds.
//
// Functions that write a result take an optional `out` buffer (a fresh one otherwise) and return it.

import { ACTIVATIONS, layernorm } from './ops_cpu.js';

/** x * sigmoid(x), the SwiGLU gate; exp(-|x|) so that neither sign overflows (as reference.silu). */
export function silu(v) {
  const e = Math.exp(-Math.abs(v));
  return v >= 0 ? v / (1 + e) : (v * e) / (1 + e);
}

/** GELU's tanh approximation (GPT-2's gelu_new), a different function from the erf form by ~1e-3. */
export const geluTanh = ACTIVATIONS.gelu_tanh;

// the gate activations a decoder's FFN applies; 'none', 'gelu' and 'gelu_tanh' are the linear op's own
const GATE_ACTIVATIONS = { ...ACTIVATIONS, silu };

/** y = x / sqrt(mean(x^2) + eps) * weight, per row of x [rows, cols]. */
export function rmsNorm(x, rows, cols, weight, eps, out = null) {
  const y = out ?? new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let squares = 0;
    for (let i = 0; i < cols; i++) squares += x[o + i] * x[o + i];
    const inv = 1 / Math.sqrt(squares / cols + eps);
    for (let i = 0; i < cols; i++) y[o + i] = x[o + i] * inv * weight[i];
  }
  return y;
}

/**
 * Rotary positions in the rotate-half layout (dimension i pairs with i + headDim/2, as transformers'
 * Llama): for x [rows, heads*headDim] and positions [rows], each head's (x1, x2) becomes
 * (x1 cos - x2 sin, x2 cos + x1 sin) at angle positions[r] * invFreq[i]. Writes `out`, which
 * defaults to x itself (IN PLACE: the graph rotates q and k where the linear op left them); a
 * distinct `out` leaves x unchanged.
 */
export function rotary(x, rows, heads, headDim, positions, invFreq, out = x) {
  const half = headDim / 2;
  if (!Number.isInteger(half) || invFreq.length !== half) {
    throw new Error(`rotary: headDim ${headDim} needs ${headDim / 2} frequencies, got ${invFreq.length}`);
  }
  const cos = new Float64Array(half);
  const sin = new Float64Array(half);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < half; i++) {
      const angle = positions[r] * invFreq[i];
      cos[i] = Math.cos(angle);
      sin[i] = Math.sin(angle);
    }
    for (let h = 0; h < heads; h++) {
      const o = (r * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const x1 = x[o + i];
        const x2 = x[o + half + i];
        out[o + i] = x1 * cos[i] - x2 * sin[i];
        out[o + half + i] = x2 * cos[i] + x1 * sin[i];
      }
    }
  }
  return out;
}

/** y = act(gate) * up elementwise (SwiGLU with 'silu'; gate is the gate projection before its activation). */
export function gluMultiply(gate, up, activation, out = null) {
  const act = GATE_ACTIVATIONS[activation];
  if (!act) throw new Error(`gluMultiply: unknown activation '${activation}' (known: ${Object.keys(GATE_ACTIVATIONS).join(', ')})`);
  if (gate.length !== up.length) throw new Error(`gluMultiply: gate has ${gate.length} values, up ${up.length}`);
  const y = out ?? new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) y[i] = act(gate[i]) * up[i];
  return y;
}

/**
 * What decoding keeps between steps, for every layer: keys (rotary applied) and values, each a
 * Float32Array [batch, kvHeads, capacity, headDim] of which slots 0 .. length-1 are filled; `keep`
 * [batch, capacity] (1 real token / 0 padding) and each row's next position. Capacity doubles
 * when a step does not fit. A step is: beginStep(mask, n) once, then append(layer, k, v) and
 * causalAttention(..., start) per layer.
 */
export class KvCache {
  constructor({ layers, batch, kvHeads, headDim, capacity = 16 }) {
    for (const [name, value] of Object.entries({ layers, batch, kvHeads, headDim, capacity })) {
      if (!Number.isInteger(value) || value < 1) throw new Error(`createKvCache: ${name} must be a positive integer, got ${value}`);
    }
    this.layers = layers;
    this.batch = batch;
    this.kvHeads = kvHeads;
    this.headDim = headDim;
    this.capacity = capacity;
    this.length = 0;
    this.start = 0; // the first slot of the step in progress
    this.newTokens = 0;
    this.keys = Array.from({ length: layers }, () => new Float32Array(batch * kvHeads * capacity * headDim));
    this.values = Array.from({ length: layers }, () => new Float32Array(batch * kvHeads * capacity * headDim));
    this.keep = new Uint8Array(batch * capacity);
    this.nextPosition = new Int32Array(batch);
  }

  /** Grow (doubling) until `slots` fit; filled slots keep their place per (row, kv head). */
  reserve(slots) {
    if (slots <= this.capacity) return;
    let capacity = this.capacity;
    while (capacity < slots) capacity *= 2;
    const { batch, kvHeads, headDim, length } = this;
    const move = (old) => {
      const grown = new Float32Array(batch * kvHeads * capacity * headDim);
      for (let bh = 0; bh < batch * kvHeads; bh++) {
        grown.set(old.subarray(bh * this.capacity * headDim, (bh * this.capacity + length) * headDim), bh * capacity * headDim);
      }
      return grown;
    };
    this.keys = this.keys.map(move);
    this.values = this.values.map(move);
    const keep = new Uint8Array(batch * capacity);
    for (let b = 0; b < batch; b++) keep.set(this.keep.subarray(b * this.capacity, b * this.capacity + length), b * capacity);
    this.keep = keep;
    this.capacity = capacity;
  }

  /**
   * Open a step of `newTokens` tokens per row, `mask` [batch*newTokens] (1 token / 0 padding, null:
   * all tokens): their slots are length .. length+newTokens-1 from now on. Returns {start, positions}:
   * positions [batch*newTokens] count real tokens only (next position + running count - 1, at least
   * 0), as decoder_reference numbers them (transformers' generate() on left-padded prompts).
   */
  beginStep(mask, newTokens) {
    const { batch } = this;
    if (mask && mask.length !== batch * newTokens) throw new Error(`beginStep: mask has ${mask.length} values, expected ${batch * newTokens}`);
    const start = this.length;
    this.reserve(start + newTokens);
    const positions = new Int32Array(batch * newTokens);
    for (let b = 0; b < batch; b++) {
      let position = this.nextPosition[b];
      for (let s = 0; s < newTokens; s++) {
        const real = mask ? mask[b * newTokens + s] > 0.5 : true;
        this.keep[b * this.capacity + start + s] = real ? 1 : 0;
        if (real) position += 1;
        positions[b * newTokens + s] = Math.max(position - 1, 0);
      }
      this.nextPosition[b] = position;
    }
    this.start = start;
    this.newTokens = newTokens;
    this.length = start + newTokens;
    return { start, positions };
  }

  /** Store layer `layer`'s keys and values of the open step, each [batch*newTokens, kvHeads*headDim]. */
  append(layer, keys, values) {
    const { batch, kvHeads, headDim, capacity, start, newTokens } = this;
    const expected = batch * newTokens * kvHeads * headDim;
    if (keys.length !== expected || values.length !== expected) {
      throw new Error(`KvCache.append: expected ${expected} keys and values, got ${keys.length} and ${values.length}`);
    }
    const K = this.keys[layer];
    const V = this.values[layer];
    for (let b = 0; b < batch; b++) {
      for (let s = 0; s < newTokens; s++) {
        for (let h = 0; h < kvHeads; h++) {
          const from = ((b * newTokens + s) * kvHeads + h) * headDim;
          const to = ((b * kvHeads + h) * capacity + start + s) * headDim;
          K.set(keys.subarray(from, from + headDim), to);
          V.set(values.subarray(from, from + headDim), to);
        }
      }
    }
  }
}

export function createKvCache(options) {
  return new KvCache(options);
}

/**
 * softmax(q k^T / sqrt(headDim)) v against layer `layer` of the cache, grouped-query (head h reads
 * kv head floor(h / (heads / kvHeads)), as transformers' repeat_kv): q [batch*newTokens, heads*headDim]
 * holds the tokens at slots start .. start+newTokens-1 (rotary applied); a query sees the slots up
 * to its own whose keep is 1. Padding slots weigh exactly 0 (their keys and values are never read);
 * a query that sees no slot gives zeros. Returns [batch*newTokens, heads*headDim].
 */
export function causalAttention(q, cache, layer, batch, newTokens, heads, kvHeads, headDim, start, out = null) {
  if (heads % kvHeads) throw new Error(`causalAttention: kvHeads ${kvHeads} does not divide heads ${heads}`);
  if (kvHeads !== cache.kvHeads || headDim !== cache.headDim || batch !== cache.batch) {
    throw new Error(`causalAttention: the cache holds batch ${cache.batch}, ${cache.kvHeads} kv heads of ${cache.headDim}, not ${batch}, ${kvHeads} of ${headDim}`);
  }
  if (start + newTokens > cache.length) throw new Error(`causalAttention: slots up to ${start + newTokens} requested, the cache holds ${cache.length}`);
  const group = heads / kvHeads;
  const { capacity, keep } = cache;
  const K = cache.keys[layer];
  const V = cache.values[layer];
  const stride = heads * headDim;
  const y = out ?? new Float32Array(batch * newTokens * stride);
  const scale = 1 / Math.sqrt(headDim);
  const p = new Float64Array(start + newTokens);
  const acc = new Float64Array(headDim);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const base = (b * kvHeads + Math.floor(h / group)) * capacity;
      for (let s = 0; s < newTokens; s++) {
        const qo = (b * newTokens + s) * stride + h * headDim;
        const visible = start + s + 1;
        let max = -Infinity;
        for (let j = 0; j < visible; j++) {
          if (!keep[b * capacity + j]) continue;
          const ko = (base + j) * headDim;
          let dot = 0;
          for (let e = 0; e < headDim; e++) dot += q[qo + e] * K[ko + e];
          p[j] = dot * scale;
          if (p[j] > max) max = p[j];
        }
        let total = 0;
        acc.fill(0);
        for (let j = 0; j < visible; j++) {
          if (!keep[b * capacity + j]) continue;
          const w = Math.exp(p[j] - max);
          total += w;
          const vo = (base + j) * headDim;
          for (let e = 0; e < headDim; e++) acc[e] += w * V[vo + e];
        }
        const inv = total > 0 ? 1 / total : 0;
        for (let e = 0; e < headDim; e++) y[qo + e] = acc[e] * inv;
      }
    }
  }
  return y;
}

/**
 * One pass of a decoder graph (decoder_reference.decoder_forward) over `newTokens` tokens per row
 * after those in `cache`: ids [batch*newTokens], mask [batch*newTokens] (1 token / 0 padding; null:
 * all tokens). `model` is the description architectures/llama.py or gpt2.py writes; `io` reaches the
 * weights, so that packed or dense ones serve alike:
 *   io.linear(node, x, rows, residual) -> act(x W^T + b) (+ residual when node.residual), [rows, out]
 *   io.embed(table, ids) -> the rows ids of a table, [ids.length, hidden]
 *   io.vector(name) -> a norm's weight or bias
 * linear and embed may return a Promise (a backend that runs its kernels on worker threads):
 * awaited either way. Extends the cache and resolves to the logits [batch*newTokens, vocab].
 */
export async function decoderForward(model, io, cache, ids, mask, newTokens) {
  const { batch } = cache;
  const rows = batch * newTokens;
  const { num_heads: heads, num_kv_heads: kvHeads, head_dim: d, hidden_size: hidden } = model;
  // checked before the cache moves, so a refused step leaves it as it was
  let top = 0;
  for (let b = 0; b < batch; b++) {
    let real = 0;
    for (let s = 0; s < newTokens; s++) real += !mask || mask[b * newTokens + s] > 0.5 ? 1 : 0;
    top = Math.max(top, cache.nextPosition[b] + real - 1);
  }
  if (top >= model.max_position) throw new Error(`decoderForward: position ${top} is past the model's ${model.max_position} positions`);
  const { start, positions } = cache.beginStep(mask, newTokens);
  const norm = (x, node) => (model.norm === 'rms'
    ? rmsNorm(x, rows, hidden, io.vector(node.weight), model.norm_eps)
    : layernorm(x, rows, hidden, io.vector(node.weight), io.vector(node.bias), model.norm_eps));
  const rotate = model.positions.kind === 'rotary';
  const invFreq = rotate ? Float64Array.from(model.positions.inv_freq) : null;
  let x = await io.embed(model.embeddings.word.table, ids);
  if (model.positions.kind === 'learned') {
    const table = await io.embed(model.embeddings.position.table, positions);
    for (let i = 0; i < x.length; i++) x[i] += table[i];
  }
  for (const [i, layer] of model.layers.entries()) {
    const a = norm(x, layer.attn_norm);
    let q, k, v;
    if (layer.qkv) {
      const qkv = await io.linear(layer.qkv, a, rows, null);
      [q, k, v] = splitColumns(qkv, rows, [heads * d, kvHeads * d, kvHeads * d]);
    } else {
      q = await io.linear(layer.query, a, rows, null);
      k = await io.linear(layer.key, a, rows, null);
      v = await io.linear(layer.value, a, rows, null);
    }
    if (rotate) {
      rotary(q, rows, heads, d, positions, invFreq);
      rotary(k, rows, kvHeads, d, positions, invFreq);
    }
    cache.append(i, k, v);
    const context = causalAttention(q, cache, i, batch, newTokens, heads, kvHeads, d, start);
    x = await io.linear(layer.attn_out, context, rows, x);
    const m = norm(x, layer.mlp_norm);
    if (model.ffn === 'gated') {
      // the gate's activation (silu) is applied here, not by the linear op, whose table lacks it
      const gate = await io.linear({ ...layer.gate, activation: 'none' }, m, rows, null);
      const product = gluMultiply(gate, await io.linear(layer.up, m, rows, null), layer.gate.activation, gate);
      x = await io.linear(layer.down, product, rows, x);
    } else {
      x = await io.linear(layer.proj, await io.linear(layer.fc, m, rows, null), rows, x);
    }
  }
  return io.linear(model.lm_head, norm(x, model.final_norm), rows, null);
}

/** The column blocks of widths `widths` of x [rows, sum(widths)], each [rows, width]. */
function splitColumns(x, rows, widths) {
  const total = widths.reduce((a, b) => a + b, 0);
  let offset = 0;
  return widths.map((width) => {
    const part = new Float32Array(rows * width);
    for (let r = 0; r < rows; r++) part.set(x.subarray(r * total + offset, r * total + offset + width), r * width);
    offset += width;
    return part;
  });
}
