// Decoder generation on WebGPU (Llama/Qwen2/Mistral- and GPT-2-style): the decoder graph of
// ops_decoder.js's decoderForward, recorded through the WebGPU backend's plans (backend_webgpu.js)
// so each pass is one replayed sequence of dispatches. The KV cache of every layer lives in one GPU
// buffer per K and V, made once per model and never read back: the prefill writes the prompt's
// slots, each decode step appends one. Two plans serve a generation: the prefill at the prompt's
// length (GEMM where the rows pass the GEMV threshold, as encoders) and the decode step (GEMVs),
// recorded once and replayed for every token; what changes per token (the cache slot, the
// position) is a 4-byte input and the params of the cache and attention steps, rewritten in place
// (no buffer, bind group or pipeline is made per token). Greedy decoding takes the argmax on the
// GPU and reads back 4 bytes; sampling reads back the last row's logits.

import { argmaxSplit, decodeChunks } from './dispatch.js';
import { qkvInputs, qkvNodes, qkvUnsupported } from './decoder_qkv.js';

// Slots of the cache: the model's positions, capped (a real checkpoint's 32k-131k positions would
// take gigabytes: Llama-3.2-1B keeps 64 KiB of K and V per slot, so 4096 slots are 256 MiB) and
// cut to what one storage binding holds (every layer's keys are one buffer bound whole).
export const CACHE_CAP = 4096;

export class GpuUnfusable extends Error {
  constructor(message) { super(message); this.name = 'GpuUnfusable'; }
}

export class GpuDecoder {
  /** @param backend a GpuBackend over a decoder bundle; @param model manifest.model */
  constructor(backend, model) {
    this.backend = backend;
    this.model = model;
    for (const layer of model.layers) {
      const why = qkvUnsupported(backend, layer);
      if (why) throw new GpuUnfusable(why);
    }
    const { num_layers: layers, num_kv_heads: kv, head_dim: d } = model;
    const limits = backend.device.limits;
    const perSlot = layers * kv * d * 4; // bytes of K (and of V) per cache slot, every layer
    const fit = Math.floor(Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize) / perSlot);
    this.capacity = Math.min(model.max_position, CACHE_CAP, fit);
    if (this.capacity < 2) throw new Error(`a KV cache of ${perSlot} bytes per slot does not fit this device's storage bindings`);
    this.kCache = backend.storageBuffer(perSlot * this.capacity, 'k cache');
    this.vCache = backend.storageBuffer(perSlot * this.capacity, 'v cache');
    // batch 1, no padding: every slot is a token; the causal bound keeps a query off later slots
    this.keep = backend.storageBuffer(this.capacity * 4, 'keep', new Float32Array(this.capacity).fill(1));
    this.invFreq = model.positions.kind === 'rotary'
      ? backend.storageBuffer(model.positions.inv_freq.length * 4, 'inv_freq', Float32Array.from(model.positions.inv_freq))
      : null;
    const rows = 1;
    const [chunk, chunks] = decodeChunks(backend.operatorShader('attention_decode'), this.capacity, kv, rows,
      backend.manifest.matmul.split_target_workgroups);
    // the split decode attention at a full cache: its part buffers are sized for these many chunks;
    // each step cuts the slots it attends over afresh (#split), so a short context is not spread
    // over thousands of empty slots
    this.chunk = chunk;
    this.chunks = chunks;
    this.splitTarget = backend.manifest.matmul.split_target_workgroups;
    // second outputs of two kernels (the running (max, sum) of attention chunks, the argmax parts'
    // columns): fixed scratch buffers, rewritten wholly by each use
    this.partMl = backend.storageBuffer(rows * model.num_heads * this.chunks * 2 * 4, 'attention part_ml');
    const [argmaxParts, argmaxSpan] = argmaxSplit(backend.operatorShader('argmax_parts'), model.vocab_size);
    this.argmaxParts = argmaxParts; // the first argmax stage's parts per row, each over argmaxSpan columns
    this.argmaxSpan = argmaxSpan;
    this.partIndex = backend.storageBuffer(rows * this.argmaxParts * 4, 'argmax part_index');
    // a decode step's append + attention + combine as one dispatch while the cache is short
    // (kernels.py: step_attention_fits); absent in bundles built before it
    this.stepAttention = backend.manifest.model.op_kernels?.[backend.profile.name]?.attention_step
      ? backend.operatorShader('attention_step') : null;
    this.length = 0; // slots filled
  }

  /** Start a new sequence: the cache's slots are overwritten from slot 0. */
  reset() {
    this.length = 0;
    this.ahead = null; // a step in flight nobody will take: it ends on its own, its slot is rewritten
  }

  /**
   * One pass over `ids` (the prompt, or the last token) after the cached ones: resolves to the next
   * token (greedy: the argmax, on the GPU) or to the last row's logits (Float32Array [vocab]).
   */
  async forward(ids, greedy) {
    this.#dropAhead();
    return this.#submit(Array.from(ids), greedy);
  }

  /**
   * The greedy decode step after `token`, the token the previous pass chose: submitted (unless it
   * already is), then the step after it at once, before this one is read back. That one takes its
   * token from the device (each step's argmax is also copied into the step plan's ids input), so
   * the GPU runs it while JavaScript reads this token back, hands it out and records the next
   * graph, instead of idling through all of that every token. The step in flight becomes the next
   * call's, or is dropped by forward()/reset() (its cache slot is written again later): at most
   * one step is wasted, after an eos, and none where `more` says the caller stops after this one.
   */
  async next(token, more = true) {
    const current = this.ahead ?? this.#submit([token], true);
    this.ahead = null;
    // `more`: the caller may want the token after this one. Timing mode reads its timestamps
    // between runs; the last slot has no step after it.
    if (more && !this.backend.timing && this.length > 0 && this.length < this.capacity) {
      this.ahead = this.#submit(null, true);
      this.ahead.catch(() => {}); // its failure reaches the call that takes it; untaken, it must not go unhandled
    }
    return current;
  }

  /**
   * The decode attention's cut of the `slots` filled (dispatch.js's rule, as at a full cache): its
   * chunk length and count, within the chunks the part buffers hold.
   */
  #split(slots) {
    const [chunk, chunks] = decodeChunks(this.backend.operatorShader('attention_decode'), slots, this.model.num_kv_heads, 1,
      this.splitTarget);
    return chunks <= this.chunks ? { chunk, chunks } : { chunk: this.chunk, chunks: this.chunks };
  }

  /**
   * Does the one-dispatch step attention serve a step at slot `start` (kernels.py: step_attention_fits)?
   * While the new token's slot is within the kernel's workgroup-memory scores; a longer cache takes
   * the append, the split attention and the combine (so does a layer whose Q, K, V are three products).
   */
  #stepFits(start) {
    const t = this.stepAttention?.tiles;
    return Boolean(t) && start < t.max_slots && this.model.head_dim <= t.max_dim;
  }

  #dropAhead() {
    if (!this.ahead) return;
    this.ahead = null;
    this.length -= 1; // its slot is free again
  }

  /**
   * Record (or replay) the pass and submit it; resolves as forward() does. `ids` null: a decode
   * step whose token is already on the device (see next()).
   */
  #submit(ids, greedy) {
    const onDevice = ids === null;
    const n = onDevice ? 1 : ids.length;
    const start = this.length;
    if (start + n > this.capacity) throw new RangeError(`the KV cache holds ${this.capacity} slots; ${start + n} requested`);
    const b = this.backend;
    const model = this.model;
    const { num_heads: heads, num_kv_heads: kv, head_dim: d, hidden_size: hidden } = model;
    // a step takes the one-dispatch attention while the cache is short, the three-kernel one after:
    // two recordings, so two plans
    const oneDispatch = n === 1 && this.#stepFits(start);
    b.begin(`decoder:${start === 0 ? `prefill:${n}` : (oneDispatch ? 'step' : 'step:long')}:${greedy ? 'argmax' : 'logits'}`);
    const step = start > 0 && n === 1;
    const idsValue = onDevice ? b.inputOnDevice(1, 1, 4) : b.upload(Uint32Array.from(ids));
    const positions = b.upload(Uint32Array.from({ length: n }, (_, i) => start + i));
    let x = b.embed(model.embeddings.word, idsValue, n);
    if (model.positions.kind === 'learned') b.embed(model.embeddings.position, positions, n, x);
    const norm = (h, node, rows = n) => {
      const dims = { rows, cols: hidden, eps: model.norm_eps };
      const gamma = b.weights.get(node.weight).codes;
      return model.norm === 'rms' ? b.operator('rmsnorm', 'norm', { x: h, gamma }, dims, rows, hidden)
        : b.operator('layernorm', 'norm', { x: h, gamma, beta: b.weights.get(node.bias).codes }, dims, rows, hidden);
    };
    // An RMSNorm before products that all run as GEMVs with the norm fused in (a decode step's, and a
    // short prompt's) costs no dispatch of its own: each product sums x^2 from the x it reads anyway.
    // Returns [input, prologue] for those products: the rows and the norm to fuse, or the normed rows.
    const normFor = (h, normNode, nodes, rows = n) => (model.norm === 'rms' && nodes.every((node) => b.fuses(node, rows, 'norm'))
      ? [h, b.normPrologue(normNode.weight, model.norm_eps)] : [norm(h, normNode, rows), null]);
    const cacheDims = { rows: n, seq: n, heads, kv_heads: kv, head_dim: d, start, capacity: this.capacity };
    const layerSize = kv * this.capacity * d;
    const prefill = start === 0 && n > 1;
    let split = null; // the split attention's cut, worked out only for a step whose layer takes it
    for (const [i, layer] of model.layers.entries()) {
      const cacheOff = i * layerSize;
      const [a, pre] = normFor(x, layer.attn_norm, qkvNodes(layer));
      const qkv = qkvInputs(b, a, layer, pre); // one fused product, or three (decoder_qkv.js)
      let context;
      if (oneDispatch && qkv.role === 'cache_append') { // over the fused Q|K|V product only
        // the append, the attention and the combine in one dispatch (the group's first head appends)
        const resources = { qkv: qkv.resources.qkv, k_cache: this.kCache, v_cache: this.vCache, keep: this.keep };
        if (this.invFreq) Object.assign(resources, { positions, inv_freq: this.invFreq });
        context = b.operator('step_attention', 'attention_step', resources, { rows: n, heads, kv_heads: kv, head_dim: d,
          scale: 1 / Math.sqrt(d), start, capacity: this.capacity, cache_off: cacheOff }, n, heads * d);
      } else {
        const appendResources = { ...qkv.resources, k_cache: this.kCache, v_cache: this.vCache };
        if (this.invFreq) Object.assign(appendResources, { positions, inv_freq: this.invFreq });
        const q = b.operator('cache_append', qkv.role, appendResources,
          { ...cacheDims, cache_off: cacheOff, count: n * (heads + 2 * kv) * (d / 2) }, n, heads * d, 'q');
        const attention = { ...cacheDims, scale: 1 / Math.sqrt(d), q_stride: heads * d, q_off: 0, cache_off: cacheOff };
        const read = { q, k_cache: this.kCache, v_cache: this.vCache, keep: this.keep };
        if (prefill) {
          context = b.operator('cache_attention', 'attention_prefill', read, { ...attention, chunk: start + n, chunks: 1 }, n, heads * d);
        } else {
          split ??= this.#split(start + n);
          const parts = b.operator('cache_attention_split', 'attention_decode', { ...read, part_ml: this.partMl },
            { ...attention, chunk: split.chunk, chunks: split.chunks }, n * heads * this.chunks, d, 'part_o');
          context = b.operator('attention_combine', 'attention_combine', { part_o: parts, part_ml: this.partMl },
            { rows: n, heads, head_dim: d, chunks: split.chunks, count: n * heads * d }, n, heads * d);
        }
      }
      x = b.linear(context, layer.attn_out, x);
      if (model.ffn === 'gated') {
        // gate and up are planned without their activation: the down product's gate prologue or the
        // `gated` kernel applies it. One product of both where the backend fused them (its rows:
        // gate's columns, then up's), else two.
        const [m, pre] = normFor(x, layer.mlp_norm, [layer.gate, layer.up]);
        const cols = layer.gate.out_features;
        const both = b.linearGateUp(m, layer, pre);
        const [gate, up] = both ? [both, both] : [b.linear(m, layer.gate, null, pre), b.linear(m, layer.up, null, pre)];
        const [inStride, upOff] = both ? [2 * cols, cols] : [cols, 0];
        if (b.fuses(layer.down, n, 'gate')) {
          x = b.linear(gate, layer.down, x, b.gatePrologue(up, inStride, 0, upOff));
        } else {
          const product = b.operator('gated', 'gate', { gate, up },
            { count: n * cols, cols, in_stride: inStride, gate_off: 0, up_off: upOff }, n, cols);
          x = b.linear(product, layer.down, x);
        }
      } else {
        const [m, pre] = normFor(x, layer.mlp_norm, [layer.fc]);
        x = b.linear(b.linear(m, layer.fc, null, pre), layer.proj, x);
      }
    }
    const last = n === 1 ? x : b.rows(x, b.upload(Uint32Array.of(n - 1)), 1);
    const [head, headNorm] = normFor(last, model.final_norm, [model.lm_head], 1);
    const logits = b.linear(head, model.lm_head, null, headNorm);
    this.length = start + n;
    if (!greedy) return b.submit(logits).result.then((r) => r.data);
    const vocab = model.vocab_size;
    let token;
    if (this.argmaxParts <= 1) {
      token = b.operator('argmax', 'argmax', { x: logits }, { rows: 1, cols: vocab, row_stride: vocab, row_off: 0 }, 1, 1);
    } else {
      const parts = this.argmaxParts;
      const values = b.operator('argmax_parts', 'argmax_parts', { x: logits, part_index: this.partIndex },
        { rows: 1, cols: vocab, row_stride: vocab, row_off: 0, parts, span: this.argmaxSpan }, 1, parts, 'part_value');
      token = b.operator('argmax', 'argmax_finish', { x: values, indices: this.partIndex },
        { rows: 1, cols: parts, row_stride: parts, row_off: 0 }, 1, 1);
    }
    // a decode step's token also goes to its ids input, where the step after it may take it
    return b.submit(token, { feed: step && greedy ? idsValue : null }).result
      .then((out) => new Uint32Array(out.data.buffer, out.data.byteOffset, 1)[0]);
  }
}
