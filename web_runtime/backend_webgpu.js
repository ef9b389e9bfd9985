// The WebGPU backend: picks the shader variant for this browser and adapter, creates the device
// with the limits that variant needs, uploads the packed weights once, and records one compute
// pass per operator. Values are {buffer, rows, cols} living on the GPU until `output`.

import { chooseProfiles, detectProfile } from './variants.js';
import { fetchVerifiedText } from './bundle_loader.js';
import { graphNodes, matmulKey, packParams, workgroups } from './dispatch.js';

export class GpuUnavailable extends Error {
  constructor(message) { super(message); this.name = 'GpuUnavailable'; }
}

const FALLBACK_PROFILE = 'chrome';

/** Is WebGPU exposed at all? {available, reason}. */
export function webgpuPresence() {
  if (!globalThis.navigator?.gpu) return { available: false, reason: 'navigator.gpu is undefined: this browser exposes no WebGPU' };
  return { available: true, reason: null };
}

/**
 * Try the variants this adapter allows, best first; return {backend, variant, notes}. A variant
 * whose device, pipelines or `selfTest(backend)` fail is skipped with a note. Throws GpuUnavailable
 * (with every reason) when none works.
 */
export async function createGpuBackend(manifest, tensors, baseUrl, { profile = null, poison = false, selfTest = null } = {}) {
  const presence = webgpuPresence();
  if (!presence.available) throw new GpuUnavailable(presence.reason);
  const probe = await navigator.gpu.requestAdapter();
  if (!probe) throw new GpuUnavailable('navigator.gpu.requestAdapter() returned null: no usable WebGPU adapter');
  const detected = detectProfile(navigator.userAgent, manifest.profiles);
  const requested = profile ?? detected ?? FALLBACK_PROFILE;
  const choice = chooseProfiles(manifest.profiles, requested, probe.limits);
  const notes = choice.fallback ? [choice.fallback] : [];
  let adapter = probe;
  for (const candidate of choice.candidates) {
    try {
      // An adapter hands out one device; every retry needs a fresh one.
      adapter = adapter ?? await navigator.gpu.requestAdapter();
      const backend = await GpuBackend.create(adapter, manifest, tensors, candidate, baseUrl, poison);
      adapter = null;
      try {
        await selfTest?.(backend);
      } catch (err) {
        backend.destroy();
        throw err;
      }
      const variant = {
        profile: candidate.name, workgroup_size: candidate.workgroup_size, name: candidate.variant,
        requested, detected, fallback: candidate.name !== requested,
      };
      return { backend, variant, notes };
    } catch (err) {
      adapter = null;
      notes.push(`${candidate.variant} failed (${err.message}); trying the next variant`);
    }
  }
  if (!choice.candidates.length) notes.push('no shader variant fits this adapter');
  throw new GpuUnavailable(notes.join('; '));
}

const ceil4 = (n) => Math.ceil(n / 4) * 4;

export class GpuBackend {
  static async create(adapter, manifest, tensors, profile, baseUrl, poison) {
    const device = await adapter.requestDevice({ requiredLimits: { ...profile.required_limits } });
    const backend = new GpuBackend(device, manifest, tensors, profile, poison, baseUrl);
    try {
      await backend.prepare([1]);  // the one-row kernels now, so a variant that fails to compile fails here
      backend.#upload();
    } catch (err) {
      device.destroy();
      throw err;
    }
    return backend;
  }

  constructor(device, manifest, tensors, profile, poison, baseUrl) {
    this.path = 'webgpu';
    this.baseUrl = baseUrl;
    this.device = device;
    this.manifest = manifest;
    this.tensors = tensors;
    this.profile = profile;
    this.poison = poison;
    this.lost = null;
    device.lost.then((info) => { this.lost = info; });
    this.pipelines = new Map();
    this.weights = new Map();
  }

  /** Compile (once) the shaders a run with these matrix-product row counts needs; the rest wait. */
  async prepare(rowCounts) {
    const keys = new Set(Object.values(this.manifest.model.op_kernels?.[this.profile.name] ?? {}));
    for (const node of graphNodes(this.manifest.model, 'in_features')) {
      for (const rows of rowCounts) keys.add(matmulKey(node.kernels[this.profile.name], rows, this.manifest.matmul));
    }
    for (const node of graphNodes(this.manifest.model, 'table')) {
      for (const key of Object.values(node.kernels[this.profile.name])) keys.add(key);
    }
    for (const key of keys) {
      if (this.pipelines.has(key)) continue;
      const shader = this.manifest.shaders.find((s) => s.key === key);
      if (!shader) throw new Error(`the manifest has no shader ${key}`);
      const code = await fetchVerifiedText(this.baseUrl, shader.file, shader.sha256);
      this.device.pushErrorScope('validation');
      const module = this.device.createShaderModule({ code, label: shader.key });
      const pipeline = await this.device.createComputePipelineAsync({
        layout: 'auto', compute: { module, entryPoint: 'main' }, label: shader.key,
      });
      const error = await this.device.popErrorScope();
      if (error) throw new Error(`${shader.file}: ${error.message}`);
      this.pipelines.set(shader.key, { shader, pipeline });
    }
  }

  #upload() {
    for (const [name, tensor] of this.tensors) {
      const buffers = {};
      for (const [part, { bytes }] of Object.entries(tensor.parts)) {
        const buffer = this.device.createBuffer({
          size: Math.max(4, ceil4(bytes.length)), usage: GPUBufferUsage.STORAGE, mappedAtCreation: true, label: `${name}:${part}`,
        });
        new Uint8Array(buffer.getMappedRange()).set(bytes);
        buffer.unmap();
        buffers[part] = buffer;
      }
      this.weights.set(name, buffers);
    }
  }

  #transient(size, usage, label) {
    const buffer = this.device.createBuffer({ size: Math.max(4, ceil4(size)), usage, label });
    this.scratch.push(buffer);
    return buffer;
  }

  #activation(rows, cols, label) {
    const buffer = this.#transient(rows * cols * 4, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, label);
    // Poisoned outputs: any element a kernel fails to write stays NaN and fails the comparison.
    if (this.poison) this.device.queue.writeBuffer(buffer, 0, new Float32Array(rows * cols).fill(NaN));
    return buffer;
  }

  /** Start recording a run: one command encoder, error scopes around everything it records. */
  begin() {
    if (this.lost) throw new Error(`the GPU device was lost (${this.lost.message})`);
    this.scratch = [];
    this.encoder = this.device.createCommandEncoder();
    this.device.pushErrorScope('validation');
    this.device.pushErrorScope('out-of-memory');
  }

  input(data, rows, cols) {
    return { buffer: this.upload(data), rows, cols };
  }

  /** A storage buffer holding a typed array (activations, token ids, masks). */
  upload(typed) {
    const buffer = this.#transient(typed.byteLength, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, 'upload');
    this.device.queue.writeBuffer(buffer, 0, typed);
    return buffer;
  }

  /** Record one dispatch of the shader `key` with buffers by binding name and params by name. */
  #dispatch(key, resources, dims, label) {
    const { shader, pipeline } = this.pipelines.get(key);
    const params = this.#transient(16 * Math.ceil(shader.params.length / 4), GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, 'params');
    this.device.queue.writeBuffer(params, 0, packParams(shader, dims));
    const entries = Object.entries(shader.bindings).map(([name, binding]) => {
      const buffer = name === 'params' ? params : resources[name];
      if (!buffer) throw new Error(`${shader.key}: nothing bound to '${name}'`);
      return { binding, resource: { buffer } };
    });
    const bindGroup = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    const pass = this.encoder.beginComputePass({ label });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(...workgroups(shader, dims));
    pass.end();
  }

  /** The weight parts of a tensor under the kernels' binding names (w.codes, w.scales, ...). */
  #weightResources(name) {
    const parts = this.weights.get(name);
    return Object.fromEntries(Object.entries(parts).map(([part, buffer]) => [`w.${part}`, buffer]));
  }

  #op(role) {
    return this.manifest.model.op_kernels[this.profile.name][role];
  }

  #plain(name) {
    return this.weights.get(name).codes; // float32 tensors: their values
  }

  linear(h, node, residual = null) {
    const m = this.tensors.get(node.weight).entry.matrix;
    const out = this.#activation(h.rows, m.rows, `${node.weight}:out`);
    const key = matmulKey(node.kernels[this.profile.name], h.rows, this.manifest.matmul);
    const resources = { x: h.buffer, ...this.#weightResources(node.weight), y: out };
    if (node.bias) resources.bias = this.#plain(node.bias);
    if (residual) resources.residual = residual.buffer;
    const dims = { m: h.rows, n: m.rows, k: m.k, words_per_row: m.words_per_row, groups_per_row: m.groups_per_row,
      group_size: m.group_size, codebook_stride: m.codebook_stride };
    this.#dispatch(key, resources, dims, node.weight);
    return { buffer: out, rows: h.rows, cols: m.rows };
  }

  embed(node, ids, count, into = null) {
    const m = this.tensors.get(node.table).entry.matrix;
    const out = into ? into.buffer : this.#activation(count, m.k, `${node.table}:rows`);
    const key = node.kernels[this.profile.name][into ? 'accumulate' : 'first'];
    const dims = { tokens: count, n: m.rows, k: m.k, words_per_row: m.words_per_row, groups_per_row: m.groups_per_row,
      group_size: m.group_size, codebook_stride: m.codebook_stride, count: count * m.k };
    this.#dispatch(key, { ids, ...this.#weightResources(node.table), y: out }, dims, node.table);
    return into ?? { buffer: out, rows: count, cols: m.k };
  }

  layernorm(h, node, eps) {
    const out = this.#activation(h.rows, h.cols, 'layernorm');
    this.#dispatch(this.#op('layernorm'), { x: h.buffer, gamma: this.#plain(node.weight), beta: this.#plain(node.bias), y: out },
      { rows: h.rows, cols: h.cols, eps }, 'layernorm');
    return { buffer: out, rows: h.rows, cols: h.cols };
  }

  attention(q, k, v, mask, dims) {
    const key = this.#op('attention');
    const maxSeq = this.pipelines.get(key).shader.tiles.max_seq;
    if (dims.seq > maxSeq) throw new Error(`attention over ${dims.seq} tokens exceeds this bundle's ${maxSeq}`);
    const out = this.#activation(q.rows, q.cols, 'attention');
    const resources = { q: q.buffer, k: k.buffer, v: v.buffer, y: out };
    if (mask) resources.mask = mask;
    this.#dispatch(key, resources, { ...dims, scale: 1 / Math.sqrt(dims.head_dim) }, 'attention');
    return { buffer: out, rows: q.rows, cols: q.cols };
  }

  meanpool(h, mask, dims) {
    const out = this.#activation(dims.batch, dims.hidden, 'meanpool');
    this.#dispatch(this.#op('meanpool'), { x: h.buffer, mask, y: out }, dims, 'meanpool');
    return { buffer: out, rows: dims.batch, cols: dims.hidden };
  }

  im2col(image, dims) {
    const grid = Math.floor(dims.height / dims.patch_size) * Math.floor(dims.width / dims.patch_size);
    const cols = dims.channels * dims.patch_size * dims.patch_size;
    const out = this.#activation(dims.batch * grid, cols, 'im2col');
    this.#dispatch(this.#op('im2col'), { image: image.buffer, y: out }, { ...dims, count: dims.batch * grid * cols }, 'im2col');
    return { buffer: out, rows: dims.batch * grid, cols };
  }

  vitTokens(patches, clsName, posName, dims) {
    const rows = dims.batch * (dims.patches + 1);
    const out = this.#activation(rows, dims.hidden, 'vit_tokens');
    this.#dispatch(this.#op('vit_tokens'), { patches: patches.buffer, cls: this.#plain(clsName), pos: this.#plain(posName), y: out },
      { ...dims, count: rows * dims.hidden }, 'vit_tokens');
    return { buffer: out, rows, cols: dims.hidden };
  }

  /** Rows `ids` of an activation (an embed over float32 storage: the activation is the table). */
  rows(h, ids, count) {
    const out = this.#activation(count, h.cols, 'rows');
    const dims = { tokens: count, n: h.rows, k: h.cols, words_per_row: h.cols, groups_per_row: 0, group_size: h.cols,
      codebook_stride: 0, count: count * h.cols };
    this.#dispatch(this.#op('rows'), { ids, 'w.codes': h.buffer, y: out }, dims, 'rows');
    return { buffer: out, rows: count, cols: h.cols };
  }

  async output(h) {
    const size = h.rows * h.cols * 4;
    const readback = this.#transient(size, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, 'readback');
    this.encoder.copyBufferToBuffer(h.buffer, 0, readback, 0, size);
    this.device.queue.submit([this.encoder.finish()]);
    this.encoder = null;
    const oom = await this.device.popErrorScope();
    const invalid = await this.device.popErrorScope();
    const scratch = this.scratch;
    try {
      if (oom || invalid) throw new Error(`WebGPU error: ${(oom ?? invalid).message}`);
      await readback.mapAsync(GPUMapMode.READ);
      const data = new Float32Array(readback.getMappedRange().slice(0));
      readback.unmap();
      if (this.lost) throw new Error(`the GPU device was lost (${this.lost.message})`);
      return { data, rows: h.rows, cols: h.cols };
    } finally {
      for (const b of scratch) b.destroy();
    }
  }

  /** Bytes of GPU buffers holding the weights (activations come and go per run). */
  memoryBytes() {
    let total = 0;
    for (const parts of this.weights.values()) for (const buffer of Object.values(parts)) total += buffer.size;
    return { gpu_buffer_bytes: total };
  }

  destroy() {
    this.device.destroy();
  }
}
