// The wasm CPU backend: the same interface as CpuBackend (backend_cpu.js), run by the bundle's
// WebAssembly SIMD kernels (cpu-kernels*.wasm, generated per format by ulpq_build/wasm_kernels.py).
//
// Packed weights are moved once into the wasm memory and stay packed there (GEMMs decode blocks
// of four weight rows into a per-thread scratch; float32 tensors are read in place); the tensor
// table's parts then view that memory, so the downloaded shards can be freed. Graph calls
// only record kernel calls and reserve activations in an arena; output() runs the recording, on
// this thread or split over worker threads that share the memory (SharedArrayBuffer; browsers
// allow it when the page is cross-origin isolated, Node always). Handles are {ptr, rows, cols}.

import { IntegrityError, sha256Hex } from './bundle_loader.js';
import { runOps } from './wasm_exec.js';
import { decoderKernels } from './decoder_wasm_ops.js';

const inNode = typeof process !== 'undefined' && !!process.versions?.node && typeof window === 'undefined';
const PAGE = 65536;
const BARRIER = 64; // two i32 cells for the workers' barrier
const COUNTERS = 1024; // one i32 per recorded op: the next chunk a worker takes
const MAX_OPS = 15 * 1024;
const WEIGHTS_BASE = COUNTERS + 4 * MAX_OPS;
const CHUNKS_PER_THREAD = 8; // an op is cut into about threads x 8 chunks
const GEMV_COLUMNS = 64; // the least output columns of a one-row product's chunk (see #columnUnit)
const MAX_THREADS = 4; // MiniLM-sized GEMMs stop scaling beyond a few threads
const GROW_STEP = 1 << 20; // bytes the memory grows by at least: few grows, little unused

// (module (func (result v128) (i32x4.splat (i32.const 0)))): validates only where wasm SIMD exists
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 8, 1, 6, 0, 65, 0, 253, 17, 11]);

// (module (func (result v128) (f32x4.relaxed_madd (f32x4.splat 1) (f32x4.splat 1) (f32x4.splat 1))))
const RELAXED_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 28, 1, 26, 0, 67, 0, 0,
  128, 63, 253, 19, 67, 0, 0, 128, 63, 253, 19, 67, 0, 0, 128, 63, 253, 19, 253, 133, 2, 11]);

export function wasmRelaxedSimdSupported() {
  try {
    return WebAssembly.validate(RELAXED_PROBE);
  } catch {
    return false;
  }
}

export function wasmSimdSupported() {
  try {
    return typeof WebAssembly === 'object' && WebAssembly.validate(SIMD_PROBE);
  } catch {
    return false;
  }
}

const align = (n, a = 16) => Math.ceil(n / a) * a;
const bytesOf = (typed) => new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);

/** The export suffix of a tensor's storage; ulpq_build/wasm_kernels.py WasmVariant.key names the same. */
export function variantKey(entry, fmt, parts) {
  if (fmt.levels === 'float') return 'float32';
  // codebook formats keep one float16 scale per row whatever the spec says
  const dtype = entry.spec.scale_dtype === 'float16' || fmt.levels === 'codebook' ? 'f16' : 'f32';
  return `${fmt.name.replace(/[^a-z0-9]/g, '_')}_${dtype}_${parts.zeros ? 'z' : 's'}`;
}

async function readBytes(url) {
  if (url.protocol === 'file:' && inNode) {
    const { readFile } = await import('node:fs/promises');
    const { fileURLToPath } = await import('node:url');
    return new Uint8Array(await readFile(fileURLToPath(url)));
  }
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

// Probe by creating one: WebKitGTK exposes shared wasm memories to isolated pages without
// exposing the SharedArrayBuffer constructor.
function canShareMemory() {
  try {
    return new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }).buffer.constructor.name === 'SharedArrayBuffer';
  } catch {
    return false;
  }
}

/** Worker threads available here: 1 unless memory can be shared (cross-origin isolated page, or Node). */
async function threadBudget(requested) {
  let cores = 1;
  let shareable = false;
  if (inNode) {
    const os = await import('node:os');
    cores = os.availableParallelism?.() ?? os.cpus().length;
    shareable = true;
  } else {
    cores = globalThis.navigator?.hardwareConcurrency ?? 1;
    shareable = globalThis.crossOriginIsolated === true && canShareMemory();
  }
  if (!shareable) return { threads: 1, why: 'one thread (the page is not cross-origin isolated: no shared memory)' };
  const threads = Math.max(1, Math.min(MAX_THREADS, requested ?? cores));
  return { threads, why: `${threads} thread${threads > 1 ? 's' : ''}` };
}

function spawnWorker(url) {
  if (inNode) {
    return import('node:worker_threads').then(({ Worker }) => {
      const w = new Worker(url);
      w.unref(); // a finished script may exit with the backend still alive; runs ref() it
      return { post: (m) => w.postMessage(m), on: (fn) => w.on('message', fn), onError: (fn) => w.on('error', fn),
        terminate: () => w.terminate(), ref: () => w.ref(), unref: () => w.unref() };
    });
  }
  const w = new Worker(url, { type: 'module' });
  return Promise.resolve({ post: (m) => w.postMessage(m), on: (fn) => w.addEventListener('message', (e) => fn(e.data)),
    onError: (fn) => w.addEventListener('error', fn), terminate: () => w.terminate(), ref() {}, unref() {} });
}

export class WasmBackend {
  /**
   * Use createWasmBackend().
   * @param {WebAssembly.Module} module
   * @param {WebAssembly.Memory} memory
   */
  constructor(manifest, tensors, module, memory, threads) {
    this.path = 'cpu';
    this.relaxed = false; // relaxed-SIMD kernels (createWasmBackend sets it)
    this.kind = 'wasm-simd';
    this.threads = threads;
    this.formats = manifest.formats;
    this.module = module;
    this.memory = memory;
    this.workers = [];
    this.ops = [];
    this.buffers = []; // bytes of each op output recorded since begin(), placed by output()
    this.activationBytes = 0; // the last run's activations: its inputs and the peak of its live outputs
    this.runs = 0;
    this.exports = null;
    this.held = []; // regions held across runs (a generation's KV cache): [ptr, arena before]
    // a Map while set: one-thread runs time each op into it (benchmarks), under its export name, a
    // product's followed by its shape (`gemm_int4_f32_s 144x384x1536`: rows x k x n)
    this.profile = null;
    this.rotated = null; // the last input rotation recorded: {src, seed, out, ops} (linear() reuses it)
    this.#placeWeights(manifest, tensors);
  }

  #grow(end) {
    const have = this.memory.buffer.byteLength;
    // at least GROW_STEP at a time (a first run reserves many op outputs), at most that unused
    if (end > have) this.memory.grow(Math.ceil(Math.max(end - have, GROW_STEP) / PAGE));
  }

  #reserve(bytes) {
    const ptr = this.top;
    this.top = align(ptr + bytes + 8); // +8: the bit-stream decoder reads 64 bits at a time
    this.#grow(this.top);
    return ptr;
  }

  #copyIn(typed) {
    const ptr = this.#reserve(typed.byteLength);
    new Uint8Array(this.memory.buffer, ptr, typed.byteLength).set(bytesOf(typed));
    return ptr;
  }

  /**
   * A tensor part, once copied in, is read from the wasm memory from then on (fresh views on every
   * access, valid after the memory grows): the downloaded shards are no longer referenced and can
   * be collected, so the packed weights are held once, not twice.
   */
  #rehome(part, ptr = null) {
    const View = part.values.constructor;
    const length = part.values.length;
    ptr ??= this.#copyIn(part.values);
    const memory = this.memory;
    Object.defineProperty(part, 'values', { get: () => new View(memory.buffer, ptr, length), enumerable: true, configurable: true });
    Object.defineProperty(part, 'bytes', { get: () => new Uint8Array(memory.buffer, ptr, length * View.BYTES_PER_ELEMENT),
      enumerable: true, configurable: true });
    return ptr;
  }

  /** Every tensor's parts into the memory, once; table formats get their level table there too. */
  #placeWeights(manifest, tensors) {
    this.top = WEIGHTS_BASE;
    const tables = new Map();
    this.weights = new Map();
    // codebook formats: the bundle's one codebook buffer, and the kernels' tables start() expands from it;
    // rotated inputs: the signs (times the scale) of each rotation, which start() draws from its seed
    this.codebook = null;
    this.rotations = new Map(); // `${seed}:${k}` -> {seed, k, ptr}
    let maxK = 0;
    for (const [name, tensor] of tensors) {
      const { entry, parts } = tensor;
      const fmt = manifest.formats[entry.format];
      const m = entry.matrix;
      maxK = Math.max(maxK, m.k);
      const key = variantKey(entry, fmt, parts);
      if (manifest.wasm.variants && !manifest.wasm.variants.includes(key)) {
        throw new Error(`the bundle's wasm kernels do not decode ${fmt.name} (${key}); rebuild the bundle with this ulpq_build`);
      }
      const w = { key, rows: m.rows, k: m.k, wpr: m.words_per_row, gpr: m.groups_per_row,
        gsize: m.group_size, bstride: m.codebook_stride, codes: this.#rehome(parts.codes), scales: 0, zeros: 0, book: 0, seed: 0, signs: 0 };
      if (parts.scales) w.scales = this.#rehome(parts.scales);
      if (parts.zeros) w.zeros = this.#rehome(parts.zeros);
      if (fmt.levels === 'codebook') {
        // one copy of the shared buffer, which every codebook tensor's part then views
        if (!this.codebook) this.codebook = { raw: this.#rehome(parts.codebook), book: this.#reserve(manifest.wasm.codebook_bytes) };
        else this.#rehome(parts.codebook, this.codebook.raw);
        w.book = this.codebook.book;
        w.seed = parts.seeds ? parts.seeds.values[0] : 0;
        if (parts.seeds) this.#rehome(parts.seeds);
        if (w.seed) {
          const id = `${w.seed}:${m.k}`;
          if (!this.rotations.has(id)) this.rotations.set(id, { seed: w.seed, k: m.k, ptr: this.#reserve(4 * m.k) });
          w.signs = this.rotations.get(id).ptr;
        }
      } else if (parts.codebook) w.book = this.#rehome(parts.codebook);
      else if (fmt.levels === 'table') {
        if (!tables.has(fmt.name)) tables.set(fmt.name, this.#copyIn(Float32Array.from(fmt.table)));
        w.book = tables.get(fmt.name);
        w.bstride = 0;
      }
      this.weights.set(name, w);
    }
    this.weightBytes = this.top - WEIGHTS_BASE;
    // per thread: a GEMM's decoded weight rows and panel (bytes per k, k rounded up to 32; bundles
    // from before the panel kernels: four rows), or one row of attention scores
    this.panelColumns = manifest.wasm.panel_columns ?? 4;
    this.scratchBytes = Math.max((manifest.wasm.scratch_bytes_per_k ?? 16) * align(maxK, 32), 1 << 16);
    this.scratch = this.#reserve(this.scratchBytes * this.threads);
    this.arena = this.top;
  }

  async start() {
    const instance = await WebAssembly.instantiate(this.module, { env: { memory: this.memory } });
    // the decoder's non-product operators run beside the kernels, in the same recorded programs
    this.exports = { ...instance.exports, ...decoderKernels(this.memory) };
    // tables the codebook kernels read, written once into the memory every thread shares
    const kernels = /** @type {any} */ (instance.exports);
    if (this.codebook) kernels.codebook_expand(this.codebook.raw, this.codebook.book);
    for (const r of this.rotations.values()) kernels.rotation_signs(r.seed, r.k, r.ptr);
    if (this.threads === 1) return;
    const url = new URL('./wasm_worker.js', import.meta.url);
    this.workers = await Promise.all(Array.from({ length: this.threads }, () => spawnWorker(url)));
    this.pending = new Map();
    await Promise.all(this.workers.map((w, thread) => new Promise((resolve, reject) => {
      w.on((m) => {
        if (m.type === 'ready') resolve();
        else if (m.type === 'done') this.pending.get(m.run)?.resolve();
        else if (m.type === 'error') (this.pending.get(m.run) ?? { reject }).reject(new Error(m.message));
      });
      w.onError((e) => {
        // a browser reports a worker script that failed to load as a bare Event, with no message
        const why = e?.message ?? `could not load ${url.href} (an app bundled from the npm package must copy `
          + 'wasm_worker.js and wasm_exec.js beside its script)';
        const err = new Error(`wasm worker failed: ${why}`);
        reject(err);
        for (const p of this.pending.values()) p.reject(err);
      });
      w.post({ type: 'init', module: this.module, memory: this.memory, thread, threads: this.threads,
        scratch: this.scratch + thread * this.scratchBytes, barrier: BARRIER, counters: COUNTERS, maxOps: MAX_OPS });
    })));
  }

  /**
   * Bytes the backend holds in wasm memory: the packed weights, the per-thread scratch, the last
   * run's activations (every op's output, kept until the next run), and the whole memory (those
   * plus what it has grown by and not yet used).
   */
  get memoryBytes() {
    return { weights: this.weightBytes, scratch: this.scratchBytes * this.threads, activations: this.activationBytes,
      total: this.memory.buffer.byteLength };
  }

  #tensor(name) {
    const w = this.weights.get(name);
    if (!w) throw new Error(`tensor ${name} is missing from the bundle`);
    return w;
  }

  /**
   * Output columns per chunk of a product: whole panels; for one row at least GEMV_COLUMNS, since
   * every call of a packed one-row product first rearranges x (k values, once per call): over a
   * chunk of c columns that costs about 4/c of the products' time.
   */
  #columnUnit(rows) {
    return rows === 1 ? Math.ceil(GEMV_COLUMNS / this.panelColumns) * this.panelColumns : this.panelColumns;
  }

  #op(fn, args, range, total, unit = 1, scratch = -1) {
    if (typeof this.exports[fn] !== 'function') throw new Error(`the bundle's wasm kernels have no ${fn}; rebuild the bundle`);
    const chunk = Math.max(unit, Math.ceil(total / (this.threads * CHUNKS_PER_THREAD) / unit) * unit);
    this.ops.push({ fn, args, range, total, chunk, scratch });
  }

  /**
   * An op's output, placed when the run is: its pointer is a placeholder (a negative id; no
   * kernel argument is otherwise negative) until output() knows every buffer's lifetime.
   */
  #out(rows, cols) {
    this.buffers.push(align(rows * cols * 4 + 8)); // +8: the bit-stream decoder reads 64 bits at a time
    return { ptr: -this.buffers.length, rows, cols };
  }

  /**
   * Give every placeholder a place: a buffer lives from the op that first names it to the last
   * (the output to the end), and takes the lowest free range that fits (first fit, freed ranges
   * merged), so a run holds its live activations rather than all of them. Patches the ops' args;
   * returns the placed output pointer.
   */
  #place(ops, out) {
    const last = new Array(this.buffers.length).fill(-1);
    ops.forEach((op, i) => { for (const a of op.args) if (Number.isInteger(a) && a < 0) last[-a - 1] = i; });
    if (out < 0) last[-out - 1] = ops.length;
    const base = this.top;
    const where = new Array(this.buffers.length).fill(-1);
    let free = []; // [start, end) ranges below `end`, address order
    let end = base;
    const take = (bytes) => {
      for (let f = 0; f < free.length; f++) {
        const [a, b] = free[f];
        if (b - a < bytes) continue;
        if (b - a === bytes) free.splice(f, 1); else free[f] = [a + bytes, b];
        return a;
      }
      end += bytes;
      return end - bytes;
    };
    const release = (a, bytes) => {
      free.push([a, a + bytes]);
      free.sort((x, y) => x[0] - y[0]);
      free = free.reduce((merged, r) => {
        const prev = merged[merged.length - 1];
        if (prev && prev[1] === r[0]) prev[1] = r[1]; else merged.push(r);
        return merged;
      }, []);
    };
    ops.forEach((op, i) => {
      for (const a of op.args) if (Number.isInteger(a) && a < 0 && where[-a - 1] < 0) where[-a - 1] = take(this.buffers[-a - 1]);
      for (let b = 0; b < last.length; b++) if (last[b] === i && where[b] >= 0) release(where[b], this.buffers[b]);
    });
    for (const op of ops) op.args = op.args.map((a) => (Number.isInteger(a) && a < 0 ? where[-a - 1] : a));
    this.activationBytes = end - this.arena;
    this.#grow(end);
    return out < 0 ? where[-out - 1] : out;
  }

  /**
   * Hold `bytes` of the memory across runs (a generation's KV cache) until release(ptr): the arena
   * of later runs starts above it (and comes back down once every region above a released one is
   * released too).
   */
  hold(bytes) {
    if (this.ops.length) throw new Error('hold(): a recording is in progress');
    const ptr = this.arena;
    this.held.push(Object.assign([ptr, this.arena], { released: false }));
    this.arena = align(ptr + bytes);
    this.top = this.arena;
    this.#grow(this.arena);
    return ptr;
  }

  release(ptr) {
    const entry = this.held.find(([p]) => p === ptr);
    if (!entry) return;
    entry.released = true;
    // the arena comes down past the trailing released regions only: one held later stays where it is
    while (this.held.length && this.held[this.held.length - 1].released) this.arena = this.held.pop()[1];
    this.top = this.arena;
  }

  /** The wasm-memory address of a tensor's values (float32 tensors: norm weights, biases). */
  address(name) {
    return this.#tensor(name).codes;
  }

  /** A fresh activation [rows, cols] of the recording (placed when it runs). */
  reserve(rows, cols) {
    return this.#out(rows, cols);
  }

  /**
   * Record a call of kernel `fn` (a wasm export or a decoder_wasm_ops.js kernel): args are numbers
   * (handles' .ptr included), args[range], args[range + 1] its parallel range [0, total), split
   * between threads in multiples of `unit`.
   */
  record(fn, args, range, total, unit = 1) {
    this.#op(fn, args, range, total, unit);
  }

  begin() {
    this.ops = [];
    this.rotated = null;
    this.buffers = [];
    this.top = this.arena;
  }

  input(data, rows, cols) {
    return { ptr: this.#copyIn(data instanceof Float32Array ? data : Float32Array.from(data)), rows, cols };
  }

  upload(typed) {
    return { ptr: this.#copyIn(typed), rows: typed.length, cols: 1 };
  }

  embed(node, ids, count, into = null) {
    const t = this.#tensor(node.table);
    if (t.seed) throw new Error(`${node.table}: a rotated table; no kernel un-rotates gathered rows, rebuild the bundle`);
    const y = into ?? this.#out(count, t.k);
    this.#op(`embed_${t.key}`, [ids.ptr, y.ptr, into ? 1 : 0, t.codes, t.scales, t.zeros, t.book, t.rows, t.k, t.wpr, t.gpr,
      t.gsize, t.bstride, 0, 0, 0], 13, count, 1, 15);
    return y;
  }

  linear(h, node, residual = null) {
    const w = this.#tensor(node.weight);
    if (h.cols !== w.k) throw new Error(`${node.weight}: input has ${h.cols} columns, the weight takes ${w.k}`);
    const act = { none: 0, gelu: 1 }[node.activation ?? 'none'];
    if (act === undefined) throw new Error(`${node.weight}: activation ${node.activation} is not supported by the wasm kernels`);
    if (w.seed) h = this.#rotate(h, w);
    const y = this.#out(h.rows, w.rows);
    const bias = node.bias ? this.#tensor(node.bias).codes : 0;
    this.#op(`gemm_${w.key}`, [h.ptr, h.rows, w.k, y.ptr, w.rows, 0, 0, w.codes, w.scales, w.zeros, w.book, w.wpr, w.gpr,
      w.gsize, w.bstride, bias, residual ? residual.ptr : 0, act, 0], 5, w.rows, this.#columnUnit(h.rows), 18);
    return y;
  }

  /**
   * h rotated as a codebook-format weight's inputs are (stored as W R^T, ulpq_build/vq/): a new
   * activation. Matrices that read the same activations share the rotation (its seed is a function
   * of k), so when only products were recorded since the last one of the same input, that one is
   * reused (query, key and value rotate their input once); any other op might write in place.
   */
  #rotate(h, w) {
    const last = this.rotated;
    if (last && last.src === h.ptr && last.seed === w.seed && last.k === w.k
        && this.ops.slice(last.ops).every((op) => op.fn.startsWith('gemm_'))) return last.out;
    const out = this.#out(h.rows, h.cols);
    this.#op('hadamard_rows', [h.ptr, out.ptr, w.k, w.signs, 0, 0], 4, h.rows);
    this.rotated = { src: h.ptr, seed: w.seed, k: w.k, out, ops: this.ops.length };
    return out;
  }

  layernorm(h, node, eps) {
    const y = this.#out(h.rows, h.cols);
    this.#op('layernorm', [h.ptr, y.ptr, h.cols, this.#tensor(node.weight).codes, this.#tensor(node.bias).codes, eps, 0, 0],
      6, h.rows);
    return y;
  }

  attention(q, k, v, mask, dims) {
    const y = this.#out(q.rows, q.cols);
    this.#op('attention', [q.ptr, k.ptr, v.ptr, mask ? mask.ptr : 0, y.ptr, dims.seq, dims.heads, dims.head_dim, 0, 0, 0],
      8, dims.batch * dims.heads, 1, 10);
    return y;
  }

  meanpool(h, mask, dims, normalize) {
    const y = this.#out(dims.batch, dims.hidden);
    this.#op('meanpool', [h.ptr, mask.ptr, y.ptr, dims.seq, dims.hidden, normalize ? 1 : 0, 0, 0], 6, dims.batch);
    return y;
  }

  im2col(image, dims) {
    const p = dims.patch_size;
    const rows = dims.batch * Math.floor(dims.height / p) * Math.floor(dims.width / p);
    const y = this.#out(rows, dims.channels * p * p);
    this.#op('im2col', [image.ptr, y.ptr, dims.channels, dims.height, dims.width, p, 0, 0], 6, rows);
    return y;
  }

  vitTokens(patches, clsName, posName, dims) {
    const rows = dims.batch * (dims.patches + 1);
    const y = this.#out(rows, dims.hidden);
    this.#op('vit_tokens', [patches.ptr, this.#tensor(clsName).codes, this.#tensor(posName).codes, y.ptr, dims.patches,
      dims.hidden, 0, 0], 6, rows);
    return y;
  }

  rows(h, ids, count) {
    const y = this.#out(count, h.cols);
    this.#op('gather_rows', [h.ptr, ids.ptr, y.ptr, h.cols, 0, 0], 4, count);
    return y;
  }

  /** Run what was recorded since begin(); h's values as {data: Float32Array, rows, cols}. */
  async output(h) {
    const ops = this.ops;
    this.ops = [];
    this.rotated = null;
    const ptr = this.#place(ops, h.ptr);
    await this.#execute(ops);
    return { data: new Float32Array(this.memory.buffer, ptr, h.rows * h.cols).slice(), rows: h.rows, cols: h.cols };
  }

  async #execute(ops) {
    if (this.threads === 1) {
      if (!this.profile) {
        runOps(this.exports, ops, this.scratch);
        return;
      }
      for (const op of ops) {
        const t = performance.now();
        runOps(this.exports, [op], this.scratch);
        const key = op.fn.startsWith('gemm_') ? `${op.fn} ${op.args[1]}x${op.args[2]}x${op.args[4]}` : op.fn;
        this.profile.set(key, (this.profile.get(key) ?? 0) + performance.now() - t);
      }
      return;
    }
    // one op per counter cell; a longer program (a very deep model) runs in pieces
    for (let start = 0; start < ops.length; start += MAX_OPS) {
      const piece = ops.slice(start, start + MAX_OPS);
      const counters = new Int32Array(this.memory.buffer, COUNTERS, piece.length);
      for (let i = 0; i < piece.length; i++) Atomics.store(counters, i, 0);
      const run = ++this.runs;
      const done = new Promise((resolve, reject) => this.pending.set(run, { resolve, reject }));
      for (const w of this.workers) { w.ref(); w.post({ type: 'run', run, ops: piece }); }
      try {
        await done;
      } finally {
        this.pending.delete(run);
        for (const w of this.workers) w.unref();
      }
    }
  }

  destroy() {
    for (const w of this.workers) w.terminate();
    this.workers = [];
  }
}

/** A started wasm backend for this bundle, or an Error saying why none can run here. */
export async function createWasmBackend(manifest, tensors, options = {}) {
  if (!manifest.wasm) throw new Error('the bundle has no wasm kernels (built by an older ulpq_build)');
  if (!wasmSimdSupported()) throw new Error('this engine has no WebAssembly SIMD');
  const budget = await threadBudget(options.threads);
  if (budget.threads > 1) {
    try {
      return await startBackend(manifest, tensors, options, budget.threads, budget.why);
    } catch (err) {
      // e.g. WebKitGTK: isolated pages get shared memories that cannot be posted to a worker
      return startBackend(manifest, tensors, options, 1, `one thread (workers cannot share the memory here: ${err.message})`);
    }
  }
  return startBackend(manifest, tensors, options, 1, budget.why);
}

async function startBackend(manifest, tensors, options, threads, why) {
  // fused multiply-adds where the engine has relaxed SIMD (options.relaxed = false: never)
  const relaxed = options.relaxed !== false && wasmRelaxedSimdSupported() && !!manifest.wasm.files.single_relaxed;
  const file = manifest.wasm.files[`${threads > 1 ? 'shared' : 'single'}${relaxed ? '_relaxed' : ''}`];
  // options.baseUrl: the bundle's manifest URL (ulpq.js passes it). Without it, the files beside this
  // module: right only when the runtime is loaded from the bundle's own folder; another bundle's
  // kernels lack this bundle's formats and fail the checksum below.
  const url = new URL(file.file, options.baseUrl ?? import.meta.url);
  const bytes = await readBytes(url);
  if (await sha256Hex(bytes) !== file.sha256) {
    throw new IntegrityError(`${url.href}: sha256 does not match the manifest; the file was changed after the build, rebuild or re-upload the bundle`);
  }
  const module = await WebAssembly.compile(bytes);
  let weightBytes = 0;
  for (const [, t] of tensors) for (const p of Object.values(t.parts)) weightBytes += align(p.values.byteLength + 8);
  const pages = Math.ceil((WEIGHTS_BASE + weightBytes) / PAGE); // scratch and activations grow it as needed
  const memory = threads > 1
    ? new WebAssembly.Memory({ initial: pages, maximum: 65536, shared: true })
    : new WebAssembly.Memory({ initial: pages });
  const backend = new WasmBackend(manifest, tensors, module, memory, threads);
  backend.relaxed = relaxed;
  try {
    await backend.start();
  } catch (err) {
    backend.destroy();
    throw err;
  }
  return { backend, notes: [`CPU path: WebAssembly SIMD kernels${relaxed ? ' (relaxed-SIMD FMA)' : ''}, ${why}`] };
}
