// The decoder's non-product operators as kernels over the wasm backend's memory, so that a whole
// decoder pass (products and all) is ONE recorded program: no activation leaves the wasm memory
// between operators, and with worker threads a pass costs one wake-up, not one per product.
// They are plain JS over views of that memory (not wasm): they run beside the wasm exports in
// runOps (same calling convention: numbers only, the op's [lo, hi) range last), on the main thread
// and on every worker alike. The arithmetic is ops_decoder.js's, operation for operation (float64
// sums, softmax and angles, float32 storage), so tokens are those of the per-operator path.
// Pointers are byte offsets; views are taken on every call (a memory that grew has a new buffer).

import { ACTIVATIONS } from './ops_cpu.js';
import { silu } from './ops_decoder.js';

/** Activation codes the kernels take (an op's arguments are numbers). */
export const ACTIVATION_CODES = { none: 0, gelu: 1, gelu_tanh: 2, silu: 3 };
const BY_CODE = [ACTIVATIONS.none, ACTIVATIONS.gelu, ACTIVATIONS.gelu_tanh, silu];

/** The kernels over `memory`, named as the ops that record them (backend_wasm.js #op). */
export function decoderKernels(memory) {
  const f32 = () => new Float32Array(memory.buffer);
  const f64 = () => new Float64Array(memory.buffer);
  const i32 = () => new Int32Array(memory.buffer);
  return {
    /** y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, rows [r0, r1) of [rows, cols]. */
    dec_rmsnorm(x, y, cols, w, eps, r0, r1) {
      const m = f32();
      const xo0 = x >> 2, yo0 = y >> 2, wo = w >> 2;
      for (let r = r0; r < r1; r++) {
        const xo = xo0 + r * cols, yo = yo0 + r * cols;
        let squares = 0;
        for (let i = 0; i < cols; i++) squares += m[xo + i] * m[xo + i];
        const inv = 1 / Math.sqrt(squares / cols + eps);
        for (let i = 0; i < cols; i++) m[yo + i] = m[xo + i] * inv * m[wo + i];
      }
    },
    /** LayerNorm as ops_cpu.layernorm (float64 mean and variance), rows [r0, r1). */
    dec_layernorm(x, y, cols, gamma, beta, eps, r0, r1) {
      const m = f32();
      const xo0 = x >> 2, yo0 = y >> 2, go = gamma >> 2, bo = beta >> 2;
      for (let r = r0; r < r1; r++) {
        const xo = xo0 + r * cols, yo = yo0 + r * cols;
        let mean = 0;
        for (let i = 0; i < cols; i++) mean += m[xo + i];
        mean /= cols;
        let variance = 0;
        for (let i = 0; i < cols; i++) variance += (m[xo + i] - mean) ** 2;
        const inv = 1 / Math.sqrt(variance / cols + eps);
        for (let i = 0; i < cols; i++) m[yo + i] = (m[xo + i] - mean) * inv * m[go + i] + m[bo + i];
      }
    },
    /**
     * A step's rows [r0, r1) of q, k and v (each at its pointer + offset + row * stride, in floats),
     * ready for attention: rotary (rotate-half, as ops_decoder.rotary) IN PLACE on q's `heads` and
     * k's `kvHeads` heads at the rows' positions (int32) with invFreq (float64 [headDim / 2]; 0: no
     * rotary, learned positions), then k and v into a layer's caches [kvHeads, capacity, headDim] at
     * slots start + row. One op, not four: with worker threads each op ends at a barrier.
     */
    dec_qkv_prep(q, qOffset, qStride, heads, k, kOffset, kStride, v, vOffset, vStride, kvHeads, headDim, positions, invFreq,
      keys, values, capacity, start, r0, r1) {
      const m = f32();
      const half = headDim / 2;
      const cos = new Float64Array(half);
      const sin = new Float64Array(half);
      const rotate = (base, stride, count, r) => {
        for (let h = 0; h < count; h++) {
          const o = base + r * stride + h * headDim;
          for (let i = 0; i < half; i++) {
            const x1 = m[o + i];
            const x2 = m[o + half + i];
            m[o + i] = x1 * cos[i] - x2 * sin[i];
            m[o + half + i] = x2 * cos[i] + x1 * sin[i];
          }
        }
      };
      const qBase = (q >> 2) + qOffset;
      const kBase = (k >> 2) + kOffset;
      const vBase = (v >> 2) + vOffset;
      for (let r = r0; r < r1; r++) {
        if (invFreq) {
          const p = i32()[(positions >> 2) + r];
          const freq = f64();
          for (let i = 0; i < half; i++) {
            const angle = p * freq[(invFreq >> 3) + i];
            cos[i] = Math.cos(angle);
            sin[i] = Math.sin(angle);
          }
          rotate(qBase, qStride, heads, r);
          rotate(kBase, kStride, kvHeads, r);
        }
        for (let h = 0; h < kvHeads; h++) {
          const to = (h * capacity + start + r) * headDim;
          m.copyWithin((keys >> 2) + to, kBase + r * kStride + h * headDim, kBase + r * kStride + (h + 1) * headDim);
          m.copyWithin((values >> 2) + to, vBase + r * vStride + h * headDim, vBase + r * vStride + (h + 1) * headDim);
        }
      }
    },
    /**
     * Causal grouped-query attention of the step's queries (q + offset + row * qStride, heads of headDim)
     * against a layer's cache (every slot a real token: batch 1, no padding), as
     * ops_decoder.causalAttention; y [newTokens, heads * headDim]. Range: (token, head) pairs.
     */
    dec_attention(q, offset, qStride, keys, values, y, heads, kvHeads, headDim, capacity, start, lo, hi) {
      const m = f32();
      const group = heads / kvHeads;
      const scale = 1 / Math.sqrt(headDim);
      const p = new Float64Array(start + Math.ceil(hi / heads) + 1);
      const acc = new Float64Array(headDim);
      for (let pair = lo; pair < hi; pair++) {
        const s = Math.floor(pair / heads);
        const h = pair % heads;
        const qo = (q >> 2) + offset + s * qStride + h * headDim;
        const base = Math.floor(h / group) * capacity;
        const visible = start + s + 1;
        let max = -Infinity;
        for (let j = 0; j < visible; j++) {
          const ko = (keys >> 2) + (base + j) * headDim;
          let dot = 0;
          for (let e = 0; e < headDim; e++) dot += m[qo + e] * m[ko + e];
          p[j] = dot * scale;
          if (p[j] > max) max = p[j];
        }
        let total = 0;
        acc.fill(0);
        for (let j = 0; j < visible; j++) {
          const w = Math.exp(p[j] - max);
          total += w;
          const vo = (values >> 2) + (base + j) * headDim;
          for (let e = 0; e < headDim; e++) acc[e] += w * m[vo + e];
        }
        const inv = total > 0 ? 1 / total : 0;
        const yo = (y >> 2) + (s * heads + h) * headDim;
        for (let e = 0; e < headDim; e++) m[yo + e] = acc[e] * inv;
      }
    },
    /** y[i] = act(gate[i]) * up[i] for i in [lo, hi) (SwiGLU's product; y may be gate). */
    dec_glu(gate, up, y, act, lo, hi) {
      const m = f32();
      const fn = BY_CODE[act];
      const go = gate >> 2, uo = up >> 2, yo = y >> 2;
      for (let i = lo; i < hi; i++) m[yo + i] = fn(m[go + i]) * m[uo + i];
    },
    /** y[i] = act(y[i]) (+ res[i]) for i in [lo, hi): activations the GEMM kernels lack (gelu_tanh). */
    dec_activation(y, act, res, lo, hi) {
      const m = f32();
      const fn = BY_CODE[act];
      const yo = y >> 2, ro = res >> 2;
      for (let i = lo; i < hi; i++) m[yo + i] = res ? fn(m[yo + i]) + m[ro + i] : fn(m[yo + i]);
    },
  };
}
