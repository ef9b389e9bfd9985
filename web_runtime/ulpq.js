// ulpq runtime: load a ulpq_build bundle and run it on WebGPU, or on the CPU where WebGPU is
// missing or fails. Every result says which path and shader variant ran, and why.
//
//   import { loadBundle } from './ulpq.js';
//   const model = await loadBundle('./manifest.json', { hardware: 'auto' });
//   const { output, path, variant, notes, timings } = await model.process([[...], [...]]);

import { BundleError, IntegrityError, fetchManifest, fetchShards, tensorTable } from './bundle_loader.js';
import { CpuBackend } from './backend_cpu.js';
import { GpuUnavailable, createGpuBackend, webgpuPresence } from './backend_webgpu.js';
import { GRAPHS, toMatrix } from './graphs.js';

export { BundleError, IntegrityError, GpuUnavailable };

const HARDWARE = ['auto', 'webgpu', 'cpu'];

export class UlpqModel {
  /**
   * @param {string|URL} manifestUrl  the bundle's manifest.json
   * @param {object} options  hardware: 'auto' | 'webgpu' | 'cpu'; profile: force a browser profile
   *   ('firefox', 'chrome', 'safari', 'edge'); onProgress({phase, file, loaded, total});
   *   poison: fill GPU outputs with NaN before each run (tests)
   */
  constructor(manifestUrl, { hardware = 'auto', profile = null, onProgress = () => {}, poison = false } = {}) {
    if (!HARDWARE.includes(hardware)) throw new TypeError(`hardware must be one of ${HARDWARE.join(', ')}, not '${hardware}'`);
    this.manifestUrl = new URL(manifestUrl, globalThis.location?.href);
    this.options = { hardware, profile, onProgress, poison };
    this.manifest = null;
    this.backend = null;
    this.variant = null;
    this.notes = [];
    this.webgpu = webgpuPresence();
    this.timings = {};
  }

  async initialize() {
    const t0 = performance.now();
    this.manifest = await fetchManifest(this.manifestUrl);
    const shards = await fetchShards(this.manifest, this.manifestUrl, this.options.onProgress);
    this.tensors = tensorTable(this.manifest, shards);
    const t1 = performance.now();
    this.timings.load_ms = t1 - t0;
    if (!GRAPHS[this.manifest.model.architecture]) {
      throw new BundleError(`architecture '${this.manifest.model.architecture}' is unknown to this runtime`);
    }
    await this.#selectBackend();
    this.timings.init_ms = performance.now() - t1;
    this.options.onProgress({ phase: 'ready', file: null, loaded: 1, total: 1 });
    return this;
  }

  async #selectBackend() {
    const { hardware, profile, poison } = this.options;
    if (hardware !== 'cpu') {
      try {
        const gpu = await createGpuBackend(this.manifest, this.tensors, this.manifestUrl, { profile, poison });
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
    this.backend = new CpuBackend(this.manifest, this.tensors);
    this.variant = null;
  }

  /** Run the model on `input` (an array of rows); resolve to {output, shape, path, variant, notes, webgpu, timings}. */
  async process(input) {
    if (!this.backend) throw new Error('call initialize() before process()');
    const model = this.manifest.model;
    const { data, rows } = toMatrix(input, model.input_size);
    const t0 = performance.now();
    let result;
    try {
      await this.backend.prepare?.(rows);
      result = await GRAPHS[model.architecture](this.backend, model, data, rows);
    } catch (err) {
      if (this.backend.path !== 'webgpu' || this.options.hardware === 'webgpu') throw err;
      // Never fail silently: say the GPU failed, then answer from the CPU.
      this.notes.push(`WebGPU run failed (${err.message}); switched to the CPU path`);
      this.backend.destroy?.();
      this.backend = new CpuBackend(this.manifest, this.tensors);
      this.variant = null;
      result = await GRAPHS[model.architecture](this.backend, model, data, rows);
    }
    const runMs = performance.now() - t0;
    const output = [];
    for (let r = 0; r < result.rows; r++) output.push(Array.from(result.data.subarray(r * result.cols, (r + 1) * result.cols)));
    return {
      output,
      shape: [result.rows, result.cols],
      path: this.backend.path,
      variant: this.variant,
      notes: [...this.notes],
      webgpu: this.webgpu,
      timings: { ...this.timings, run_ms: runMs },
    };
  }
}

/** Fetch, verify and initialize a bundle in one call. */
export async function loadBundle(manifestUrl, options = {}) {
  const model = new UlpqModel(manifestUrl, options);
  return model.initialize();
}

/** The original SDK's shape: createModel(hardware, {modelId}) where modelId is a bundle URL or folder. */
export function createModel(hardware, { modelId, ...options } = {}) {
  const url = String(modelId ?? '.');
  const manifestUrl = url.endsWith('.json') ? url : `${url.replace(/\/?$/, '/')}manifest.json`;
  return new UlpqModel(manifestUrl, { ...options, hardware });
}
