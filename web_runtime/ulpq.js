// ulpq runtime: load a ulpq_build bundle and run it on WebGPU, or on the CPU where WebGPU is
// missing or fails. Every result says which path and shader variant ran, and why.
//
//   import { loadBundle, createBertModel } from './ulpq.js';
//   const model = await loadBundle('./manifest.json', { hardware: 'auto' });
//   const { embeddings, path, variant, notes, timings } = await model.process(['a sentence', 'another']);
//
//   const bert = createBertModel('webgpu', { modelId: 'models/minilm-int4', quantization: { bitsPerWeight: 4 } });
//   await bert.initialize();
//   const { embeddings } = await bert.process(['hello world']);

import { BundleError, IntegrityError, fetchManifest, fetchShards, fetchVerifiedText, tensorTable } from './bundle_loader.js';
import { CpuBackend } from './backend_cpu.js';
import { createCpuBackend } from './cpu_select.js';
import { GpuUnavailable, createGpuBackend, webgpuPresence } from './backend_webgpu.js';
import { GRAPHS, matmulRows, toMatrix } from './graphs.js';
import { preprocessImages } from './images.js';
import { WordPieceTokenizer } from './tokenizer.js';

export { BundleError, IntegrityError, GpuUnavailable, WordPieceTokenizer };

const HARDWARE = ['auto', 'webgpu', 'cpu'];

function softmax(row) {
  const max = Math.max(...row);
  const exps = row.map((v) => Math.exp(v - max));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / total);
}

export class UlpqModel {
  /**
   * @param {string|URL} manifestUrl  the bundle's manifest.json
   * @param {object} options  hardware: 'auto' | 'webgpu' | 'cpu'; profile: force a browser profile
   *   ('firefox', 'chrome', 'safari', 'edge'); onProgress({phase, file, loaded, total});
   *   poison: fill GPU outputs with NaN before each run (tests); selfTest (default true): check the
   *   chosen WebGPU variant against the CPU on a known product before the first real run
   */
  constructor(manifestUrl, { hardware = 'auto', profile = null, onProgress = () => {}, poison = false, selfTest = true,
    expected = null } = {}) {
    if (!HARDWARE.includes(hardware)) throw new TypeError(`hardware must be one of ${HARDWARE.join(', ')}, not '${hardware}'`);
    this.manifestUrl = new URL(manifestUrl, globalThis.location?.href);
    this.options = { hardware, profile, onProgress, poison, selfTest, expected };
    this.manifest = null;
    this.backend = null;
    this.variant = null;
    this.notes = [];
    this.webgpu = webgpuPresence();
    this.timings = {};
    this.tokenizer = null;
  }

  async initialize() {
    const t0 = performance.now();
    this.manifest = await fetchManifest(this.manifestUrl);
    const model = this.manifest.model;
    if (!GRAPHS[model.architecture]) throw new BundleError(`architecture '${model.architecture}' is unknown to this runtime`);
    this.#checkExpected();
    const shards = await fetchShards(this.manifest, this.manifestUrl, this.options.onProgress);
    this.tensors = tensorTable(this.manifest, shards);
    if (model.architecture === 'bert') await this.#loadTokenizer();
    const t1 = performance.now();
    this.timings.load_ms = t1 - t0;
    await this.#selectBackend();
    this.timings.init_ms = performance.now() - t1;
    this.options.onProgress({ phase: 'ready', file: null, loaded: 1, total: 1 });
    return this;
  }

  /** A caller that asked for a quantization is told when the bundle was built with another one. */
  #checkExpected() {
    const wanted = this.options.expected;
    if (!wanted) return;
    const built = this.manifest.quantization;
    const bits = Number(wanted.bitsPerWeight ?? wanted.bits ?? NaN);
    const format = wanted.format ?? built.default.format;
    const builtBits = this.manifest.formats[built.default.format]?.bits;
    if ((!Number.isNaN(bits) && bits !== builtBits) || format !== built.default.format) {
      this.notes.push(`requested quantization ${JSON.stringify(wanted)}, but this bundle was built as ${built.default.format} `
        + `(${built.quantized_bits_per_weight} bits per weight); quantization is applied when the bundle is built`);
    }
  }

  async #loadTokenizer() {
    const facts = this.manifest.model.tokenizer;
    const file = (name) => this.manifest.files.find((f) => f.file === name);
    if (file('tokenizer.json')) {
      const text = await fetchVerifiedText(this.manifestUrl, 'tokenizer.json', file('tokenizer.json').sha256);
      this.tokenizer = WordPieceTokenizer.fromTokenizerJson(JSON.parse(text), facts.max_length);
    } else {
      const text = await fetchVerifiedText(this.manifestUrl, 'vocab.txt', file('vocab.txt').sha256);
      this.tokenizer = WordPieceTokenizer.fromVocabTxt(text, { lowercase: facts.lowercase, stripAccents: facts.strip_accents,
        maxLength: facts.max_length });
    }
  }

  async #selectBackend() {
    const { hardware, profile, poison, selfTest } = this.options;
    if (hardware !== 'cpu') {
      try {
        const gpu = await createGpuBackend(this.manifest, this.tensors, this.manifestUrl,
          { profile, poison, selfTest: selfTest ? (backend) => this.#selfTest(backend) : null });
        this.backend = gpu.backend;
        this.variant = gpu.variant;
        this.notes.push(...gpu.notes);
        return;
      } catch (err) {
        if (hardware === 'webgpu') throw err;
        this.notes.push(`WebGPU path unavailable (${err.message}); running on the CPU`);
      }
    } else {
      this.notes.push('CPU path requested');
    }
    const cpu = await createCpuBackend(this.manifest, this.tensors, this.options);
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
    const cpu = new CpuBackend(this.manifest, this.tensors);
    for (const rows of [1, 3]) {
      const x = new Float32Array(rows * node.in_features).map((_, i) => Math.sin(i * 0.37 + rows) * 0.8);
      const r = node.residual ? new Float32Array(rows * node.out_features).map((_, i) => Math.cos(i * 0.11)) : null;
      await backend.prepare([rows]);
      backend.begin();
      const h = backend.input(x, rows, node.in_features);
      const got = await backend.output(backend.linear(h, node, r ? backend.input(r, rows, node.out_features) : null));
      const want = cpu.linear(cpu.input(x, rows, node.in_features), node, r ? cpu.input(r, rows, node.out_features) : null);
      let maxErr = 0;
      let maxRef = 0;
      for (let i = 0; i < want.data.length; i++) {
        maxErr = Math.max(maxErr, Math.abs(got.data[i] - want.data[i]) || (Number.isNaN(got.data[i]) ? Infinity : 0));
        maxRef = Math.max(maxRef, Math.abs(want.data[i]));
      }
      const rel = maxErr / (maxRef || 1);
      if (!(rel <= 1e-3)) throw new Error(`self-test failed: ${node.weight} on ${rows} row(s) differs from the CPU by ${rel.toExponential(2)}`);
    }
  }

  /** Encode the input for the model's graph. */
  #encode(input) {
    const model = this.manifest.model;
    if (model.architecture === 'bert') {
      if (!Array.isArray(input) || input.length === 0 || !input.every((t) => typeof t === 'string')) {
        throw new TypeError('process(input): a text model takes a non-empty array of strings');
      }
      return this.tokenizer.batch(input);
    }
    if (model.architecture === 'vit') return preprocessImages(input, model.preprocess);
    return toMatrix(input, model.input_size);
  }

  /**
   * Run the model. Text models take an array of strings and return `embeddings`; image models take
   * an array of ImageData / {width, height, data} and return `logits` and `predictions`; every
   * result has output, shape, path, variant, notes, webgpu and timings.
   */
  async process(input) {
    if (!this.backend) throw new Error('call initialize() before process()');
    const model = this.manifest.model;
    const t0 = performance.now();
    const x = this.#encode(input);
    const t1 = performance.now();
    let result;
    try {
      await this.backend.prepare?.(matmulRows(model, x));
      result = await GRAPHS[model.architecture](this.backend, model, x);
    } catch (err) {
      if (this.backend.path !== 'webgpu' || this.options.hardware === 'webgpu') throw err;
      // Never fail silently: say the GPU failed, then answer from the CPU.
      this.notes.push(`WebGPU run failed (${err.message}); switched to the CPU path`);
      this.backend.destroy?.();
      const cpu = await createCpuBackend(this.manifest, this.tensors, this.options);
      this.backend = cpu.backend;
      this.notes.push(...cpu.notes);
      this.variant = null;
      result = await GRAPHS[model.architecture](this.backend, model, x);
    }
    const runMs = performance.now() - t1;
    const output = [];
    for (let r = 0; r < result.rows; r++) output.push(Array.from(result.data.subarray(r * result.cols, (r + 1) * result.cols)));
    const out = {
      output, shape: [result.rows, result.cols], path: this.backend.path, variant: this.variant, notes: [...this.notes],
      webgpu: this.webgpu, timings: { ...this.timings, encode_ms: t1 - t0, run_ms: runMs },
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
    if (model.architecture === 'bert') out.tokens = x.lengths;
    return out;
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
export function createBertModel(hardware, { modelId, quantization = null, ...options } = {}) {
  return new UlpqModel(manifestFor(modelId), { ...options, hardware, expected: quantization });
}

export function createVitModel(hardware, { modelId, quantization = null, ...options } = {}) {
  return new UlpqModel(manifestFor(modelId), { ...options, hardware, expected: quantization });
}

export const createModel = createBertModel;
