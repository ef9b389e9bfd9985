// Which CPU backend runs a model where WebGPU does not: the one place that decides, so the API
// layer (ulpq.js) never names a CPU implementation.
//   1. the WebAssembly SIMD kernels (backend_wasm.js) where the engine validates a SIMD module and
//      the bundle carries the kernels: on worker threads when memory can be shared
//      (cross-origin isolated pages, Node), else one thread;
//   2. the plain-JS backend (backend_cpu.js) otherwise, with a note saying why.
// options.cpu = 'js' forces the plain-JS path (tests use it as the reference); options.threads
// caps the worker threads.

import { IntegrityError } from './bundle_loader.js';
import { CpuBackend } from './backend_cpu.js';
import { createWasmBackend } from './backend_wasm.js';

/** A CPU backend for this bundle: {backend, notes}. `options` is the model's options object. */
export async function createCpuBackend(manifest, tensors, options = {}) {
  if (options.cpu === 'js') return { backend: jsBackend(manifest, tensors), notes: ['CPU path: plain JS (requested)'] };
  try {
    return await createWasmBackend(manifest, tensors, options);
  } catch (err) {
    // a kernel file that fails its sha256 is a tampered bundle: stop the load, as for shards and shaders
    if (options.cpu === 'wasm' || err instanceof IntegrityError) throw err;
    return { backend: jsBackend(manifest, tensors), notes: [`CPU path: plain JS (WebAssembly kernels unavailable: ${err.message})`] };
  }
}

function jsBackend(manifest, tensors) {
  const backend = new CpuBackend(manifest, tensors);
  backend.threads = 1;
  return backend;
}
