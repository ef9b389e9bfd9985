// Which CPU backend runs a model where WebGPU does not: the one place that decides, so the API
// layer (ulpq.js) never names a CPU implementation. Today: the plain-JS backend.

import { CpuBackend } from './backend_cpu.js';

/** A CPU backend for this bundle: {backend, notes}. `options` is the model's options object. */
export async function createCpuBackend(manifest, tensors, options = {}) {
  return { backend: new CpuBackend(manifest, tensors), notes: [] };
}
