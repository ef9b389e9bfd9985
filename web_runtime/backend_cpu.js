// The CPU backend: executes a model graph immediately in JS over the packed weights.
// Values are {data: Float32Array, rows, cols}.

import { linear } from './ops_cpu.js';

export class CpuBackend {
  constructor(manifest, tensors) {
    this.path = 'cpu';
    this.formats = manifest.formats;
    this.tensors = tensors;
  }

  input(data, rows, cols) {
    return { data, rows, cols };
  }

  linear(h, layer) {
    const weight = this.tensors.get(layer.weight);
    const bias = layer.bias ? this.tensors.get(layer.bias) : null;
    const data = linear(h.data, h.rows, weight, bias, layer.activation, this.formats);
    return { data, rows: h.rows, cols: weight.entry.matrix.rows };
  }

  async output(h) {
    return h;
  }
}
