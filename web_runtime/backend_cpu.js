// The CPU backend: runs a model graph immediately in JS over the packed weights (matrices decoded a
// row at a time). Values are {data: Float32Array, rows, cols}; uploads are the typed arrays themselves.

import * as ops from './ops_cpu.js';

export class CpuBackend {
  constructor(manifest, tensors) {
    this.path = 'cpu';
    this.threads = 1;
    this.formats = manifest.formats;
    this.tensors = tensors;
  }

  #plain(name) {
    return this.tensors.get(name).parts.codes.values; // float32 tensors: the values themselves
  }

  begin() {}

  input(data, rows, cols) {
    return { data, rows, cols };
  }

  upload(typed) {
    return typed;
  }

  embed(node, ids, count, into = null) {
    const table = this.tensors.get(node.table);
    const data = ops.embedRows(table, ids, this.formats, into ? into.data : null);
    return into ?? { data, rows: count, cols: table.entry.matrix.k };
  }

  linear(h, node, residual = null) {
    const weight = this.tensors.get(node.weight);
    const bias = node.bias ? this.tensors.get(node.bias) : null;
    const data = ops.linear(h.data, h.rows, weight, bias, node.activation, this.formats, residual ? residual.data : null);
    return { data, rows: h.rows, cols: weight.entry.matrix.rows };
  }

  layernorm(h, node, eps) {
    return { data: ops.layernorm(h.data, h.rows, h.cols, this.#plain(node.weight), this.#plain(node.bias), eps), rows: h.rows, cols: h.cols };
  }

  attention(q, k, v, mask, dims) {
    const data = ops.attention(q.data, k.data, v.data, mask, dims.batch, dims.seq, dims.heads, dims.head_dim);
    return { data, rows: q.rows, cols: q.cols };
  }

  meanpool(h, mask, dims, normalize) {
    return { data: ops.meanpool(h.data, mask, dims.batch, dims.seq, dims.hidden, normalize), rows: dims.batch, cols: dims.hidden };
  }

  im2col(image, dims) {
    const data = ops.im2col(image.data, dims.batch, dims.channels, dims.height, dims.width, dims.patch_size);
    const cols = dims.channels * dims.patch_size * dims.patch_size;
    return { data, rows: data.length / cols, cols };
  }

  vitTokens(patches, clsName, posName, dims) {
    const data = ops.vitTokens(patches.data, this.#plain(clsName), this.#plain(posName), dims.batch, dims.patches, dims.hidden);
    return { data, rows: dims.batch * (dims.patches + 1), cols: dims.hidden };
  }

  rows(h, ids, count) {
    return { data: ops.gatherRows(h.data, h.cols, ids), rows: count, cols: h.cols };
  }

  async output(h) {
    return h;
  }
}
