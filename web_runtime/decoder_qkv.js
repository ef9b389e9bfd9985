// The inputs of a decoder layer's cache append on WebGPU: Q|K|V as one product where the weights
// allow it (GPT-2's c_attn, or query/key/value fused at upload: backend_webgpu.js qkvLayout), else
// three products that the append kernel's split variant reads directly. The split costs two more
// product dispatches and nothing else: gathering the three into one qkv activation would need an
// extra copy dispatch (a product cannot write at a column offset of a wider row, and the 256-byte
// binding alignment rules out views for K and V widths such as 2 x 16 floats).

/** The op_kernels role of the append over three products (absent in bundles built before it). */
export const SPLIT_ROLE = 'cache_append_split';

/**
 * Whether the backend can run `layer`'s attention inputs: a fused product, or three with the
 * split append the bundle ships. Returns null when it can, else why not.
 */
export function qkvUnsupported(backend, layer) {
  if (layer.qkv || backend.fused.has(layer.query.weight)) return null;
  if (backend.manifest.model.op_kernels?.[backend.profile.name]?.[SPLIT_ROLE]) return null;
  return `${layer.query.weight}: its query, key and value weights differ in format or layout, and this bundle `
    + 'has no append over separate products (built before it); rebuild the bundle';
}

/**
 * Q, K and V of `h` for `layer`: {role, resources}, the op_kernels role of the cache append and its
 * input bindings ({qkv} or {q_in, k_in, v_in}). `h` is the normed rows, or with `prologue` (the
 * backend's normPrologue) the rows before the norm that each product then applies itself.
 */
export function qkvInputs(backend, h, layer, prologue = null) {
  const whole = backend.linearQKVWhole(h, layer, prologue);
  if (whole) return { role: 'cache_append', resources: { qkv: whole } };
  const product = (node) => backend.linear(h, node, null, prologue);
  return { role: SPLIT_ROLE, resources: { q_in: product(layer.query), k_in: product(layer.key), v_in: product(layer.value) } };
}

/** The products that read a layer's normed attention input (all of them must fuse the norm, or none). */
export function qkvNodes(layer) {
  return layer.qkv ? [layer.qkv] : [layer.query, layer.key, layer.value];
}
