// Kernel plumbing shared by every WebGPU operator, driven by the manifest's shader entries: the
// uniform Params buffer from the entry's (name, type) list, and the workgroup grid from its
// dispatch rule and tiles. ulpq_build/kernels.py (`pack_params`, `workgroups`) is the same code in
// Python; the kernel tests run both against numpy.

const MAX_PER_DIM = 65535;

function grid(total) {
  const x = Math.min(Math.max(total, 1), MAX_PER_DIM);
  return [x, Math.ceil(Math.max(total, 1) / x), 1];
}

/** Workgroup counts [x, y, z] for a shader entry and its params (by name). */
export function workgroups(shader, dims) {
  const t = shader.tiles;
  const wg = shader.workgroup_size;
  switch (shader.dispatch) {
    case 'gemv': return grid(Math.ceil(dims.n / ((t.rows * wg) / t.threads_per_row)) * Math.ceil(dims.m / (t.x_rows ?? 1)));
    case 'gemm': return [Math.ceil(dims.n / t.tile_n), Math.ceil(dims.m / t.tile_m), Math.ceil(dims.k / dims.k_split)];
    case 'elementwise': return grid(Math.ceil(dims.count / wg));
    case 'rows': return grid(dims.rows ?? dims.batch);
    case 'attention': return [dims.seq, dims.heads, dims.batch];
    case 'cache_attention': return [dims.chunks, dims.kv_heads, dims.rows]; // slot chunk, kv head, query row
    case 'row_parts': return grid(dims.rows * dims.parts); // one workgroup per (row, part)
    case 'step_attention': return [dims.heads, dims.rows, 1]; // query head, row (sequence)
    default: throw new Error(`${shader.key}: unknown dispatch rule '${shader.dispatch}'`);
  }
}

/** The Params uniform for a shader entry: its fields in order, u32 or f32, padded to 16 bytes. */
export function packParams(shader, dims) {
  const bytes = Math.max(16, Math.ceil((shader.params.length * 4) / 16) * 16);
  const view = new DataView(new ArrayBuffer(bytes));
  shader.params.forEach(([name, type], i) => {
    const value = dims[name];
    if (value === undefined) throw new Error(`${shader.key}: no value for param '${name}'`);
    if (type === 'f32') view.setFloat32(i * 4, value, true);
    else view.setUint32(i * 4, value, true);
  });
  return view.buffer;
}

/** Which matrix-product shader serves `rows` rows of x (kernels.py: matmul_choice; thresholds in the manifest). */
export function matmulKey(layerKernels, rows, thresholds) {
  if (rows <= thresholds.gemv_max_rows) return layerKernels.gemv;
  return rows >= thresholds.gemm_large_rows ? layerKernels.gemm_large : layerKernels.gemm_small;
}

/**
 * k_split for a small-tile GEMM of m x n x k: k itself (no split) when its tiles already give
 * `split_target_workgroups` workgroups or K is short, else splits of at least `split_min_k` inputs
 * (a multiple of tile_k). kernels.py: split_for is the same rule.
 */
export function splitFor(m, n, k, tiles, thresholds) {
  const target = thresholds.split_target_workgroups;
  if (!target) return k;
  const count = Math.ceil(n / tiles.tile_n) * Math.ceil(m / tiles.tile_m);
  const splits = Math.min(Math.ceil(target / count), Math.floor(k / thresholds.split_min_k));
  if (count >= target || splits < 2) return k;
  return Math.ceil(k / splits / tiles.tile_k) * tiles.tile_k;
}

// kernels.py: CACHE_ATTENTION_KEY_THREADS, MAX_DECODE_CHUNK, ARGMAX_LOADS_PER_THREAD
const CACHE_ATTENTION_KEY_THREADS = 8;
const MAX_DECODE_CHUNK = 256;
const ARGMAX_LOADS_PER_THREAD = 8;

/**
 * [chunk, chunks] for cache_attention_split over `slots` cached slots (kernels.py: decode_chunks,
 * the same rule): cut until the grid reaches `target` workgroups or chunks are one block short,
 * never longer than MAX_DECODE_CHUNK.
 */
export function decodeChunks(shader, slots, kvHeads, rows, target) {
  const block = shader.workgroup_size / CACHE_ATTENTION_KEY_THREADS;
  const chunks = Math.max(1, Math.min(Math.ceil(target / (kvHeads * rows)), Math.ceil(slots / block)));
  const chunk = Math.min(MAX_DECODE_CHUNK, Math.ceil(Math.ceil(slots / chunks) / block) * block);
  return [chunk, Math.ceil(slots / chunk)];
}

/** [parts, span] for argmax_parts over rows of `cols` values (kernels.py: argmax_split). */
export function argmaxSplit(shader, cols) {
  const span = shader.workgroup_size * ARGMAX_LOADS_PER_THREAD;
  return [Math.ceil(cols / span), span];
}

/** Every object in the model description holding key `has` ("in_features": linear nodes; "table": embedding tables). */
export function graphNodes(tree, has, out = []) {
  if (Array.isArray(tree)) {
    for (const item of tree) graphNodes(item, has, out);
  } else if (tree && typeof tree === 'object') {
    if (has in tree) out.push(tree);
    for (const [key, value] of Object.entries(tree)) if (key !== 'kernels') graphNodes(value, has, out);
  }
  return out;
}
