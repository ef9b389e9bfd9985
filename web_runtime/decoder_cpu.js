// Decoder generation on the CPU path: the decoder graph (ops_decoder.js decoderForward) over the
// weights of a CPU backend (cpu_select.js: the wasm kernels where the bundle and engine have them,
// plain JS otherwise), whose `linear` and `embed` are the ones the encoders run, over the packed
// weights as they are. One pass over the prompt (prefill), then one cached pass per new token.

import { ACTIVATIONS } from './ops_cpu.js';
import { KvCache, decoderForward } from './ops_decoder.js';
import { ACTIVATION_CODES } from './decoder_wasm_ops.js';

// activations every CPU backend's linear applies itself (the wasm kernels know only these); the
// others (GPT-2's gelu_tanh) are applied here after a plain product, and the residual added after them
const BACKEND_ACTIVATIONS = new Set(['none', 'gelu']);
const CACHE_START = 64; // KV-cache slots first reserved; it doubles as generation goes on

/**
 * The `io` decoderForward reads weights through, over a CPU backend (the interface of
 * backend_cpu.js and backend_wasm.js: begin, input, upload, linear, embed, output) and the
 * bundle's tensor table (norm vectors, stored as float32).
 */
export function backendIo(backend, tensors) {
  const run = async (record) => {
    backend.begin();
    return (await backend.output(record())).data;
  };
  return {
    // the wasm backend runs a whole pass as one program (wasmDecoderSession); `fusedDecoder = false`
    // on the backend keeps the per-operator path (benchmarks compare the two)
    session: typeof backend.record === 'function' && backend.fusedDecoder !== false
      ? (model, capacity) => wasmDecoderSession(backend, model, capacity) : null,
    async linear(node, x, rows, residual) {
      const fused = BACKEND_ACTIVATIONS.has(node.activation);
      const y = await run(() => {
        const h = backend.input(x, rows, node.in_features);
        const r = residual && fused ? backend.input(residual, rows, node.out_features) : null;
        return backend.linear(h, fused ? node : { ...node, activation: 'none' }, r);
      });
      if (fused) return y;
      const act = ACTIVATIONS[node.activation];
      if (!act) throw new Error(`${node.weight}: activation '${node.activation}' is unknown to this runtime`);
      for (let i = 0; i < y.length; i++) y[i] = residual ? act(y[i]) + residual[i] : act(y[i]);
      return y;
    },
    embed(table, ids) {
      return run(() => backend.embed({ table }, backend.upload(Uint32Array.from(ids)), ids.length));
    },
    vector(name) {
      const tensor = tensors.get(name);
      if (!tensor) throw new Error(`tensor ${name} is missing from the bundle; rebuild it`);
      if (tensor.entry.format !== 'float32') throw new Error(`${name}: norm weights must be float32, the bundle stores ${tensor.entry.format}`);
      return tensor.parts.codes.values; // fresh on every call: a wasm memory that grew leaves old views detached
    },
  };
}

/**
 * Batch-1 generation on the wasm backend with every activation and the KV cache in its memory: a
 * pass (prefill or one decode step) is recorded whole (products as the GEMM/GEMV kernels,
 * RMSNorm, rotary, the cache writes, attention and the SwiGLU product as decoder_wasm_ops.js
 * kernels) and run at once: ids in, the last row's logits out, nothing else copied, one
 * worker wake-up per pass. The cache holds `capacity` slots (the prompt and every new token),
 * held in the backend's memory until close(). forward(ids) resolves to the last row's logits.
 */
export function wasmDecoderSession(backend, model, capacity) {
  const { num_heads: heads, num_kv_heads: kvHeads, head_dim: d, hidden_size: hidden, num_layers: layers } = model;
  const slotBytes = kvHeads * capacity * d * 4;
  const cache = backend.hold(2 * layers * slotBytes);
  const keysOf = (i) => cache + 2 * i * slotBytes;
  const valuesOf = (i) => cache + (2 * i + 1) * slotBytes;
  const rotate = model.positions.kind === 'rotary';
  const invFreq = rotate ? Float64Array.from(model.positions.inv_freq) : null;
  let length = 0;
  let closed = false;

  const record = (fn, args, total, unit = 1) => backend.record(fn, [...args, 0, 0], args.length, total, unit);
  const norm = (h, rows, node) => {
    const y = backend.reserve(rows, hidden);
    if (model.norm === 'rms') {
      record('dec_rmsnorm', [h.ptr, y.ptr, hidden, backend.address(node.weight), model.norm_eps], rows);
    } else {
      record('dec_layernorm', [h.ptr, y.ptr, hidden, backend.address(node.weight), backend.address(node.bias), model.norm_eps], rows);
    }
    return y;
  };
  const linear = (h, node, residual = null) => {
    if (BACKEND_ACTIVATIONS.has(node.activation ?? 'none')) return backend.linear(h, node, residual);
    const code = ACTIVATION_CODES[node.activation];
    if (code === undefined) throw new Error(`${node.weight}: activation '${node.activation}' is unknown to this runtime`);
    const y = backend.linear(h, { ...node, activation: 'none' }, null);
    record('dec_activation', [y.ptr, code, residual ? residual.ptr : 0], y.rows * y.cols, 4);
    return y;
  };

  async function forward(ids) {
    if (closed) throw new Error('the decoder session is closed');
    const n = ids.length;
    const start = length;
    if (start + n > capacity) throw new Error(`decoder session: ${start + n} positions, its cache holds ${capacity}`);
    backend.begin();
    const idsIn = backend.upload(Uint32Array.from(ids));
    const positions = backend.upload(Int32Array.from({ length: n }, (_, i) => start + i));
    const freq = rotate ? backend.upload(invFreq) : null;
    const x0 = backend.embed({ table: model.embeddings.word.table }, idsIn, n);
    if (model.positions.kind === 'learned') backend.embed({ table: model.embeddings.position.table }, positions, n, x0);
    let x = x0;
    for (const [i, layer] of model.layers.entries()) {
      const a = norm(x, n, layer.attn_norm);
      // [handle, column offset, row stride] of q, k and v
      let q, k, v;
      if (layer.qkv) {
        const qkv = linear(a, layer.qkv);
        q = [qkv, 0, qkv.cols];
        k = [qkv, heads * d, qkv.cols];
        v = [qkv, (heads + kvHeads) * d, qkv.cols];
      } else {
        const [hq, hk, hv] = [linear(a, layer.query), linear(a, layer.key), linear(a, layer.value)];
        q = [hq, 0, hq.cols];
        k = [hk, 0, hk.cols];
        v = [hv, 0, hv.cols];
      }
      record('dec_qkv_prep', [q[0].ptr, q[1], q[2], heads, k[0].ptr, k[1], k[2], v[0].ptr, v[1], v[2], kvHeads, d,
        positions.ptr, rotate ? freq.ptr : 0, keysOf(i), valuesOf(i), capacity, start], n);
      const context = backend.reserve(n, heads * d);
      record('dec_attention', [q[0].ptr, q[1], q[2], keysOf(i), valuesOf(i), context.ptr, heads, kvHeads, d, capacity, start], n * heads);
      x = linear(context, layer.attn_out, x);
      const m = norm(x, n, layer.mlp_norm);
      if (model.ffn === 'gated') {
        const gate = backend.linear(m, { ...layer.gate, activation: 'none' }, null);
        const up = linear(m, layer.up);
        const code = ACTIVATION_CODES[layer.gate.activation];
        if (code === undefined) throw new Error(`${layer.gate.weight}: gate activation '${layer.gate.activation}' is unknown to this runtime`);
        record('dec_glu', [gate.ptr, up.ptr, gate.ptr, code], gate.rows * gate.cols, 4);
        x = linear(gate, layer.down, x);
      } else {
        x = linear(linear(m, layer.fc), layer.proj, x);
      }
    }
    // only the last row goes on: the next token is chosen from its logits alone
    const last = n > 1 ? backend.rows(x, backend.upload(Uint32Array.of(n - 1)), 1) : x;
    const logits = linear(norm(last, 1, model.final_norm), model.lm_head);
    const out = await backend.output(logits);
    length = start + n;
    return out.data;
  }

  return {
    forward,
    close() {
      if (!closed) backend.release(cache);
      closed = true;
    },
  };
}

function abortError() {
  return new DOMException('generate() was aborted (its signal fired)', 'AbortError');
}

/**
 * Generate up to `maxNewTokens` tokens after `promptIds` (batch 1): prefill, then a cached step
 * per token. `choose(logits)` picks each token; `onToken(token, index)` hears each at once; the
 * run ends after an `eos` token (kept), at maxNewTokens, or where the next token would need a
 * position past the model's max_position. `pause()` runs between steps (hands the page back);
 * `signal` is checked before the prefill and before each step (AbortError).
 * The passes run through the CPU backend's `io` (decoderForward over a KvCache), or through
 * `pass(ids)` where given (the WebGPU decoder): it resolves to the last row's logits, or to the
 * token itself when it chose on the device (greedy argmax), and `maxPosition` caps the positions
 * it can hold (its cache's slots). Returns {tokens, finish: 'eos' | 'length' | 'max_position', timings}.
 */
export async function generateTokens({ model, io, promptIds, maxNewTokens, choose, eos, onToken = null, signal = null,
  pause = async () => {}, pass = null, maxPosition = model.max_position }) {
  const n = promptIds.length;
  if (n < 1) throw new TypeError('generate: the prompt has no tokens');
  if (n > maxPosition) {
    throw new RangeError(`generate: the prompt has ${n} tokens, more than the model's ${maxPosition} positions`);
  }
  const timings = { prefill_ms: 0, decode_ms: 0, prompt_tokens: n, decode_steps: 0, tokens_per_second: null };
  const tokens = [];
  if (maxNewTokens === 0) return { tokens, finish: 'length', timings };
  if (signal?.aborted) throw abortError();
  const vocab = model.vocab_size;
  let forward = pass;
  let session = null;
  if (!forward && io.session) {
    // every slot the run can fill: the prompt and each new token (positions end at maxPosition)
    session = io.session(model, Math.min(n + Math.min(maxNewTokens ?? Infinity, maxPosition), maxPosition));
    forward = session.forward;
  }
  if (!forward) {
    const cache = new KvCache({ layers: model.num_layers, batch: 1, kvHeads: model.num_kv_heads, headDim: model.head_dim,
      capacity: Math.min(CACHE_START, Math.max(n + maxNewTokens, 1)) });
    forward = async (ids) => {
      const logits = await decoderForward(model, io, cache, ids, null, ids.length);
      return logits.subarray((ids.length - 1) * vocab, ids.length * vocab);
    };
  }
  try {
    return await runSteps({ forward, promptIds, maxNewTokens, choose, eos, onToken, signal, pause, maxPosition, timings, tokens });
  } finally {
    session?.close();
  }
}

async function runSteps({ forward, promptIds, maxNewTokens, choose, eos, onToken, signal, pause, maxPosition, timings, tokens }) {
  const n = promptIds.length;
  const pick = (out) => (typeof out === 'number' ? out : choose(out));
  let t = performance.now();
  let next = await forward(Int32Array.from(promptIds));
  let position = n; // the next token's position
  timings.prefill_ms = performance.now() - t;
  /** @type {'eos' | 'length' | 'max_position'} */
  let finish = 'length';
  t = performance.now();
  for (;;) {
    const token = pick(next);
    tokens.push(token);
    onToken?.(token, tokens.length - 1);
    if (eos.has(token)) { finish = 'eos'; break; }
    if (tokens.length >= maxNewTokens) break;
    if (position >= maxPosition) { finish = 'max_position'; break; }
    await pause();
    if (signal?.aborted) throw abortError();
    next = await forward(Int32Array.of(token));
    position += 1;
    timings.decode_steps += 1;
  }
  timings.decode_ms = performance.now() - t;
  // decode speed: cached steps only (the first token comes from the prefill)
  if (timings.decode_steps > 0 && timings.decode_ms > 0) timings.tokens_per_second = (1000 * timings.decode_steps) / timings.decode_ms;
  return { tokens, finish, timings };
}
