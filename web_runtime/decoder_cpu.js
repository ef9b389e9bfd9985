// Decoder generation on the CPU path: the decoder graph (ops_decoder.js decoderForward) over the
// weights of a CPU backend (cpu_select.js: the wasm kernels where the bundle and engine have them,
// plain JS otherwise), whose `linear` and `embed` are the ones the encoders run, over the packed
// weights as they are. One pass over the prompt (prefill), then one cached pass per new token.

import { ACTIVATIONS } from './ops_cpu.js';
import { KvCache, decoderForward } from './ops_decoder.js';

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

function abortError() {
  return new DOMException('generate() was aborted (its signal fired)', 'AbortError');
}

/**
 * Generate up to `maxNewTokens` tokens after `promptIds` (batch 1): prefill, then a cached step
 * per token. `choose(logits)` picks each token; `onToken(token, index)` hears each at once; the
 * run ends after an `eos` token (kept), at maxNewTokens, or where the next token would need a
 * position past the model's max_position. `pause()` runs between steps (hands the page back);
 * `signal` is checked before the prefill and before each step (AbortError).
 * Returns {tokens, finish: 'eos' | 'length' | 'max_position', timings}.
 */
export async function generateTokens({ model, io, promptIds, maxNewTokens, choose, eos, onToken = null, signal = null,
  pause = async () => {} }) {
  const n = promptIds.length;
  if (n < 1) throw new TypeError('generate: the prompt has no tokens');
  if (n > model.max_position) {
    throw new RangeError(`generate: the prompt has ${n} tokens, more than the model's ${model.max_position} positions`);
  }
  const timings = { prefill_ms: 0, decode_ms: 0, prompt_tokens: n, decode_steps: 0, tokens_per_second: null };
  const tokens = [];
  if (maxNewTokens === 0) return { tokens, finish: 'length', timings };
  if (signal?.aborted) throw abortError();
  const vocab = model.vocab_size;
  const cache = new KvCache({ layers: model.num_layers, batch: 1, kvHeads: model.num_kv_heads, headDim: model.head_dim,
    capacity: Math.min(CACHE_START, Math.max(n + maxNewTokens, 1)) });
  let t = performance.now();
  const logits = await decoderForward(model, io, cache, Int32Array.from(promptIds), null, n);
  let row = logits.subarray((n - 1) * vocab, n * vocab);
  timings.prefill_ms = performance.now() - t;
  /** @type {'eos' | 'length' | 'max_position'} */
  let finish = 'length';
  t = performance.now();
  for (;;) {
    const token = choose(row);
    tokens.push(token);
    onToken?.(token, tokens.length - 1);
    if (eos.has(token)) { finish = 'eos'; break; }
    if (tokens.length >= maxNewTokens) break;
    if (cache.nextPosition[0] >= model.max_position) { finish = 'max_position'; break; }
    await pause();
    if (signal?.aborted) throw abortError();
    row = await decoderForward(model, io, cache, Int32Array.of(token), null, 1);
    timings.decode_steps += 1;
  }
  timings.decode_ms = performance.now() - t;
  // decode speed: cached steps only (the first token comes from the prefill)
  if (timings.decode_steps > 0 && timings.decode_ms > 0) timings.tokens_per_second = (1000 * timings.decode_steps) / timings.decode_ms;
  return { tokens, finish, timings };
}
