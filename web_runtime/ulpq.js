// ulpq runtime: load a ulpq_build bundle and run it on WebGPU, or on the CPU where WebGPU is
// missing or fails. Every result says which path and shader variant ran, and why.
//
//   import { loadBundle, createBertModel } from './ulpq.js';
//   const model = await loadBundle('./manifest.json', { hardware: 'auto' });
//   const { embeddings, path, variant, notes, timings } = await model.process(['a sentence', 'another']);
//
//   const llm = await loadBundle('./manifest.json');      // a decoder bundle (Llama / GPT-2 style)
//   const { text, tokenIds } = await llm.generate('Once upon a time', { maxNewTokens: 32, onToken: ({ text }) => show(text) });
//
//   const bert = createBertModel('webgpu', { modelId: 'models/minilm-int4', quantization: { bitsPerWeight: 4 } });
//   await bert.initialize();
//   const { embeddings } = await bert.process(['hello world']);

import {
  BundleError, IntegrityError, fetchManifest, fetchShards, fetchVerifiedText, takeIntegrityFailure, tensorTable,
} from './bundle_loader.js';
import { architectureOf, tokenizerFile } from './architectures.js';
import { createCpuBackend } from './cpu_select.js';
import { backendIo, generateTokens } from './decoder_cpu.js';
import { checkGenerateOptions, createRng, pickToken } from './generate.js';
import { GpuUnavailable, WeightsFailed, adapterIsCpu, createGpuBackend, webgpuPresence } from './backend_webgpu.js';
import { GpuDecoder } from './decoder_webgpu.js';
import { linear as opsLinear } from './ops_cpu.js';
import { checkOptions, slices } from './inputs.js';
import { WordPieceTokenizer } from './tokenizer.js';
import { clearWeightCache } from './weight_cache.js';

export { BundleError, IntegrityError, GpuUnavailable, WordPieceTokenizer };

// Output columns of one matrix product that the WebGPU self-test compares with the CPU.
const SELF_TEST_OUTPUTS = 64;
const MODEL_OPTIONS = ['hardware', 'profile', 'onProgress', 'poison', 'selfTest', 'cpu', 'threads', 'cache', 'expected'];
const FACTORY_OPTIONS = ['modelId', 'quantization', 'profile', 'onProgress', 'poison', 'selfTest', 'cpu', 'threads', 'cache'];
// The CPU path runs a batch in slices of about this many matrix-product rows and hands the page
// back between slices, so a long batch does not freeze it (decoding a weight row costs about one
// row of products, so much smaller slices would slow the run down).
const CPU_SLICE_ROWS = 64;
const DISPOSED = 'UlpqModel: model disposed (dispose() was called); load the bundle again to run it';

/** A macrotask: lets the page handle input, timers and rendering before the next CPU slice. */
const yieldToPage = () => new Promise((resolve) => { setTimeout(resolve, 0); });

/**
 * A macrotask without setTimeout's 4 ms clamp on nested calls: between decode steps the page
 * renders the streamed text and handles input, without capping tokens per second.
 */
const yieldBetweenSteps = () => new Promise((resolve) => {
  if (typeof MessageChannel !== 'function') { setTimeout(resolve, 0); return; }
  const channel = new MessageChannel();
  channel.port1.onmessage = () => { channel.port1.close(); resolve(); };
  channel.port2.postMessage(null);
});

const isIntegrityError = (err) => err instanceof IntegrityError || err?.name === 'IntegrityError';

function softmax(row) {
  const max = Math.max(...row);
  const exps = row.map((v) => Math.exp(v - max));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / total);
}

export class UlpqModel {
  /** @type {Promise<unknown>} */
  #queue = Promise.resolve();
  #init = null;
  #ready = false;
  #disposed = false;
  #disposing = null;
  #gpuFailure = null;
  #progressFailed = false;
  /** @type {import('./architectures.js').Architecture | null} the row of the bundle's architecture, once its manifest is read */
  #architecture = null;

  /**
   * @param {string|URL} manifestUrl  the bundle's manifest.json
   * @param {object} options  hardware: 'auto' | 'webgpu' | 'cpu'; profile: force a browser profile
   *   ('firefox', 'chrome', 'safari', 'edge'); onProgress({phase, file, loaded, total, source}), where
   *   source ('cache' | 'network') says where a 'weights' event's bytes came from and the 'verified'
   *   event carries `cache` (see WeightCacheReport at clearCache below);
   *   cache (default true): keep verified weight shards in the browser's Cache API and take them from
   *   there on the next load (false: always download, store nothing);
   *   poison: fill GPU outputs with NaN before each run (tests); selfTest (default true): check the
   *   chosen WebGPU variant against the CPU on a known product before the first real run;
   *   cpu: null (WebAssembly where it runs, else plain JS), 'wasm' or 'js'; threads: cap on CPU workers.
   *   Unknown keys and ill-typed values are a TypeError here, not at initialize().
   */
  constructor(manifestUrl, options = {}) {
    checkOptions(options, MODEL_OPTIONS, 'UlpqModel');
    const { hardware = 'auto', profile = null, onProgress = null, poison = false, selfTest = true, cpu = null, threads,
      cache = true, expected = null } = options;
    if (typeof manifestUrl !== 'string' && !(manifestUrl instanceof URL)) {
      throw new TypeError(`UlpqModel: manifestUrl must be a string or URL (the bundle's manifest.json), not ${typeof manifestUrl}`);
    }
    this.manifestUrl = new URL(manifestUrl, globalThis.location?.href);
    this.options = { hardware, profile, onProgress, poison, selfTest, cpu, threads, cache, expected };
    this.manifest = null;
    this.tensors = null;
    this.backend = null;
    this.decoder = null; // a decoder bundle's GpuDecoder (its KV cache) on the WebGPU path
    this.variant = null;
    this.notes = [];
    this.webgpu = webgpuPresence();
    this.timings = {};
    this.tokenizer = null;
    this.cache = null; // the last load's WeightCacheReport
  }

  /**
   * Runs `task` after every earlier call on this model: a model's backend keeps per-shape buffers, runs must not interleave.
   * @template T
   * @param {() => T | PromiseLike<T>} task
   * @returns {Promise<T>}
   */
  #enqueue(task) {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => {});
    return run;
  }

  #throwIfDisposed() {
    if (this.#disposed) throw new Error(DISPOSED);
  }

  /** Fetch and verify the bundle and start a backend. Calling it again returns the same load. */
  initialize() {
    if (this.#disposed) return Promise.reject(new Error(DISPOSED));
    if (!this.#init) {
      this.#init = this.#enqueue(() => this.#load());
      this.#init.catch(() => { this.#init = null; }); // a failed load may be retried
    }
    return this.#init;
  }

  async #load() {
    this.#throwIfDisposed();
    const t0 = performance.now();
    this.manifest = await fetchManifest(this.manifestUrl);
    this.#architecture = architectureOf(this.manifest.model); // checkManifest refused any other name
    this.#checkProfile();
    this.#checkExpected();
    let weightsIn = 0; // when the last shard was in memory and verified
    const tensors = fetchShards(this.manifest, this.manifestUrl, (event) => this.#weightsProgress(event),
      { cache: this.options.cache }).then((shards) => {
      weightsIn = performance.now();
      return tensorTable(this.manifest, shards);
    });
    // The backend and the tokenizer start now, not once the weights are in: WebGPU's device
    // creation, shader fetches and pipeline compiles (tens of ms to seconds; CPU adapters compile
    // slowest) need only the manifest, so they run while the shards download. Only the upload
    // waits for the weights.
    const backend = this.#selectBackend(tensors);
    const tokenizer = this.#loadTokenizer();
    backend.catch(() => {}); // awaited below, or after a failed download (which is the error reported)
    tokenizer.catch(() => {});
    try {
      this.tensors = await tensors;
      await tokenizer;
    } catch (err) {
      await backend.catch(() => {}); // settled (a device made meanwhile is released) before the load fails
      this.#release();
      throw err;
    }
    // load: until the weights are in memory; init: from then until the model is ready (what the
    // backend and the tokenizer still had to do once the weights were in)
    this.timings.load_ms = weightsIn - t0;
    await backend;
    await this.#warmUp();
    this.timings.init_ms = performance.now() - weightsIn;
    if (this.#disposed) {
      this.#release();
      throw new Error(DISPOSED);
    }
    this.#ready = true;
    this.#progress({ phase: 'ready', file: null, loaded: 1, total: 1 });
    return this;
  }

  /** The 'verified' event carries the weight cache's report: keep it, and its notes. */
  #weightsProgress(event) {
    if (event.cache) {
      this.cache = event.cache;
      for (const note of event.cache.notes) if (!this.notes.includes(note)) this.notes.push(note);
    }
    this.#progress(event);
  }

  /** A caller's progress handler that throws must not break the load: warn once, note it, go on. */
  #progress(event) {
    const handler = this.options.onProgress;
    if (!handler) return;
    try {
      handler(event);
    } catch (err) {
      if (this.#progressFailed) return;
      this.#progressFailed = true;
      const note = `onProgress threw (${err?.name ?? 'Error'}: ${err?.message ?? err}); its later errors are ignored and loading went on`;
      this.notes.push(note);
      console.warn(`ulpq: ${note}`);
    }
  }

  /** An unknown profile name is only known once the manifest is here: the same TypeError on every path. */
  #checkProfile() {
    const { profile } = this.options;
    const names = this.manifest.profiles.map((p) => p.name);
    if (profile !== null && !names.includes(profile)) {
      throw new TypeError(`UlpqModel: option profile '${profile}' is unknown; this bundle has ${names.join(', ')}`);
    }
  }

  /** A caller that asked for a quantization is told when the bundle was built with another one. */
  #checkExpected() {
    const wanted = this.options.expected;
    const built = this.manifest.quantization;
    if (!wanted || !built) return;
    const bits = Number(wanted.bitsPerWeight ?? wanted.bits ?? NaN);
    const format = wanted.format ?? built.default.format;
    const builtBits = this.manifest.formats[built.default.format]?.bits;
    if ((!Number.isNaN(bits) && bits !== builtBits) || format !== built.default.format) {
      this.notes.push(`requested quantization ${JSON.stringify(wanted)}, but this bundle was built as ${built.default.format} `
        + `(${built.quantized_bits_per_weight} bits per weight); quantization is applied when the bundle is built`);
    }
  }

  /** A text model's tokenizer, from the file its architecture's row reads (checkManifest made sure one is listed). */
  async #loadTokenizer() {
    const arch = this.#architecture;
    if (!arch.tokenizer) return;
    const name = tokenizerFile(arch, this.manifest.files.map((f) => f.file));
    const text = await fetchVerifiedText(this.manifestUrl, name, this.manifest.files.find((f) => f.file === name).sha256);
    try {
      this.tokenizer = arch.tokenizer.read(name, text, this.manifest.model);
    } catch (err) {
      throw new BundleError(`${name}: ${err.message}; rebuild the bundle`);
    }
  }

  /** @param {Promise<Map<string, any>>} tensors the weights, still downloading (the WebGPU path starts without them) */
  async #selectBackend(tensors) {
    const { hardware } = this.options;
    if (hardware === 'cpu') {
      this.notes.push('CPU path requested');
      await this.#useCpu(await tensors);
      return;
    }
    if (hardware === 'auto' && this.#architecture.decoder && await adapterIsCpu()) {
      // A decode step is a few hundred small dispatches: on a CPU implementation of WebGPU
      // (SwiftShader, lavapipe) generation ran 40-370x slower than on the CPU path's wasm
      // kernels (docs/benchmarks.md). hardware 'webgpu' still runs it there.
      this.notes.push('the WebGPU adapter is a CPU implementation: a decoder generates faster on the CPU path (hardware \'webgpu\' runs it on WebGPU anyway)');
      await this.#useCpu(await tensors);
      return;
    }
    try {
      await this.#useGpu(tensors);
    } catch (err) {
      if (hardware === 'webgpu' || isIntegrityError(err) || err instanceof WeightsFailed) throw err;
      this.notes.push(`WebGPU path unavailable (${err.message}); running on the CPU`);
      await this.#useCpu(await tensors);
    }
  }

  /**
   * A fresh WebGPU backend. A tampered file is never a reason to try another path: any
   * IntegrityError met on the way (even one a variant loop turned into a note) stops it.
   * Other failures come out as GpuUnavailable.
   * @param {Map<string, any> | Promise<Map<string, any>>} tensors the weights, or their download still under way
   */
  async #useGpu(tensors) {
    const { profile, poison, selfTest } = this.options;
    takeIntegrityFailure(this.manifestUrl); // forget an earlier model's
    let gpu;
    try {
      gpu = await createGpuBackend(this.manifest, tensors, this.manifestUrl,
        { profile, poison, selfTest: selfTest ? (backend) => this.#selfTest(backend) : null, prepare: (backend) => this.#prepare(backend) });
    } catch (err) {
      if (isIntegrityError(err) || err instanceof WeightsFailed) throw err;
      throw takeIntegrityFailure(this.manifestUrl) ?? asGpuUnavailable(err);
    }
    const tampered = takeIntegrityFailure(this.manifestUrl);
    if (tampered) {
      destroyQuietly(gpu.backend);
      throw tampered;
    }
    if (this.#architecture.decoder) {
      // the KV cache and the scratch buffers of the decoder graph, made once per device
      try {
        this.decoder = new GpuDecoder(gpu.backend, this.manifest.model);
      } catch (err) {
        destroyQuietly(gpu.backend);
        throw asGpuUnavailable(err);
      }
    }
    this.backend = gpu.backend;
    this.variant = gpu.variant;
    for (const note of gpu.notes) if (!this.notes.includes(note)) this.notes.push(note);
  }

  async #useCpu(tensors) {
    // the kernel binaries lie beside this bundle's manifest, not beside the runtime module (one
    // runtime may load several bundles, or be served from elsewhere)
    const cpu = await createCpuBackend(this.manifest, tensors, { ...this.options, baseUrl: this.manifestUrl });
    this.backend = cpu.backend;
    this.notes.push(...cpu.notes);
    this.variant = null;
  }

  /**
   * Known-answer check of a WebGPU variant before any real run: the model's first linear layer on
   * one row (GEMV) and on three rows (GEMM), against the CPU path over the same packed weights.
   * Silent wrong numbers are what users of browser runtimes report most: a variant that disagrees
   * is refused (the caller tries the next one, then the CPU) and the result says so.
   */
  async #selfTest(backend) {
    const node = findLinear(this.manifest.model);
    if (!node) return;
    // The reference covers SELF_TEST_OUTPUTS output columns spread over the whole matrix (every
    // tile and lane of the GEMV and GEMM grids meets some): decoding all of a BERT-base matrix
    // in JS cost more than the GPU work of initialisation.
    const n = node.out_features;
    const stride = Math.max(1, Math.floor(n / SELF_TEST_OUTPUTS));
    const outputs = [...new Set([...Array(Math.ceil(n / stride)).keys()].map((i) => i * stride).concat(n - 1))];
    const weight = backend.tensors.get(node.weight);
    const bias = node.bias ? backend.tensors.get(node.bias) : null;
    for (const rows of [1, 3]) {
      const x = new Float32Array(rows * node.in_features).map((_, i) => Math.sin(i * 0.37 + rows) * 0.8);
      const r = node.residual ? new Float32Array(rows * n).map((_, i) => Math.cos(i * 0.11)) : null;
      backend.begin();
      const h = backend.input(x, rows, node.in_features);
      const got = await backend.output(backend.linear(h, node, r ? backend.input(r, rows, n) : null));
      const want = opsLinear(x, rows, weight, bias, node.activation, this.manifest.formats, r, outputs);
      let maxErr = 0;
      let maxRef = 0;
      for (let m = 0; m < rows; m++) {
        for (const j of outputs) {
          const i = m * n + j;
          maxErr = Math.max(maxErr, Math.abs(got.data[i] - want[i]) || (Number.isNaN(got.data[i]) ? Infinity : 0));
          maxRef = Math.max(maxRef, Math.abs(want[i]));
        }
      }
      const rel = maxErr / (maxRef || 1);
      if (!(rel <= 1e-3)) throw new Error(`self-test failed: ${node.weight} on ${rows} row(s) differs from the CPU by ${rel.toExponential(2)}`);
    }
  }

  /**
   * One run of a tiny input through the whole process() path (encoding, the graph, the read-back,
   * the result) before the model is ready, on a GPU adapter: every function of that path then has
   * run once, so a page's first process() does not wait for the JS engine to compile them (2-4 ms on
   * the H200, where MiniLM's steady 1x8 run takes 1). Not on CPU adapters (a run costs 100s of ms
   * there, and a first run is bound by its arithmetic anyway), nor on the CPU path.
   */
  async #warmUp() {
    const arch = this.#architecture;
    if (this.backend?.path !== 'webgpu' || !arch.warmInput) return;
    if (/** @type {any} */ (this.backend).profile?.cpu_adapter) return;
    const started = performance.now();
    await this.#run(this.#encode(arch.warmInput(this.manifest.model)), 0);
    const timings = /** @type {any} */ (this.backend)?.initTimings;
    if (timings) timings.warm_up_ms = performance.now() - started; // benchmarks report it with the other stages
  }

  /**
   * Build the GPU work of the input shapes a page is most likely to meet (the architecture row's
   * `shapes`) during initialisation: each shape's steps are recorded and their bind groups and
   * shared buffers made, nothing runs. A first run at such a shape replays; at another shape of the
   * same structure it records and runs on GPU objects that exist.
   */
  async #prepare(backend) {
    const arch = this.#architecture;
    if (!arch.shapes || !arch.sample) return;
    const model = this.manifest.model;
    for (const shape of arch.shapes(model).reverse()) { // largest first: the shared buffers grow once
      try {
        await backend.prepare(() => arch.run(backend, model, arch.sample(model, shape)));
      } catch (err) {
        // an optimisation only: that shape's first run records it (and meets the same error, if any)
        this.notes.push(`the GPU work of input shape ${JSON.stringify(shape)} was not prepared ahead (${err?.message ?? err}); `
          + 'shapes are prepared at their first run instead');
        return;
      }
    }
  }

  /**
   * Check and encode an input for the model's graph (its architecture's row does): {x, rows
   * (matrix-product rows per item), slice(a, b) (the encoding of items a..b-1), notes}.
   */
  #encode(input) {
    const model = this.manifest.model;
    return this.#architecture.encode(model, input, this.tokenizer);
  }

  /**
   * Run the model. Text models take an array of strings and return `embeddings`; image models take
   * an array of ImageData / {width, height, data} and return `logits` and `predictions`; every
   * result has output, shape, path, variant, notes, webgpu and timings. Bad input is a TypeError
   * naming the item, before anything runs. Calls may overlap: they run one after another.
   */
  async process(input) {
    this.#throwIfDisposed();
    if (!this.#init) throw new Error('call initialize() before process()');
    if (!this.#ready) {
      await this.#init;
      this.#throwIfDisposed();
    }
    const t0 = performance.now();
    const job = this.#encode(input);
    const encodeMs = performance.now() - t0;
    return this.#enqueue(() => this.#run(job, encodeMs));
  }

  /**
   * Generate text after `prompt` (a string, or token ids) with a decoder bundle: the prompt in one
   * pass, then one cached step per new token, each streamed through onToken({token, text, index})
   * (`text`: the characters that token completes). Options: maxNewTokens (32), temperature (0:
   * greedy), topK (0: off), topP (1: off), seed (null: a random one, reported), onToken, signal (an
   * AbortSignal: rejects with an AbortError). Stops after an end-of-sequence token (kept), at
   * maxNewTokens, or at the model's last position. Resolves to {text, tokenIds (the new tokens
   * only), promptIds, finishReason, seed, path, variant, notes, webgpu, timings}. A WebGPU failure
   * during the generation (device lost, a failed submit, out of memory): hardware 'auto' generates
   * again from the start on the CPU path with the same seed (path 'cpu', a note, a console warning;
   * onToken hears no index twice), hardware 'webgpu' rejects with GpuUnavailable.
   */
  async generate(prompt, options = {}) {
    this.#throwIfDisposed();
    if (!this.#init) throw new Error('call initialize() before generate()');
    const checked = checkGenerateOptions(options);
    if (!this.#ready) {
      await this.#init;
      this.#throwIfDisposed();
    }
    if (!this.#architecture.decoder) {
      throw new TypeError(`generate() runs generative decoders; this bundle's ${this.manifest.model.architecture} model takes process()`);
    }
    const t0 = performance.now();
    const promptIds = this.#promptIds(prompt);
    const encodeMs = performance.now() - t0;
    return this.#enqueue(() => this.#generate(promptIds, checked, encodeMs));
  }

  /** The prompt's token ids: a string through the bundle's tokenizer, or ids checked against the vocabulary. */
  #promptIds(prompt) {
    const model = this.manifest.model;
    let ids;
    if (typeof prompt === 'string') {
      ids = this.tokenizer.encode(prompt);
    } else if (Array.isArray(prompt) || ArrayBuffer.isView(prompt)) {
      ids = Array.from(/** @type {ArrayLike<number>} */ (prompt));
      const bad = ids.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= model.vocab_size);
      if (bad >= 0) throw new TypeError(`generate: prompt token ${bad} is ${ids[bad]}, not an id in 0..${model.vocab_size - 1}`);
    } else {
      throw new TypeError(`generate: prompt must be a string or an array of token ids, not ${typeof prompt}`);
    }
    if (ids.length === 0 && Number.isInteger(model.bos_token_id)) ids = [model.bos_token_id];
    if (ids.length === 0) throw new TypeError('generate: the prompt encodes to no tokens and the model has no bos token to start from');
    return ids;
  }

  async #generate(promptIds, options, encodeMs) {
    if (!this.backend && this.#disposed) throw new Error(DISPOSED);
    const seed = options.seed ?? Math.floor(Math.random() * 2 ** 32);
    const heard = []; // the tokens onToken has been given, in order (a CPU retry repeats none of them)
    let run;
    let notes = [...this.notes];
    try {
      run = await this.#generateOnce(promptIds, options, seed, notes, heard);
    } catch (err) {
      if (!(err instanceof GpuPassFailure)) throw err;
      // A GPU failure mid-generation must not lose the user's generation silently: 'auto' runs it
      // again from the start on the CPU path (same seed: the same tokens), 'webgpu' rejects.
      const cause = err.cause;
      // a destroyed device's `lost` may settle after the pass's first error (a failed read-back): wait a little
      const info = await lostInfo(this.backend);
      const said = `${cause?.name ?? 'Error'}: ${cause?.message ?? cause}`;
      const why = info ? `the GPU device was lost (${info.reason ?? 'unknown'}: ${info.message || 'no message'}; the pass said ${said})`
        : said;
      if (this.options.hardware === 'webgpu') {
        const failed = new GpuUnavailable(`WebGPU generation failed after ${heard.length} token(s) (${why}); hardware `
          + '\'webgpu\' does not fall back to the CPU: load the model again, or use hardware \'auto\' or \'cpu\'');
        failed.cause = cause;
        throw failed;
      }
      const note = `WebGPU generation failed after ${heard.length} token(s) (${why}); generated again from the start on `
        + 'the CPU path with the same seed (this model runs on the CPU path from now on)';
      console.warn(`ulpq: ${note}`);
      destroyQuietly(this.backend);
      this.backend = null;
      this.decoder = null;
      this.variant = null;
      this.notes.push(note);
      await this.#useCpu(this.tensors);
      notes = [...this.notes];
      run = await this.#generateOnce(promptIds, options, seed, notes, heard);
    }
    return /** @type {import('./types/ulpq.js').GenerateResult} */ ({
      text: this.tokenizer.decode(run.tokens, { skipSpecialTokens: true }), tokenIds: run.tokens, promptIds,
      finishReason: run.finish, seed, path: this.backend.path, variant: this.variant, notes,
      webgpu: this.webgpu, timings: { ...this.timings, encode_ms: encodeMs, ...run.timings },
    });
  }

  /**
   * One generation on the current backend. onToken hears only tokens past `heard` (the ones it was
   * given by an earlier, failed attempt), and a token that differs from what it heard, with a note.
   * A failure inside a WebGPU pass comes out as GpuPassFailure; anything else (abort, onToken's
   * own errors) as it is.
   */
  async #generateOnce(promptIds, options, seed, notes, heard) {
    const model = this.manifest.model;
    const random = createRng(seed);
    const stream = this.tokenizer.decodeStream({ skipSpecialTokens: true });
    const onToken = options.onToken;
    const gpu = this.backend.path === 'webgpu' ? this.decoder : null;
    let pass = null;
    if (gpu) {
      // greedy: the argmax on the GPU, 4 bytes back per token; sampling: the logits row back, drawn here
      gpu.reset();
      const greedy = options.temperature === 0;
      // The first pass is the prompt's; greedy steps after it keep one step in flight
      // (GpuDecoder.next), except where the pass just made yields the last token wanted.
      let passes = 0;
      pass = async (ids) => {
        try {
          passes += 1;
          if (greedy && passes > 1) return await gpu.next(ids[0], passes < options.maxNewTokens);
          return await gpu.forward(ids, greedy);
        } catch (err) {
          throw new GpuPassFailure(err);
        }
      };
      if (gpu.capacity < model.max_position && promptIds.length + options.maxNewTokens > gpu.capacity) {
        notes.push(`the WebGPU KV cache holds ${gpu.capacity} positions of the model's ${model.max_position}; generation ends there`);
      }
    }
    const retried = heard.length;
    let diverged = false;
    const hear = (token, index) => {
      const text = stream.step(token); // every token goes through the stream, so its text stays whole
      if (index < retried && !diverged) {
        if (heard[index] === token) return;
        diverged = true;
        notes.push(`the CPU path's token ${index} differs from the one WebGPU streamed before it failed; onToken hears the tokens again from there`);
      }
      heard[index] = token;
      onToken?.({ token, index, text });
    };
    return generateTokens({
      model, io: gpu ? null : backendIo(this.backend, this.tensors), promptIds, maxNewTokens: options.maxNewTokens,
      choose: (logits) => pickToken(logits, options, random), eos: new Set(model.eos_token_ids),
      onToken: hear, signal: options.signal, pause: yieldBetweenSteps, pass, maxPosition: gpu ? gpu.capacity : model.max_position,
    });
  }

  async #run(job, encodeMs) {
    // Calls made before dispose() still run (dispose waits for them); only release ends them.
    if (!this.backend && this.#disposed) throw new Error(DISPOSED);
    if (this.#gpuFailure) throw this.#gpuFailure;
    const model = this.manifest.model;
    const t1 = performance.now();
    const result = this.backend.path === 'webgpu' ? await this.#runGpu(job) : await this.#runCpu(job);
    const runMs = performance.now() - t1;
    const output = [];
    for (let r = 0; r < result.rows; r++) output.push(Array.from(result.data.subarray(r * result.cols, (r + 1) * result.cols)));
    /** @type {import('./types/ulpq.js').AnyResult} */
    const out = {
      output, shape: [result.rows, result.cols], path: /** @type {'webgpu' | 'cpu'} */ (this.backend.path), variant: this.variant, notes: [...this.notes, ...job.notes],
      webgpu: this.webgpu, timings: /** @type {import('./types/ulpq.js').Timings} */ ({ ...this.timings, encode_ms: encodeMs, run_ms: runMs }), cache: this.cache,
    };
    if (model.output === 'embeddings') out.embeddings = output;
    if (model.output === 'logits') {
      out.logits = output;
      out.predictions = output.map((row) => {
        const p = softmax(row);
        const index = p.indexOf(Math.max(...p));
        return { index, label: model.labels[index] ?? String(index), probability: p[index] };
      });
    }
    this.#architecture.output(out, job);
    return out;
  }

  async #graph(backend, x) {
    const model = this.manifest.model;
    return this.#architecture.run(backend, model, x);
  }

  /** The CPU path, a slice of the batch at a time with the page handed back in between. */
  async #runCpu(job) {
    const parts = [];
    const ranges = slices(job.rows, CPU_SLICE_ROWS);
    for (const [i, [a, b]] of ranges.entries()) {
      if (i > 0) await yieldToPage();
      parts.push(await this.#graph(this.backend, ranges.length === 1 ? job.x : job.slice(a, b)));
    }
    if (parts.length === 1) return parts[0];
    const cols = parts[0].cols;
    const rows = parts.reduce((n, p) => n + p.rows, 0);
    const data = new Float32Array(rows * cols);
    let at = 0;
    for (const p of parts) { data.set(p.data.subarray(0, p.rows * cols), at); at += p.rows * cols; }
    return { data, rows, cols };
  }

  /**
   * The WebGPU path. A lost device or a failed run gets one fresh device; if that fails too,
   * 'auto' answers from the CPU (with a note) and 'webgpu' throws GpuUnavailable, then and on
   * every later call. Tampered files stay IntegrityError.
   */
  async #runGpu(job) {
    let why;
    const lost = /** @type {{lost: GPUDeviceLostInfo | null}} */ (this.backend).lost;
    if (lost) {
      why = `the GPU device was lost (${lost.reason ?? 'unknown'}: ${lost.message || 'no message'})`;
    } else {
      try {
        return await this.#graph(this.backend, job.x);
      } catch (err) {
        if (isIntegrityError(err)) throw err;
        const info = await lostInfo(this.backend);
        why = info ? `the GPU device was lost (${info.reason ?? 'unknown'}: ${info.message || 'no message'}; the run said `
          + `${err?.message ?? err})` : `${err?.name ?? 'Error'}: ${err?.message ?? err}`;
      }
    }
    destroyQuietly(this.backend);
    this.backend = null;
    try {
      await this.#useGpu(this.tensors);
      const result = await this.#graph(this.backend, job.x);
      this.notes.push(`WebGPU run failed (${why}); recreated the WebGPU device and ran again`);
      return result;
    } catch (err) {
      if (isIntegrityError(err)) throw err;
      destroyQuietly(this.backend);
      this.backend = null;
      this.variant = null;
      if (this.options.hardware === 'webgpu') {
        this.#gpuFailure = new GpuUnavailable(`WebGPU run failed (${why}) and a fresh device failed too (${err?.message ?? err}); `
          + 'this model cannot run on WebGPU any more: load it again, or use hardware \'auto\' or \'cpu\'');
        throw this.#gpuFailure;
      }
      // Never fail silently: say the GPU failed, then answer from the CPU.
      this.notes.push(`WebGPU run failed (${why}), and again on a fresh device (${err?.message ?? err}); switched to the CPU path`);
      await this.#useCpu(this.tensors);
      return this.#runCpu(job);
    }
  }

  /**
   * Free the model: the GPU device and its buffers, the weights, the tokenizer. Runs already
   * queued finish first; later calls throw 'model disposed'. Safe to call twice.
   */
  dispose() {
    if (!this.#disposing) {
      this.#disposed = true;
      const release = () => this.#release();
      this.#disposing = this.#queue.then(release, release);
    }
    return this.#disposing;
  }

  #release() {
    destroyQuietly(this.backend);
    this.backend = null;
    this.tensors = null;
    this.tokenizer = null;
  }
}

/** A WebGPU decoder pass that threw (device lost, a failed submit or read-back, out of memory): `cause`. */
class GpuPassFailure extends Error {
  constructor(cause) {
    super(`WebGPU pass failed: ${cause?.message ?? cause}`);
    this.name = 'GpuPassFailure';
    this.cause = cause;
  }
}

function asGpuUnavailable(err) {
  if (err instanceof GpuUnavailable) return err;
  const wrapped = new GpuUnavailable(`WebGPU failed (${err?.name ?? 'Error'}: ${err?.message ?? err})`);
  wrapped.cause = err;
  return wrapped;
}

/**
 * The GPUDeviceLostInfo behind a failed run, or null. A destroyed device's `lost` settles some
 * time after the run's first error (Firefox reports an invalid buffer first), so wait a little.
 */
async function lostInfo(backend) {
  if (backend.lost) return backend.lost;
  const lost = backend.device?.lost;
  if (!lost) return null;
  return Promise.race([lost, new Promise((resolve) => { setTimeout(() => resolve(null), 1000); })]);
}

function destroyQuietly(backend) {
  try {
    backend?.destroy?.();
  } catch (err) {
    console.warn(`ulpq: releasing the backend failed (${err.message})`);
  }
}

function findLinear(tree) {
  if (Array.isArray(tree)) {
    for (const item of tree) { const found = findLinear(item); if (found) return found; }
  } else if (tree && typeof tree === 'object') {
    if ('in_features' in tree) return tree;
    for (const [key, value] of Object.entries(tree)) {
      if (key === 'kernels') continue;
      const found = findLinear(value);
      if (found) return found;
    }
  }
  return null;
}

/** Fetch, verify and initialize a bundle in one call. */
export async function loadBundle(manifestUrl, options = {}) {
  const model = new UlpqModel(manifestUrl, options);
  return model.initialize();
}

function manifestFor(modelId) {
  const url = String(modelId ?? '.');
  return url.endsWith('.json') ? url : `${url.replace(/\/?$/, '/')}manifest.json`;
}

/**
 * The original SDK's shape: createBertModel(hardware, {modelId, quantization}) then initialize() and
 * process(). `modelId` is a bundle folder URL (or its manifest.json); `quantization` states what the
 * caller expects ({bitsPerWeight, format}); a bundle built otherwise says so in the result's notes.
 */
export function createBertModel(hardware, options = {}) {
  const { modelId, quantization = null, ...rest } = checkOptions(options, FACTORY_OPTIONS, 'createBertModel');
  return new UlpqModel(manifestFor(modelId), { ...rest, hardware, expected: quantization });
}

export function createVitModel(hardware, options = {}) {
  const { modelId, quantization = null, ...rest } = checkOptions(options, FACTORY_OPTIONS, 'createVitModel');
  return new UlpqModel(manifestFor(modelId), { ...rest, hardware, expected: quantization });
}

export const createModel = createBertModel;

/**
 * Delete the weight shards this runtime keeps in the browser's Cache API (cache 'ulpq-weights-v1'):
 * all of them, or with `bundle` (a bundle folder URL or its manifest.json, as for modelId) only
 * that bundle's. Resolves to the number of entries deleted; 0 where there is no Cache API.
 *
 * How loads use the cache (option `cache`, default true): a shard is taken from the cache only if
 * its bytes match the manifest's sha256 again (an entry that does not is deleted and downloaded);
 * only verified bytes are stored; entries are keyed by the bundle folder and the shard's sha256, so
 * a rebuilt bundle never reuses an old entry (and the old build's entries are dropped on its first
 * load). No Cache API (Node.js, pages that are not a secure context) or a full quota is never an
 * error: the weights come from the network, with one console warning and a note.
 *
 * WeightCacheReport, as model.cache, result.cache and the 'verified' progress event's `cache`:
 *   { status: 'on' | 'off' | 'unavailable', cacheBytes: number, networkBytes: number, notes: string[] }
 * status 'off': the caller passed cache: false; 'unavailable': no Cache API here (the reason is in
 * notes, and in the model's notes; file: URLs under Node are never cached and add no note).
 * Progress events: {phase: 'weights', file, loaded, total, source: 'cache' | 'network'} per file
 * (the first 'weights' event has file null and no source), then {phase: 'verified', ..., cache}.
 */
export async function clearCache(bundle = null) {
  if (bundle !== null && typeof bundle !== 'string' && !(bundle instanceof URL)) {
    throw new TypeError(`clearCache: bundle must be null (every bundle) or a string or URL (a bundle folder or its manifest.json), not ${typeof bundle}`);
  }
  return clearWeightCache(bundle === null ? null : new URL('.', new URL(manifestFor(bundle), globalThis.location?.href)).href);
}
