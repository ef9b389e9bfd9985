// The WebGPU backend: picks the shader variant for this browser and adapter, creates the device
// with the limits that variant needs, compiles every pipeline the model can use and uploads the
// packed weights once. Runs are planned once per input shape and then replayed.
//
// Why plans: a model's work at one input shape never changes, only the input values do. The first
// run at a shape records the graph's operators as a list of steps. Shapes whose steps have the same
// structure (the same kernels reading and writing the same values; e.g. 1x100 and 1x128 tokens)
// share one *layout*: the GPU objects of a run, made once: every activation a buffer slot (slots
// are shared between values whose lifetimes do not overlap; the activation buffers themselves are
// shared by every layout, sized for the largest shape seen, rounded up to a power of two), one
// uniform buffer for every dispatch's params, every bind group. A shape's own *plan* is only JS:
// its params bytes and workgroup grids. Initialisation prepares the plans and layouts of a few
// likely shapes (prepare()), so most first runs find their GPU objects made. A run writes the inputs
// (and the params, when the layout last ran another shape), encodes the dispatches into ONE compute
// pass, copies the output to a mapped buffer and reads it. A steady run creates no pipelines, bind
// groups or buffers, and nor does a new shape that fits a layout already made (tests count them):
// its first run costs about a steady run, instead of new buffers' first use and ~140 bind groups.
//
// Values handed to the graph are {id, rows, cols} handles (plus {stride, offset} for the column
// views that the fused Q/K/V projection returns); they get buffer slots once a plan is adopted.

import { IntegrityError, fetchVerifiedText } from './bundle_loader.js';
import { chooseFeatures, chooseProfiles, cpuAdapter, detectProfile, profileShaders } from './variants.js';
import { matmulKey, packParams, splitFor, workgroups } from './dispatch.js';
import { rotationSeed, splitSize } from './vq.js';

export class GpuUnavailable extends Error {
  constructor(message) { super(message); this.name = 'GpuUnavailable'; }
}

/**
 * The weights a backend was waiting for never came (a failed or tampered download): `cause`. Not
 * the adapter's fault, so no other variant or path is tried; the load reports the cause itself.
 */
export class WeightsFailed extends Error {
  constructor(cause) { super(`the weights did not load: ${cause?.message ?? cause}`); this.name = 'WeightsFailed'; this.cause = cause; }
}

const FALLBACK_PROFILE = 'chrome';
// Kept per model: shape plans (JS only) beyond 64 and layouts (the GPU buffers) beyond 8, or
// beyond 256 MiB of buffers together, are dropped least recently used first (a page embedding
// texts of many lengths would otherwise keep buffers for every structure it met). The layout in
// use is always kept. `backend.limits` holds these, so tests can make eviction happen.
const LIMITS = { shapes: 64, layouts: 8, layoutBytes: 256 * 1024 * 1024 };
const MIN_SLOT_BYTES = 256;
const UNIFORM_ALIGN = 256; // minUniformBufferOffsetAlignment's largest allowed value
const STORAGE_ALIGN = 256; // minStorageBufferOffsetAlignment's largest allowed value

/** Is WebGPU exposed at all? {available, reason}. */
export function webgpuPresence() {
  if (!globalThis.navigator?.gpu) return { available: false, reason: 'navigator.gpu is undefined: this environment exposes no WebGPU' };
  return { available: true, reason: null };
}

/** Is the adapter this environment would hand out a CPU implementation (SwiftShader, lavapipe)? False without one. */
export async function adapterIsCpu() {
  if (!webgpuPresence().available) return false;
  try {
    return cpuAdapter(await navigator.gpu.requestAdapter());
  } catch {
    return false;
  }
}

/**
 * Try the variants this adapter allows, best first; return {backend, variant, notes}. A variant
 * whose device, pipelines, `selfTest(backend)` or `prepare(backend)` fail is skipped with a note. Throws GpuUnavailable
 * (with every reason) when none works, and IntegrityError at once when a shader was tampered with
 * (that is the bundle's fault, not the adapter's: no other variant or path may hide it).
 * `tensors` (the weight table) may be a promise still downloading: each variant's device is made and
 * its pipelines start compiling before it is awaited; if it rejects, WeightsFailed at once.
 */
export async function createGpuBackend(manifest, tensors, baseUrl, { profile = null, poison = false, selfTest = null, prepare = null } = {}) {
  const presence = webgpuPresence();
  if (!presence.available) throw new GpuUnavailable(presence.reason);
  let probe;
  try {
    probe = await navigator.gpu.requestAdapter();
  } catch (err) {
    throw new GpuUnavailable(`navigator.gpu.requestAdapter() failed: ${err.message}`);
  }
  if (!probe) throw new GpuUnavailable('navigator.gpu.requestAdapter() returned null: no usable WebGPU adapter');
  const cpu = cpuAdapter(probe); // SwiftShader, lavapipe: the cpu_adapter profiles (profiles.py says why)
  const detected = detectProfile(globalThis.navigator?.userAgent ?? '', manifest.profiles, cpu);
  const requested = profile ?? detected ?? FALLBACK_PROFILE;
  const choice = chooseProfiles(manifest.profiles, requested, probe.limits, cpu);
  const notes = choice.fallback ? [choice.fallback] : [];
  let adapter = probe;
  for (const candidate of choice.candidates) {
    try {
      // An adapter hands out one device; every retry needs a fresh one.
      adapter = adapter ?? await navigator.gpu.requestAdapter();
      const backend = await GpuBackend.create(adapter, manifest, tensors, candidate, baseUrl, poison);
      adapter = null;
      try {
        const started = performance.now();
        await selfTest?.(backend);
        backend.initTimings.self_test_ms = performance.now() - started;
        // the GPU objects of the input shapes a page will likely meet (ulpq.js #prepare), made now
        // (run beside the self-test's GPU waits, it saved nothing: both are JS-bound)
        const preparing = performance.now();
        await prepare?.(backend);
        backend.initTimings.prepare_ms = performance.now() - preparing;
      } catch (err) {
        backend.destroy();
        throw err;
      }
      // features: the optional WebGPU features whose shader variants run (requested and granted);
      // subgroup_sizes: the adapter's subgroup size range where it says (kernels serve any size)
      const variant = {
        profile: candidate.name, workgroup_size: candidate.workgroup_size, name: candidate.variant,
        requested, detected, fallback: candidate.name !== requested,
        features: backend.features, subgroup_sizes: backend.subgroupSizes,
      };
      return { backend, variant, notes };
    } catch (err) {
      if (err instanceof IntegrityError || err instanceof WeightsFailed) throw err;
      adapter = null;
      notes.push(`${candidate.variant} failed (${err.message}); trying the next variant`);
    }
  }
  if (!choice.candidates.length) notes.push('no shader variant fits this adapter');
  throw new GpuUnavailable(notes.join('; '));
}

const ceil4 = (n) => Math.ceil(n / 4) * 4;
const alignUp = (n, a) => Math.ceil(n / a) * a;
const ACTIVATION_USAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/**
 * Q, K and V of one attention layer as one matrix product: when the three weights share storage,
 * kernels and per-row layout, each part (codes, scales, ...) of the three is uploaded into one
 * buffer, q|k|v (each part is row-major with whole bytes per row, so the concatenation is the
 * [q + k + v rows, k] matrix), and one GEMM writes [rows, q + k + v columns]. K and V may have
 * fewer rows than Q (grouped-query decoders). `aligned`: every piece is one size and 256-byte
 * aligned, so the separate tensors stay usable as views of the same buffers and nothing is stored
 * twice (the encoders' case; they fuse only then). Returns null when they cannot be fused (mixed
 * formats, per-tensor scales or codebooks).
 */
function qkvLayout(tensors, layer) {
  return fusedLayout(tensors, [layer.query, layer.key, layer.value]);
}

/**
 * Linear nodes reading one input as one product, as qkvLayout does for Q, K and V (null: they
 * cannot be). `ownActivations`: each node's activation is applied by whoever reads the product (a
 * gated FFN's gate and up, planned without theirs), so they need not agree.
 */
function fusedLayout(tensors, nodes, ownActivations = false) {
  if (nodes.some((n) => !n?.weight)) return null;
  const weights = nodes.map((n) => tensors.get(n.weight));
  const same = (f) => nodes.every((n) => f(n) === f(nodes[0]));
  if (!same((n) => JSON.stringify(n.kernels)) || !same((n) => Boolean(n.bias))) return null;
  if (!ownActivations && !same((n) => n.activation)) return null;
  const m = weights[0].entry.matrix;
  const shape = (w) => JSON.stringify({ ...w.entry.matrix, rows: 0 });
  if (weights.some((w) => shape(w) !== shape(weights[0]))) return null;
  if (m.groups_per_row === 0 && 'scales' in weights[0].parts) return null; // one scale for the whole tensor
  // a fitted codebook for the whole tensor (the -optimal formats' per-tensor levels) cannot be split by
  // rows; the vector codebooks' tables (e8p, ...) are the bundle's one shared buffer and fuse like scales
  const codebook = weights[0].parts.codebook;
  if (codebook && !codebook.shared && !(m.codebook_stride > 0)) return null;
  // codebook formats: one rotation of the shared input serves all three only when their seeds agree
  const seed = rotationSeed(weights[0]);
  if (weights.some((w) => rotationSeed(w) !== seed)) return null;
  const rows = weights.map((w) => w.entry.matrix.rows);
  const perRow = (pieces) => pieces.every((p, i) => p && p.length % rows[i] === 0
    && p.length / rows[i] === pieces[0].length / rows[0]);
  let aligned = true;
  const parts = {};
  for (const part of Object.keys(weights[0].parts)) {
    // the seed rotates x (not bound); the codebook tables are the bundle's one buffer (bound as they are)
    if (part === 'seeds' || weights[0].parts[part].shared) continue;
    const pieces = weights.map((w) => w.parts[part]?.bytes);
    if (!perRow(pieces)) return null;
    aligned &&= pieces.every((p) => p.length === pieces[0].length && p.length % STORAGE_ALIGN === 0);
    parts[part] = pieces;
  }
  const bias = nodes[0].bias ? nodes.map((n) => tensors.get(n.bias).parts.codes.bytes) : null;
  if (bias && !perRow(bias)) return null;
  if (bias) aligned &&= bias.every((p) => p.length === bias[0].length && p.length % STORAGE_ALIGN === 0);
  const total = rows.reduce((a, b) => a + b, 0);
  return { nodes, parts, bias, matrix: { ...m, rows: total }, hidden: m.rows, widths: rows, aligned,
    codebook: Boolean(weights[0].parts.codebook?.shared) };
}

/** Two steps' dims hold the same values (replays usually pass equal objects, compared field by field). */
function sameDims(a, b) {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
}


export class GpuBackend {
  static async create(adapter, manifest, tensors, profile, baseUrl, poison) {
    // Benchmarks set globalThis.ULPQ_GPU_TIMING = true to time every dispatch (timestamp queries,
    // one pass per dispatch: slower, for finding where the time goes, never for a real run).
    const timing = globalThis.ULPQ_GPU_TIMING === true && adapter.features.has('timestamp-query');
    // Optional features (subgroups, shader-f16) are negotiated like limits: requested when the
    // adapter offers them and this profile ships variants for them, used only where the device
    // grants them. Benchmarks and tests set globalThis.ULPQ_GPU_FEATURES to a list (e.g. []) to
    // allow only those, running the base variants beside the feature ones on one adapter.
    const allowed = Array.isArray(globalThis.ULPQ_GPU_FEATURES) ? globalThis.ULPQ_GPU_FEATURES : null;
    const wanted = chooseFeatures(manifest, profile.name, adapter.features, allowed, adapter.info ?? null);
    let t = performance.now();
    const device = await adapter.requestDevice({ requiredLimits: { ...profile.required_limits },
      requiredFeatures: [...wanted, ...(timing ? ['timestamp-query'] : [])] });
    const backend = new GpuBackend(device, manifest, profile, poison, baseUrl);
    backend.timing = timing;
    backend.features = wanted.filter((f) => device.features.has(f));
    backend.adapterInfo = adapter.info ?? null; // which feature variants run also depends on the vendor (variants.policyAllows)
    const info = adapter.info ?? {};
    backend.subgroupSizes = info.subgroupMinSize ? { min: info.subgroupMinSize, max: info.subgroupMaxSize } : null;
    // where initialisation goes (benchmarks report it): ms per stage
    const lap = (name) => { const now = performance.now(); backend.initTimings[name] = now - t; t = now; };
    lap('device_ms');
    try {
      const compiled = await backend.#startCompiling();
      lap('shaders_ms');
      try {
        backend.tensors = await tensors; // a download still under way: the pipelines compile meanwhile
      } catch (err) {
        throw new WeightsFailed(err);
      }
      lap('weights_wait_ms');
      backend.#upload();
      lap('upload_ms');
      await compiled();
      lap('compile_ms'); // what the pipelines still took after the upload
    } catch (err) {
      device.destroy();
      throw err;
    }
    return backend;
  }

  constructor(device, manifest, profile, poison, baseUrl) {
    this.path = 'webgpu';
    this.timing = false; // per-dispatch timestamps (create() sets it)
    this.features = []; // the optional features whose shader variants this device runs (create() sets them)
    this.subgroupSizes = null; // {min, max} where the adapter reports them
    this.adapterInfo = null; // GPUAdapterInfo (create() sets it)
    this.baseUrl = baseUrl;
    this.device = device;
    this.manifest = manifest;
    this.tensors = null; // the weight table: create() sets it once the weights are in (they may still be downloading)
    this.profile = profile;
    this.poison = poison;
    this.lost = null;
    device.lost.then((info) => { this.lost = info; });
    this.pipelines = new Map();
    this.weights = new Map();
    this.weightBuffers = [];
    this.fused = new Map(); // query weight name -> {resources, bias, matrix, node, hidden}
    this.plans = new Map(); // shape key -> plan (Map order = least recently used first)
    this.layouts = new Map(); // structure signature -> layout (least recently used first)
    // The activation buffers every layout shares (#allocate): a layout's j-th activation slot is
    // arena[j], sized for the largest need of any layout. Runs execute one after another in queue
    // order, and no activation outlives its run (inputs, which a run may leave for the next one
    // (`feed`), have buffers of their own), so one set serves every structure: a new structure
    // makes bind groups, not buffers, and the buffers held are the largest run's, not their sum.
    this.arena = []; // {buffer, capacity}
    this.arenaVersion = 0; // bumped when an arena buffer is replaced: layouts then re-bind (#bind)
    this.limits = { ...LIMITS };
    this.weightIds = new WeakMap(); // weight binding resource -> number, for structure signatures
    this.nextWeightId = 0;
    this.run = null; // the plan being recorded or replayed
    this.preparing = false; // prepare(): runs are planned and their GPU objects made, not run
    this.initTimings = {};
    this.pipelineReadyMs = {}; // shader key -> ms from the start of compiling to its pipeline (#startCompiling)
    /** @type {{buffer: GPUBuffer} | null} */
    this.noResidual = null; // what a runtime epilogue binds as `residual` where it adds none (#residualFor)
    this.stats = { plansBuilt: 0, layoutsBuilt: 0, layoutsGrown: 0, buffersCreated: 0, bindGroupsCreated: 0,
      pipelinesCreated: 0, dispatches: 0, passes: 0, paramsWrites: 0 };
  }

  /**
   * Fetch (sha256-checked) every shader of this profile and start creating every pipeline, all in
   * flight at once; resolves, once they are started, to a function that waits for them. The caller
   * uploads the weights meanwhile, so the driver compiles while JS copies (a tampered shader still
   * fails the load, and the first run at any shape compiles nothing). Only this profile's shaders
   * are fetched, and a file that serves several keys is fetched and compiled once.
   */
  async #startCompiling() {
    const { shaders, files } = profileShaders(this.manifest, this.profile.name, this.features, this.adapterInfo);
    const codes = await Promise.all(files.map((f) => fetchVerifiedText(this.baseUrl, f.file, f.sha256)));
    this.device.pushErrorScope('validation');
    const modules = new Map(files.map((f, i) => [f.file, this.device.createShaderModule({ code: codes[i], label: f.file })]));
    // when each pipeline was ready, ms from the start of compiling (benchmarks report where a cold
    // driver cache spends initialisation)
    const started = performance.now();
    const pending = Promise.allSettled(shaders.map((shader) => this.device.createComputePipelineAsync({
      layout: 'auto', compute: { module: modules.get(shader.file), entryPoint: 'main' }, label: shader.key })
      .then((pipeline) => { this.pipelineReadyMs[shader.key] = performance.now() - started; return pipeline; })));
    // the scope holds the modules' validation errors; a pipeline that fails rejects its own promise
    const scope = this.device.popErrorScope();
    scope.catch(() => {}); // awaited below; if the upload fails first, nothing waits for it
    return async () => {
      const [results, error] = await Promise.all([pending, scope]);
      results.forEach((r, i) => {
        if (r.status === 'rejected') throw new Error(`${shaders[i].file}: ${r.reason?.message ?? r.reason}`);
      });
      if (error) throw new Error(`shader validation: ${error.message}`);
      shaders.forEach((shader, i) => this.pipelines.set(shader.key, { shader, pipeline: /** @type {PromiseFulfilledResult<GPUComputePipeline>} */ (results[i]).value }));
      this.stats.pipelinesCreated += shaders.length;
    };
  }

  /** The bundle's codebook tables (formats with levels 'codebook'), one buffer for every tensor. */
  #sharedCodebook() {
    if (!this.codebookResource) {
      const tables = Uint32Array.from(this.manifest.codebooks.tables);
      this.codebookResource = { buffer: this.#buffer(new Uint8Array(tables.buffer), 'codebooks') };
    }
    return this.codebookResource;
  }

  /** A storage buffer holding `bytes`, or the concatenation of `bytes` (an array of pieces, written in place: no joined copy). */
  #buffer(bytes, label) {
    const pieces = Array.isArray(bytes) ? bytes : [bytes];
    const length = pieces.reduce((sum, p) => sum + p.length, 0);
    const buffer = this.device.createBuffer({ size: Math.max(4, ceil4(length)), usage: GPUBufferUsage.STORAGE, mappedAtCreation: true, label });
    const mapped = new Uint8Array(buffer.getMappedRange());
    let at = 0;
    for (const p of pieces) { mapped.set(p, at); at += p.length; }
    buffer.unmap();
    this.weightBuffers.push(buffer);
    return buffer;
  }

  /**
   * Every tensor part as a binding resource {buffer, offset?, size?}. Q/K/V triples that can be
   * fused share one buffer per part (`this.fused` maps the query weight to the fused matrix).
   */
  #upload() {
    const placed = new Set();
    // a decoder's graph reads Q|K|V as one product, always; an encoder's only where views are free
    const decoder = Boolean(this.manifest.model.positions);
    const groups = [];
    for (const layer of this.manifest.model.layers ?? []) {
      groups.push({ fused: qkvLayout(this.tensors, layer), copyAllowed: decoder });
      // a gated decoder's gate|up as one product (one dispatch where there were two, each step),
      // only as views of one upload: never stored twice
      if (decoder && layer.gate && layer.up) groups.push({ fused: fusedLayout(this.tensors, [layer.gate, layer.up], true), copyAllowed: false });
    }
    for (const { fused: qkv, copyAllowed } of groups) {
      if (!qkv || !(qkv.aligned || copyAllowed)) continue;
      const name = `${qkv.nodes[0].weight}+${qkv.nodes.length - 1}`;
      // unaligned pieces (a small decoder's K/V scales): the fused copy for the graph, the separate
      // tensors uploaded as well below (the self-test's product reads the query alone)
      const views = qkv.aligned;
      const view = (buffer, pieces, i) => ({ buffer, offset: i * pieces[0].length, size: pieces[0].length });
      const whole = {};
      if (views) qkv.nodes.forEach((n) => this.weights.set(n.weight, {}));
      for (const [part, pieces] of Object.entries(qkv.parts)) {
        const buffer = this.#buffer(pieces, `${name}:${part}`);
        whole[`w.${part}`] = { buffer };
        if (views) qkv.nodes.forEach((n, i) => { this.weights.get(n.weight)[part] = view(buffer, pieces, i); });
      }
      let bias = null;
      if (qkv.bias) {
        const buffer = this.#buffer(qkv.bias, `${name}:bias`);
        bias = { buffer };
        if (views) qkv.nodes.forEach((n, i) => { this.weights.set(n.bias, { codes: view(buffer, qkv.bias, i) }); placed.add(n.bias); });
      }
      if (qkv.codebook) {
        whole['w.codebook'] = this.#sharedCodebook();
        if (views) qkv.nodes.forEach((n) => { this.weights.get(n.weight).codebook = this.#sharedCodebook(); });
      }
      if (views) qkv.nodes.forEach((n) => placed.add(n.weight));
      this.fused.set(qkv.nodes[0].weight, { resources: whole, bias, matrix: qkv.matrix, node: qkv.nodes[0], hidden: qkv.hidden,
        widths: qkv.widths });
    }
    for (const [name, tensor] of this.tensors) {
      if (placed.has(name)) continue;
      const parts = {};
      for (const [part, { bytes, shared }] of Object.entries(tensor.parts)) {
        if (part === 'seeds') continue; // rotates x on the way in (#rotated), never bound
        parts[part] = shared ? this.#sharedCodebook() : { buffer: this.#buffer(bytes, `${name}:${part}`) };
      }
      this.weights.set(name, parts);
    }
  }

  // ---- recording and replaying -------------------------------------------------------------

  /**
   * Start a run. `shapeKey` names the input shape (the graph passes e.g. 'bert:8x18'); a run with
   * a key seen before replays its plan, a new key records one. Without a key the run is recorded
   * and its plan discarded afterwards (one-off runs such as the self-test).
   */
  begin(shapeKey = null) {
    if (this.lost) throw this.#lostError();
    // A run left unfinished was abandoned by an exception in the graph (graphs are synchronous
    // up to output(), which clears `run` before it awaits): its recording is simply dropped.
    const plan = shapeKey === null ? null : this.plans.get(shapeKey);
    if (plan) {
      this.plans.delete(shapeKey); // re-insert: most recently used last
      this.plans.set(shapeKey, plan);
      this.run = { plan, cursor: 0, replay: true };
    } else {
      this.run = { plan: { key: shapeKey, steps: [], values: [] }, cursor: 0, replay: false };
    }
  }

  /** The next step: replayed (checked against the recording) or recorded by `make`. */
  #step(kind, make) {
    const run = this.run;
    if (!run) throw new Error('begin() must start a run');
    if (run.replay) {
      const step = run.plan.steps[run.cursor++];
      if (!step || step.kind !== kind) throw new Error(`plan ${run.plan.key}: step ${run.cursor - 1} is ${step?.kind}, the graph asked for ${kind}`);
      return step;
    }
    const step = { kind, ...make() };
    run.plan.steps.push(step);
    run.cursor++;
    return step;
  }

  /** A new activation value (its buffer is assigned when the plan is built). */
  #value(rows, cols, extra = {}) {
    const plan = this.run.plan;
    const value = { id: plan.values.length, rows, cols, bytes: rows * cols * 4, ...extra };
    plan.values.push(value);
    return value;
  }

  /**
   * A dispatch step; its resources and output value are made only when it is recorded. `outName`:
   * the binding the output value takes (default y). A replayed step whose dims differ from the
   * recording (a decode step's cache slot) keeps its buffers and bind group; only its params (and
   * grid) are written anew before the run.
   */
  #dispatchStep(kind, key, resources, dims, out, outName = 'y') {
    const run = this.run;
    const step = this.#step(kind, () => {
      if (!this.pipelines.has(key)) throw new Error(`no pipeline ${key} for profile ${this.profile.name}`);
      const made = { key, resources: resources(), dims, out: out() };
      if (outName !== 'y') made.resources[outName] = made.out;
      return made;
    });
    if (run.replay && step.dims !== dims && !sameDims(step.dims, dims)) {
      if (step.key !== key) throw new Error(`plan ${run.plan.key}: step ${run.cursor - 1} runs ${step.key}, the graph asked for ${key}`);
      step.dims = dims;
      (run.changed ??= []).push(step);
    }
    return step.out;
  }

  /**
   * A weightless operator of the model's op_kernels (`role`) over values and fixed buffers
   * (`resources`: binding name -> value or {buffer}), writing a new value of rows x cols (bound as
   * `outName`; `bytes` overrides its size). For graphs outside this module (decoder_webgpu.js).
   */
  operator(kind, role, resources, dims, rows, cols, outName = 'y') {
    return this.#dispatchStep(kind, this.#op(role), () => ({ ...resources }), dims, () => this.#value(rows, cols), outName);
  }

  /** The shader entry (tiles, workgroup size, dispatch rule) serving op_kernels role `role`. */
  operatorShader(role) {
    return this.pipelines.get(this.#op(role)).shader;
  }

  /**
   * A storage buffer that lives as long as the backend (a decoder's KV cache, its keep mask): a
   * binding resource {buffer} steps may read and write like weights. Written with `data` when given.
   */
  storageBuffer(bytes, label, data = null) {
    const buffer = this.device.createBuffer({ size: Math.max(4, ceil4(bytes)), label,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
    this.stats.buffersCreated++;
    if (data) this.device.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, data.byteLength);
    this.weightBuffers.push(buffer);
    return { buffer };
  }

  /** A plan input: a buffer of the typed array's size, written with `typed` at every run. */
  input(typed, rows, cols) {
    const { out } = this.#step('input', () => ({ out: this.#value(rows, cols, { input: true, bytes: typed.byteLength }) }));
    if (typed.byteLength !== out.bytes) {
      throw new Error(`plan ${this.run.plan.key}: input of ${typed.byteLength} bytes where the plan holds ${out.bytes}`);
    }
    (this.run.writes ??= []).push([out, typed]);
    return out;
  }

  /**
   * A plan input that the previous run of this plan left on the device (submit's `feed`): its
   * buffer is not written. `bytes` must be the recorded input's.
   */
  inputOnDevice(rows, cols, bytes) {
    const { out } = this.#step('input', () => ({ out: this.#value(rows, cols, { input: true, bytes }) }));
    if (bytes !== out.bytes) throw new Error(`plan ${this.run.plan.key}: input of ${bytes} bytes where the plan holds ${out.bytes}`);
    if (!this.run.replay) throw new Error(`plan ${this.run.plan.key}: an input on the device needs the plan recorded with it written`);
    return out;
  }

  /** A storage buffer holding a typed array (token ids, masks, positions). */
  upload(typed) {
    return this.input(typed, 1, typed.length);
  }

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

  static #matrixDims(m, rows) {
    return { m: rows, n: m.rows, k: m.k, words_per_row: m.words_per_row, groups_per_row: m.groups_per_row,
      group_size: m.group_size, codebook_stride: m.codebook_stride, k_split: m.k };
  }

  /**
   * y = act(x W^T + b) (+ r) for a node's kernels: the GEMV, a GEMM tile size by row count, or the
   * small-tile GEMM cut along K (partial sums, then the splitk kernel's epilogue) when its tiles
   * alone would leave most of the GPU idle.
   */
  #matmul(kind, node, h, matrix, weightResources, bias, residual, prologue = null) {
    const kernels = node.kernels[this.profile.name];
    const thresholds = this.manifest.matmul;
    let key = matmulKey(kernels, h.rows, thresholds);
    const dims = { ...GpuBackend.#matrixDims(matrix, h.rows), ...this.#epilogueDims(node, residual) };
    if (prologue) {
      // the operator before this product fused into its GEMV (kernels.PROLOGUE); callers ask fuses() first
      const fusedKey = kernels[`gemv_${prologue.kind}`];
      if (key !== kernels.gemv || !fusedKey) throw new Error(`${kind}: no GEMV with the ${prologue.kind} prologue serves ${h.rows} rows`);
      [kind, key] = [`${kind}+${prologue.kind}`, fusedKey];
      Object.assign(dims, prologue.dims);
    }
    const picksActivation = (k) => this.pipelines.get(k)?.shader.params.some(([name]) => name === 'act');
    if (dims.act < 0 && (picksActivation(key) || picksActivation(kernels.split_finish))) {
      throw new Error(`${node.weight}: its activation '${node.activation}' is none of the kernels' (${this.manifest.matmul.activations})`);
    }
    if (key === kernels.gemm_small && kernels.gemm_split) {
      const tiles = this.pipelines.get(kernels.gemm_split).shader.tiles;
      dims.k_split = splitFor(h.rows, matrix.rows, matrix.k, tiles, thresholds);
    }
    if (dims.k_split === matrix.k) {
      return this.#dispatchStep(kind, key, () => {
        const resources = { x: h, ...weightResources(), ...prologue?.resources };
        if (bias) resources.bias = bias;
        resources.residual = this.#residualFor(key, residual);
        return resources;
      }, dims, () => this.#value(h.rows, matrix.rows));
    }
    const splits = Math.ceil(matrix.k / dims.k_split);
    const partial = this.#dispatchStep(`${kind}:split`, kernels.gemm_split, () => ({ x: h, ...weightResources() }), dims,
      () => this.#value(splits * h.rows, matrix.rows));
    return this.#dispatchStep(`${kind}:finish`, kernels.split_finish, () => {
      const resources = { partial };
      if (bias) resources.bias = bias;
      resources.residual = this.#residualFor(kernels.split_finish, residual);
      return resources;
    }, { m: h.rows, n: matrix.rows, splits, count: h.rows * matrix.rows, act: dims.act, add_residual: dims.add_residual },
    () => this.#value(h.rows, matrix.rows));
  }

  /**
   * The uniforms of a runtime epilogue (kernels.RUNTIME: one program for every product of a format
   * and tile, the activation and residual chosen per dispatch): `act`, the node's activation as an
   * index into the manifest's list (-1: not one the kernels know; #matmul refuses it where a kernel
   * would read it), and `add_residual`. Kernels whose epilogue is in their key ignore both.
   */
  #epilogueDims(node, residual) {
    return { act: (this.manifest.matmul.activations ?? []).indexOf(node.activation ?? 'none'), add_residual: residual ? 1 : 0 };
  }

  /**
   * What a product binds as `residual`: the residual, or where a runtime epilogue adds none (its
   * program binds the slot either way), a 16-byte buffer it never reads (add_residual is 0).
   */
  #residualFor(key, residual) {
    const shader = this.pipelines.get(key)?.shader;
    if (!shader || !('residual' in shader.bindings)) return residual;
    return residual ?? (this.noResidual ??= { buffer: this.#buffer(new Uint8Array(16), 'no residual') });
  }

  /**
   * x rotated for a codebook-format matrix stored as W R^T (ulpq_build/vq/): the hadamard kernel
   * writes R x[r, :] per row; x itself where the weight is not rotated. The rotation runs as its own
   * dispatch: the operators before a product (LayerNorm, GELU, attention across heads) do not
   * commute with a rotation of the whole row, so it cannot fold into them.
   */
  #rotated(h, node, tensor) {
    const seed = rotationSeed(tensor);
    if (!seed) return h;
    const key = node.kernels[this.profile.name].hadamard;
    if (!key) throw new Error(`${node.weight}: its inputs are rotated but the bundle ships no hadamard kernel; rebuild it`);
    if (h.stride !== undefined && h.stride !== h.cols) throw new Error(`${node.weight}: rotating a strided view is not supported`);
    const n = tensor.entry.matrix.k;
    return this.#dispatchStep('hadamard', key, () => ({ x: h }), { rows: h.rows, n, p: splitSize(n).p, seed },
      () => this.#value(h.rows, n));
  }

  /**
   * Can `node`'s product over `rows` input rows take the operator before it fused in: `kind` 'norm'
   * (RMSNorm) or 'gate' (act(gate) * up)? Only as a GEMV, and only where the bundle ships that
   * variant (decoders' products whose input is not rotated; bundle.py decoder_prologues).
   */
  fuses(node, rows, kind) {
    const kernels = node.kernels[this.profile.name];
    return Boolean(kernels[`gemv_${kind}`]) && matmulKey(kernels, rows, this.manifest.matmul) === kernels.gemv;
  }

  /**
   * The prologue arguments of linear() and its fused forms: RMSNorm with gamma (a float32 weight
   * name) and eps; or x = act(gate) * up, x bound to the value holding the gate (`h`), `up` the
   * value holding up, each row `inStride` floats with the two at `gateOff` / `upOff`.
   */
  normPrologue(gammaName, eps) {
    return { kind: 'norm', resources: { norm: this.#plain(gammaName) }, dims: { eps } };
  }

  gatePrologue(up, inStride, gateOff, upOff) {
    return { kind: 'gate', resources: { up }, dims: { in_stride: inStride, gate_off: gateOff, up_off: upOff } };
  }

  linear(h, node, residual = null, prologue = null) {
    const tensor = this.tensors.get(node.weight);
    const m = tensor.entry.matrix;
    return this.#matmul('linear', node, this.#rotated(h, node, tensor), m,
      () => this.#weightResources(node.weight), node.bias ? this.#plain(node.bias) : null, residual, prologue);
  }

  /**
   * Q, K and V of an attention layer from one GEMM when the bundle's weights allow it (else null:
   * the graph then runs three projections). Returns column views into one [rows, 3 * hidden] value.
   */
  /**
   * A decoder layer's Q|K|V as one [rows, q + 2 kv columns] product (a GPT-2 c_attn node, or the
   * query/key/value weights fused at upload), or null when the bundle's weights cannot be fused.
   */
  linearQKVWhole(h, layer, prologue = null) {
    if (layer.qkv) return this.linear(h, layer.qkv, null, prologue);
    const fused = this.fused.get(layer.query.weight);
    if (!fused) return null;
    const x = this.#rotated(h, fused.node, this.tensors.get(fused.node.weight));
    return this.#matmul('qkv', fused.node, x, fused.matrix, () => fused.resources, fused.bias, null, prologue);
  }

  /**
   * A gated decoder layer's gate|up as one [rows, 2 x intermediate] product (gate's columns first)
   * where their weights were fused at upload, else null (two products).
   */
  linearGateUp(h, layer, prologue = null) {
    const fused = layer.gate && this.fused.get(layer.gate.weight);
    if (!fused) return null;
    const x = this.#rotated(h, fused.node, this.tensors.get(fused.node.weight));
    return this.#matmul('gate_up', fused.node, x, fused.matrix, () => fused.resources, fused.bias, null, prologue);
  }

  linearQKV(h, layer) {
    const fused = this.fused.get(layer.query.weight);
    if (!fused || fused.widths.some((w) => w !== fused.hidden)) return null;
    const x = this.#rotated(h, fused.node, this.tensors.get(fused.node.weight));
    const out = this.#matmul('qkv', fused.node, x, fused.matrix, () => fused.resources, fused.bias, null);
    const view = (offset) => ({ ...out, cols: fused.hidden, stride: fused.matrix.rows, offset, base: out });
    return { q: view(0), k: view(fused.hidden), v: view(2 * fused.hidden) };
  }

  embed(node, ids, count, into = null) {
    const m = this.tensors.get(node.table).entry.matrix;
    if (rotationSeed(this.tensors.get(node.table))) throw new Error(`${node.table}: a rotated table; no kernel un-rotates gathered rows, rebuild the bundle`);
    const key = node.kernels[this.profile.name][into ? 'accumulate' : 'first'];
    const dims = { tokens: count, n: m.rows, k: m.k, words_per_row: m.words_per_row, groups_per_row: m.groups_per_row,
      group_size: m.group_size, codebook_stride: m.codebook_stride, count: count * m.k };
    const out = this.#dispatchStep('embed', key, () => ({ ids, ...this.#weightResources(node.table), y: into }), dims,
      () => into ?? this.#value(count, m.k));
    return into ?? out;
  }

  layernorm(h, node, eps) {
    return this.#dispatchStep('layernorm', this.#op('layernorm'),
      () => ({ x: h, gamma: this.#plain(node.weight), beta: this.#plain(node.bias) }),
      { rows: h.rows, cols: h.cols, eps }, () => this.#value(h.rows, h.cols));
  }

  attention(q, k, v, mask, dims) {
    const key = this.#op('attention');
    const maxSeq = this.pipelines.get(key).shader.tiles.max_seq;
    if (dims.seq > maxSeq) throw new Error(`attention over ${dims.seq} tokens exceeds this bundle's ${maxSeq}`);
    const cols = dims.heads * dims.head_dim;
    const stride = q.stride ?? cols;
    if ((k.stride ?? cols) !== stride || (v.stride ?? cols) !== stride) throw new Error('attention: q, k and v must share a row stride');
    const full = { ...dims, scale: 1 / Math.sqrt(dims.head_dim), in_stride: stride,
      q_off: q.offset ?? 0, k_off: k.offset ?? 0, v_off: v.offset ?? 0 };
    return this.#dispatchStep('attention', key, () => {
      const resources = { q: q.base ?? q, k: k.base ?? k, v: v.base ?? v };
      if (mask) resources.mask = mask;
      return resources;
    }, full, () => this.#value(q.rows, cols));
  }

  meanpool(h, mask, dims) {
    return this.#dispatchStep('meanpool', this.#op('meanpool'), () => ({ x: h, mask }), dims,
      () => this.#value(dims.batch, dims.hidden));
  }

  im2col(image, dims) {
    const grid = Math.floor(dims.height / dims.patch_size) * Math.floor(dims.width / dims.patch_size);
    const cols = dims.channels * dims.patch_size * dims.patch_size;
    return this.#dispatchStep('im2col', this.#op('im2col'), () => ({ image }), { ...dims, count: dims.batch * grid * cols },
      () => this.#value(dims.batch * grid, cols));
  }

  vitTokens(patches, clsName, posName, dims) {
    const rows = dims.batch * (dims.patches + 1);
    return this.#dispatchStep('vit_tokens', this.#op('vit_tokens'),
      () => ({ patches, cls: this.#plain(clsName), pos: this.#plain(posName) }),
      { ...dims, count: rows * dims.hidden }, () => this.#value(rows, dims.hidden));
  }

  /** Rows `ids` of an activation (an embed over float32 storage: the activation is the table). */
  rows(h, ids, count) {
    const dims = { tokens: count, n: h.rows, k: h.cols, words_per_row: h.cols, groups_per_row: 0, group_size: h.cols,
      codebook_stride: 0, count: count * h.cols };
    return this.#dispatchStep('rows', this.#op('rows'), () => ({ ids, 'w.codes': h }), dims, () => this.#value(count, h.cols));
  }

  // ---- adopting a plan: its layout, then its own params and grids ---------------------------

  /**
   * Give a recorded run its layout (found by structure, else made) and fill in what is the shape's
   * own: the params bytes, the workgroup grids, each value's slot. Grows the layout's buffers when
   * this shape needs more than they hold.
   */
  #adopt(plan, output) {
    const started = performance.now();
    const steps = plan.steps.filter((s) => s.key);
    for (const step of steps) {
      if (!step.resources.y) step.resources.y = step.out;
    }
    const signature = this.#signature(plan, steps, output);
    let layout = this.layouts.get(signature);
    if (!layout) {
      layout = this.#layoutFor(plan, steps, output, signature);
      this.layouts.set(signature, layout);
      this.stats.layoutsBuilt++;
    }
    const need = layout.slots.map(() => 0);
    for (const value of plan.values) {
      value.slot = layout.slotOf[value.id];
      need[value.slot] = Math.max(need[value.slot], value.bytes);
    }
    layout.need = need.map((bytes, i) => Math.max(bytes, layout.need?.[i] ?? 0)); // what its shapes ask of each slot
    if (need.some((bytes, i) => !this.#slotBuffer(layout, i)?.buffer || bytes > this.#slotBuffer(layout, i).capacity)) this.#allocate(layout, need);
    const staging = new Uint8Array(layout.paramsBytes);
    steps.forEach((step, i) => staging.set(new Uint8Array(packParams(layout.steps[i].shader, step.dims)), layout.paramsOffsets[i]));
    plan.layout = layout;
    plan.staging = staging;
    plan.grids = steps.map((step, i) => workgroups(layout.steps[i].shader, step.dims));
    plan.output = output;
    plan.outputBytes = output.rows * output.cols * 4;
    this.stats.plansBuilt++;
    this.stats.lastBuildMs = performance.now() - started; // JS + API time to adopt the plan (and make its layout, if new)
  }

  /** The structure of a run: each dispatch's kernel and what it reads and writes (value ids, weights), the inputs, the output. */
  #signature(plan, steps, output) {
    const ref = (r) => {
      if (r.id !== undefined) return `v${r.id}`;
      return `w${this.#weightId(r)}`;
    };
    const inputs = plan.values.filter((v) => v.input).map((v) => v.id).join(',');
    const body = steps.map((s) => `${s.key}(${Object.entries(s.resources).filter(([, r]) => r)
      .map(([name, r]) => `${name}=${ref(r)}`).join(',')})`).join(';');
    return `${inputs}|${body}|${output.id}`;
  }

  #weightId(resource) {
    let id = this.weightIds.get(resource);
    if (id === undefined) {
      id = ++this.nextWeightId;
      this.weightIds.set(resource, id);
    }
    return id;
  }

  /**
   * A new layout for a structure: every value a slot (inputs and the output their own; the rest
   * shared where lifetimes allow, best fit by this shape's sizes), the params offsets per dispatch.
   */
  #layoutFor(plan, steps, output, signature) {
    const last = new Map(); // value id -> the last step reading it
    steps.forEach((step, i) => {
      for (const r of Object.values(step.resources)) if (r && r.id !== undefined) last.set(r.id, i);
      last.set(step.out.id, Math.max(last.get(step.out.id) ?? i, i));
    });
    const slots = [];
    const slotOf = [];
    let shared = 0; // the next arena index
    const newSlot = (bytes, usage, arena = null) => { slots.push({ bytes, usage, capacity: 0, buffer: null, arena }); return slots.length - 1; };
    for (const value of plan.values) {
      if (value.input) slotOf[value.id] = newSlot(value.bytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
    }
    const free = []; // {slot, until}: slots whose value is read last at step `until`; later steps may take them
    steps.forEach((step, i) => {
      const value = step.out;
      if (slotOf[value.id] !== undefined) return; // an input, or an accumulate into an existing value
      let slot;
      if (value !== output) {
        let best = -1;
        free.forEach((f, j) => {
          if (f.until >= i) return;
          const size = slots[f.slot].bytes;
          const fits = size >= value.bytes;
          const bestSize = best < 0 ? 0 : slots[free[best].slot].bytes;
          const bestFits = best >= 0 && bestSize >= value.bytes;
          // the smallest slot that fits, else the largest that does not (it grows)
          if (best < 0 || (fits && (!bestFits || size < bestSize)) || (!fits && !bestFits && size > bestSize)) best = j;
        });
        if (best >= 0) {
          slot = free[best].slot;
          free.splice(best, 1);
          slots[slot].bytes = Math.max(slots[slot].bytes, value.bytes);
        }
      }
      slot ??= newSlot(value.bytes, ACTIVATION_USAGE(), shared++);
      slotOf[value.id] = slot;
      if (value !== output) free.push({ slot, until: last.get(value.id) });
    });
    const stride = (shader) => alignUp(Math.max(16, Math.ceil((shader.params.length * 4) / 16) * 16), UNIFORM_ALIGN);
    const paramsOffsets = [];
    let paramsBytes = 0;
    const layoutSteps = steps.map((step) => {
      const { shader, pipeline } = this.pipelines.get(step.key);
      paramsOffsets.push(paramsBytes);
      paramsBytes += stride(shader);
      const resources = Object.fromEntries(Object.entries(step.resources).filter(([, r]) => r)
        .map(([name, r]) => [name, r.id !== undefined ? { slot: slotOf[r.id] } : r]));
      return { kind: step.kind, key: step.key, shader, pipeline, bindGroupLayout: this.#groupLayout(step.key), resources,
        paramsSize: stride(shader) };
    });
    const params = this.device.createBuffer({ size: paramsBytes, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'params' });
    this.stats.buffersCreated++;
    return { signature, slots, slotOf, steps: layoutSteps, params, paramsBytes, paramsOffsets,
      outputSlot: slotOf[output.id], bindGroups: [], boundTo: [], boundVersion: -1, readbacks: [], current: null, bytes: paramsBytes,
      poisonSlots: [...new Set(steps.filter((s) => !s.out.input).map((s) => slotOf[s.out.id]))] };
  }

  /**
   * Make the slots' buffers hold `need` bytes: a layout's own input buffers are (re)created when
   * missing or too small, the arena's shared ones replaced by larger ones (capacities rounded up to
   * a power of two, so a page meeting ever longer inputs grows a few times, not at every length).
   * Bind groups follow at the next run (#bind).
   */
  #allocate(layout, need) {
    let grown = false;
    layout.slots.forEach((slot, i) => {
      const capacity = Math.max(MIN_SLOT_BYTES, 2 ** Math.ceil(Math.log2(Math.max(need[i], slot.bytes, 4))));
      if (slot.arena === null) {
        if (slot.buffer && slot.capacity >= need[i]) return;
        grown ||= Boolean(slot.buffer);
        slot.buffer?.destroy();
        slot.capacity = capacity;
        slot.buffer = this.device.createBuffer({ size: capacity, usage: slot.usage, label: `input ${i}` });
        this.stats.buffersCreated++;
        return;
      }
      const shared = this.arena[slot.arena];
      if (!shared || shared.capacity < need[i]) {
        grown ||= Boolean(shared);
        // a run already submitted keeps using the old buffer until it is done (destroy waits for the queue)
        shared?.buffer.destroy();
        this.arena[slot.arena] = { capacity, buffer: this.device.createBuffer({ size: capacity, usage: ACTIVATION_USAGE(), label: `activations ${slot.arena}` }) };
        this.arenaVersion++;
        this.stats.buffersCreated++;
      }
    });
    if (grown) this.stats.layoutsGrown++;
    this.#measure(layout);
  }

  /** A layout's slots as they are now (arena slots read through): {buffer, capacity}. */
  #slotBuffer(layout, i) {
    const slot = layout.slots[i];
    return slot.arena === null ? slot : this.arena[slot.arena];
  }

  /** Bytes a layout holds of its own: params and input buffers (the arena is counted once, in memoryBytes). */
  #measure(layout) {
    layout.bytes = layout.paramsBytes + layout.slots.reduce((sum, s) => sum + (s.arena === null ? s.capacity : 0), 0);
  }

  /**
   * Make every bind group of `layout` that names a buffer replaced since it was made (all of them
   * the first time); nothing when no buffer changed (a steady run checks one number).
   */
  #bind(layout) {
    if (layout.boundVersion === this.arenaVersion && layout.bindGroups.length) {
      if (layout.slots.every((s) => s.arena !== null || s.buffer === s.boundBuffer)) return;
    }
    const buffers = layout.slots.map((_, i) => this.#slotBuffer(layout, i).buffer);
    layout.steps.forEach((step, i) => {
      const slots = Object.values(step.resources).filter((r) => r.slot !== undefined).map((r) => r.slot);
      const current = slots.map((j) => buffers[j]);
      const made = layout.boundTo[i];
      if (made && current.every((b, k) => b === made[k])) return;
      const entries = Object.entries(step.shader.bindings).map(([name, binding]) => {
        if (name === 'params') return { binding, resource: { buffer: layout.params, offset: layout.paramsOffsets[i], size: step.paramsSize } };
        const r = step.resources[name];
        if (!r) throw new Error(`${step.key}: nothing bound to '${name}'`);
        if (r.slot !== undefined) return { binding, resource: { buffer: buffers[r.slot] } };
        if (!r.buffer) throw new Error(`${step.key}: nothing bound to '${name}'`);
        return { binding, resource: r.offset !== undefined ? { buffer: r.buffer, offset: r.offset, size: r.size } : { buffer: r.buffer } };
      });
      this.stats.bindGroupsCreated++;
      layout.bindGroups[i] = this.device.createBindGroup({ layout: step.bindGroupLayout, entries, label: step.key });
      layout.boundTo[i] = current;
    });
    for (const s of layout.slots) s.boundBuffer = s.buffer;
    layout.boundVersion = this.arenaVersion;
  }

  /** A pipeline's bind group layout, fetched once (each call makes a new wrapper object). */
  #groupLayout(key) {
    const entry = this.pipelines.get(key);
    entry.groupLayout ??= entry.pipeline.getBindGroupLayout(0);
    return entry.groupLayout;
  }

  /**
   * Keep the layout of `keep` and the most recently used within the limits (a count, and bytes:
   * the layouts' own and the shared buffers); drop the rest, and shrink the shared buffers to what
   * the kept layouts need.
   */
  #evict(keep) {
    const held = () => [...this.layouts.values()].reduce((sum, l) => sum + l.bytes, 0)
      + this.arena.reduce((sum, a) => sum + (a?.capacity ?? 0), 0);
    while (this.layouts.size > 1 && (this.layouts.size > this.limits.layouts || held() > this.limits.layoutBytes)) {
      const [signature, oldest] = [...this.layouts.entries()].find(([, l]) => l !== keep);
      this.layouts.delete(signature);
      this.#freeLayout(oldest);
      for (const [key, plan] of this.plans) if (plan.layout === oldest) this.plans.delete(key);
      this.#shrinkArena();
    }
    while (this.plans.size > this.limits.shapes) this.plans.delete(this.plans.keys().next().value);
  }

  /**
   * Replace the shared buffers larger than every kept layout needs by smaller ones (none where no
   * layout uses the slot): a page that met one very long input does not hold its buffers for ever.
   * The kept layouts re-bind at their next run.
   */
  #shrinkArena() {
    const required = this.arena.map(() => 0);
    for (const layout of this.layouts.values()) {
      layout.slots.forEach((slot, i) => { if (slot.arena !== null) required[slot.arena] = Math.max(required[slot.arena], layout.need?.[i] ?? 0); });
    }
    this.arena.forEach((a, j) => {
      if (!a) return;
      const capacity = Math.max(MIN_SLOT_BYTES, 2 ** Math.ceil(Math.log2(Math.max(required[j], 4))));
      if (required[j] > 0 && a.capacity <= capacity) return;
      a.buffer.destroy();
      this.arenaVersion++;
      if (!required[j]) {
        this.arena[j] = undefined;
        return;
      }
      this.arena[j] = { capacity, buffer: this.device.createBuffer({ size: capacity, usage: ACTIVATION_USAGE(), label: `activations ${j}` }) };
      this.stats.buffersCreated++;
    });
  }

  #readback(layout, bytes) {
    // read-back buffers made for a smaller output (the arena grew since) are dropped once idle
    for (const r of layout.readbacks) if (!r.busy && r.buffer.size < ceil4(bytes)) r.buffer.destroy();
    layout.readbacks = layout.readbacks.filter((r) => r.busy || r.buffer.size >= ceil4(bytes));
    let rb = layout.readbacks.find((r) => !r.busy);
    if (!rb) {
      const size = this.#slotBuffer(layout, layout.outputSlot).capacity;
      rb = { buffer: this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'readback' }), busy: false };
      layout.readbacks.push(rb);
      this.stats.buffersCreated++;
    }
    if (rb.buffer.size < bytes) throw new Error('readback smaller than the output');
    rb.busy = true;
    return rb;
  }

  /**
   * Make the GPU work of a run ahead of it: `graph()` records its steps as a run would, and the
   * plan is adopted (a layout found or made, the shared buffers grown, every bind group made) and
   * kept, but not run: output() then resolves to null. A later run of that shape replays it; a run
   * of another shape of the same structure finds its layout.
   */
  async prepare(graph) {
    this.preparing = true;
    this.device.pushErrorScope('validation');
    let failure = null;
    try {
      await graph();
      // bind every layout kept to the shared buffers as they are now (a larger shape prepared
      // later may have grown them)
      for (const layout of this.layouts.values()) this.#bind(layout);
    } catch (err) {
      failure = err;
    } finally {
      this.preparing = false;
      this.run = null;
    }
    const invalid = await this.device.popErrorScope();
    failure ??= invalid && new Error(`WebGPU error: ${invalid.message}`);
    if (failure) {
      // nothing half made is kept: every run then plans itself, as without prepare()
      for (const layout of this.layouts.values()) this.#freeLayout(layout);
      this.layouts.clear();
      this.plans.clear();
      throw failure;
    }
  }

  /** Finish the run: write the inputs (and params), one pass over every dispatch, copy `h` out and read it. */
  async output(h) {
    return this.submit(h).result;
  }

  /**
   * Finish the run without waiting for it: write the inputs (and params), one pass over every
   * dispatch, copy `h` to a read-back buffer, submit. Returns {result}: a promise of {data, rows,
   * cols}. The next run may begin before this one is read back (a decoder keeps its next step in
   * flight so the GPU never waits on JavaScript): the queue runs submissions in order, and every
   * write a later run makes (its params, its inputs) is queued after this submit, so it cannot
   * reach this run. `feed`: an input value of the same plan that the output is also copied into on
   * the device, for the next run to take as it is (see inputOnDevice): a greedy decoder's token.
   */
  submit(h, { feed = null } = {}) {
    const run = this.run;
    this.run = null;
    if (h.stride && h.stride !== h.cols) throw new Error('a column view cannot be the output of a run');
    const { plan } = run;
    if (run.replay && run.cursor !== plan.steps.length) throw new Error(`plan ${plan.key}: the graph stopped after ${run.cursor} of ${plan.steps.length} steps`);
    if (!run.replay) {
      this.#adopt(plan, h.base ?? h);
      if (plan.key !== null) this.plans.set(plan.key, plan);
    } else if ((h.base ?? h) !== plan.output) {
      throw new Error(`plan ${plan.key}: the graph's output is not the recorded one`);
    }
    const { layout } = plan;
    this.layouts.delete(layout.signature); // re-insert: most recently used last
    this.layouts.set(layout.signature, layout);
    this.#evict(layout);
    if (this.preparing) {
      // everything a run of this shape needs, made now (bind groups in prepare()); nothing runs
      this.#readback(layout, plan.outputBytes).busy = false;
      return { result: Promise.resolve(null) };
    }
    const queue = this.device.queue;
    this.#bind(layout);
    const slot = (value) => this.#slotBuffer(layout, value.slot).buffer;
    this.device.pushErrorScope('validation');
    this.device.pushErrorScope('out-of-memory');
    if (run.changed) run.changedSpan = this.#rewriteParams(plan, layout, run.changed);
    if (layout.current !== plan) {
      queue.writeBuffer(layout.params, 0, plan.staging);
      layout.current = plan;
      this.stats.paramsWrites++;
    } else if (run.changed) {
      // one write over the span of the steps whose params changed
      const { from, to } = run.changedSpan;
      queue.writeBuffer(layout.params, from, plan.staging.buffer, plan.staging.byteOffset + from, to - from);
      this.stats.paramsWrites++;
    }
    for (const [value, typed] of run.writes ?? []) queue.writeBuffer(slot(value), 0, typed.buffer, typed.byteOffset, typed.byteLength);
    // Poisoned outputs (tests): any element a kernel fails to write stays NaN and fails the comparison.
    if (this.poison) {
      for (const i of layout.poisonSlots) {
        const { buffer, capacity } = this.#slotBuffer(layout, i);
        queue.writeBuffer(buffer, 0, new Float32Array(capacity / 4).fill(NaN));
      }
    }
    const bytes = plan.outputBytes;
    const rb = this.#readback(layout, bytes);
    const encoder = this.device.createCommandEncoder();
    if (this.timing) {
      this.#timedPasses(plan, encoder);
    } else {
      const pass = encoder.beginComputePass();
      layout.steps.forEach((step, i) => {
        pass.setPipeline(step.pipeline);
        pass.setBindGroup(0, layout.bindGroups[i]);
        pass.dispatchWorkgroups(...plan.grids[i]);
      });
      pass.end();
    }
    const output = this.#slotBuffer(layout, layout.outputSlot).buffer;
    encoder.copyBufferToBuffer(output, 0, rb.buffer, 0, ceil4(bytes));
    if (feed) {
      if (!feed.input || feed.bytes !== bytes) throw new Error(`plan ${plan.key}: the output can feed only an input of its own size`);
      encoder.copyBufferToBuffer(output, 0, slot(feed), 0, ceil4(bytes));
    }
    queue.submit([encoder.finish()]);
    this.stats.dispatches += layout.steps.length;
    this.stats.passes++;
    const oom = this.device.popErrorScope();
    const invalid = this.device.popErrorScope();
    const result = this.#collect(plan, rb, bytes, h, oom, invalid);
    return { result };
  }

  /** A submitted run's output, once the GPU has made it (and its errors, if any). */
  async #collect(plan, rb, bytes, h, oomScope, invalidScope) {
    try {
      if (this.timing) this.lastTiming = await this.#readTimes(plan);
      const oom = await oomScope;
      const invalid = await invalidScope;
      if (oom || invalid) throw new Error(`WebGPU error: ${(oom ?? invalid).message}`);
      try {
        await rb.buffer.mapAsync(GPUMapMode.READ, 0, ceil4(bytes));
      } catch (err) {
        if (this.lost) throw this.#lostError();
        throw new Error(`reading the output back failed: ${err.message}`);
      }
      const data = new Float32Array(rb.buffer.getMappedRange(0, ceil4(bytes)).slice(0, bytes));
      rb.buffer.unmap();
      if (this.lost) throw this.#lostError();
      return { data, rows: h.rows, cols: h.cols };
    } finally {
      rb.busy = false;
    }
  }

  /** Replayed steps with new dims: their params into the plan's staging bytes, their grids recomputed. */
  #rewriteParams(plan, layout, changed) {
    const index = new Map(plan.steps.filter((s) => s.key).map((s, i) => [s, i]));
    let from = Infinity;
    let to = 0;
    for (const step of changed) {
      const i = index.get(step);
      const { shader } = layout.steps[i];
      const bytes = new Uint8Array(packParams(shader, step.dims));
      plan.staging.set(bytes, layout.paramsOffsets[i]);
      plan.grids[i] = workgroups(shader, step.dims);
      from = Math.min(from, layout.paramsOffsets[i]);
      to = Math.max(to, layout.paramsOffsets[i] + bytes.length);
    }
    return { from, to };
  }

  /** Timing mode: each dispatch in its own pass, bracketed by timestamps. */
  #timedPasses(plan, encoder) {
    const { layout } = plan;
    const n = layout.steps.length;
    if (!layout.querySet) {
      layout.querySet = this.device.createQuerySet({ type: 'timestamp', count: 2 * n });
      layout.resolve = this.device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      layout.times = this.device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    }
    layout.steps.forEach((step, i) => {
      const pass = encoder.beginComputePass({ timestampWrites: { querySet: layout.querySet, beginningOfPassWriteIndex: 2 * i,
        endOfPassWriteIndex: 2 * i + 1 } });
      pass.setPipeline(step.pipeline);
      pass.setBindGroup(0, layout.bindGroups[i]);
      pass.dispatchWorkgroups(...plan.grids[i]);
      pass.end();
    });
    encoder.resolveQuerySet(layout.querySet, 0, 2 * n, layout.resolve, 0);
    encoder.copyBufferToBuffer(layout.resolve, 0, layout.times, 0, 16 * n);
  }

  /** Per dispatch {kind, key, us}, in graph order. */
  async #readTimes(plan) {
    const { layout } = plan;
    await layout.times.mapAsync(GPUMapMode.READ);
    const t = new BigInt64Array(layout.times.getMappedRange().slice(0));
    layout.times.unmap();
    return layout.steps.map((step, i) => ({ kind: step.kind, key: step.key, grid: plan.grids[i],
      us: Number(t[2 * i + 1] - t[2 * i]) / 1000 }));
  }

  #lostError() {
    return new GpuUnavailable(`the GPU device was lost (${this.lost.message || this.lost.reason})`);
  }

  #freeLayout(layout) {
    layout.querySet?.destroy();
    layout.resolve?.destroy();
    layout.times?.destroy();
    layout.params.destroy();
    for (const slot of layout.slots) slot.buffer?.destroy();
    for (const r of layout.readbacks) r.buffer.destroy();
  }

  /** Bytes of GPU buffers: the weights, and the shared activation buffers with the layouts' own params and inputs. */
  memoryBytes() {
    const weights = this.weightBuffers.reduce((sum, b) => sum + b.size, 0);
    let activations = this.arena.reduce((sum, a) => sum + (a?.capacity ?? 0), 0);
    for (const layout of this.layouts.values()) activations += layout.bytes;
    return { gpu_buffer_bytes: weights, gpu_activation_bytes: activations, plans: this.plans.size, layouts: this.layouts.size };
  }

  destroy() {
    for (const layout of this.layouts.values()) this.#freeLayout(layout);
    this.layouts.clear();
    this.plans.clear();
    for (const a of this.arena) a?.buffer.destroy();
    this.arena = [];
    for (const b of this.weightBuffers) b.destroy();
    this.weightBuffers = [];
    this.weights.clear();
    this.fused.clear();
    this.device.destroy();
  }
}
