// Model graphs, one per architecture (its row in architectures.js names it), written once against
// the backend interface (begin, input/upload, embed, linear, layernorm, attention, meanpool, im2col,
// vitTokens, rows, output), so the WebGPU and CPU paths run the same sequence of operators. The
// numpy twin of each graph is its architecture's reference forward (ulpq_build/architectures/).
//
// begin(shapeKey) names the input shape: a backend that plans its work (WebGPU) records the
// operators of the first run at a shape and replays them afterwards, so a graph must issue the
// same operators, in the same order, for every input of one shape key.

/** Q, K and V: one fused product where the backend offers it for this layer, else three. */
function projectQKV(backend, h, layer) {
  return backend.linearQKV?.(h, layer)
    ?? { q: backend.linear(h, layer.query), k: backend.linear(h, layer.key), v: backend.linear(h, layer.value) };
}

/**
 * y (+)= the rows `ids` (a Uint32Array, uploaded here) of a table. A table stored in row blocks
 * (`parts`, ulpq_build/row_blocks.py: a planned bundle gives frequent and rare token ids formats of
 * their own) is gathered block by block, each with the ids shifted to its first row: an id below the
 * block wraps past its rows as a u32, so every backend's "an id past the rows gives zeros" covers both
 * sides and the kernels are the tables'. The unshifted ids are then never uploaded.
 */
function embedTable(backend, node, ids, count, into = null) {
  if (!node.parts) return backend.embed(node, backend.upload(ids), count, into);
  let h = into;
  for (const part of node.parts) {
    const shifted = Uint32Array.from(ids, (id) => (id - part.first) >>> 0);
    h = backend.embed(part, backend.upload(shifted), count, h);
  }
  return h;
}

async function mlp(backend, model, x) {
  backend.begin(`mlp:${x.rows}`);
  let h = backend.input(x.data, x.rows, model.input_size);
  for (const layer of model.layers) h = backend.linear(h, layer);
  return backend.output(h);
}

/** BERT encoder + mean pooling (+ L2 normalisation): x = a tokenizer batch (ids, mask, positions, types). */
async function bert(backend, model, x) {
  backend.begin(`bert:${x.batch}x${x.seq}`);
  const count = x.batch * x.seq;
  const mask = backend.upload(x.mask);
  const e = model.embeddings;
  let h = embedTable(backend, e.word, x.ids, count);
  backend.embed(e.position, backend.upload(x.positions), count, h);
  backend.embed(e.token_type, backend.upload(x.types), count, h);
  h = backend.layernorm(h, e.norm, model.layer_norm_eps);
  const dims = { batch: x.batch, seq: x.seq, heads: model.num_heads, head_dim: model.head_dim };
  for (const layer of model.layers) {
    const { q, k, v } = projectQKV(backend, h, layer);
    const context = backend.attention(q, k, v, mask, dims);
    const a = backend.layernorm(backend.linear(context, layer.attn_out, h), layer.attn_norm, model.layer_norm_eps);
    const inter = backend.linear(a, layer.intermediate);
    h = backend.layernorm(backend.linear(inter, layer.output, a), layer.out_norm, model.layer_norm_eps);
  }
  const pooled = backend.meanpool(h, mask, { batch: x.batch, seq: x.seq, hidden: model.hidden_size }, model.normalize);
  return backend.output(pooled);
}

/** ViT: patches -> [CLS] + positions -> pre-LN encoder -> final LayerNorm of [CLS] -> classifier. x = images. */
async function vit(backend, model, x) {
  backend.begin(`vit:${x.batch}`);
  const size = model.image_size;
  const image = backend.input(x.data, x.batch * model.num_channels * size, size);
  const patches = backend.im2col(image, { batch: x.batch, channels: model.num_channels, height: size, width: size,
    patch_size: model.patch_size });
  const embedded = backend.linear(patches, model.patch);
  let h = backend.vitTokens(embedded, model.cls_token, model.position_embeddings,
    { batch: x.batch, patches: model.num_patches, hidden: model.hidden_size });
  const seq = model.num_patches + 1;
  const dims = { batch: x.batch, seq, heads: model.num_heads, head_dim: model.head_dim };
  const eps = model.layer_norm_eps;
  for (const layer of model.layers) {
    const n = backend.layernorm(h, layer.norm_before, eps);
    const { q, k, v } = projectQKV(backend, n, layer);
    h = backend.linear(backend.attention(q, k, v, null, dims), layer.attn_out, h);
    const n2 = backend.layernorm(h, layer.norm_after, eps);
    h = backend.linear(backend.linear(n2, layer.intermediate), layer.output, h);
  }
  const clsRows = Uint32Array.from({ length: x.batch }, (_, b) => b * seq);
  const cls = backend.layernorm(backend.rows(h, backend.upload(clsRows), x.batch), model.final_norm, eps);
  return backend.output(model.classifier ? backend.linear(cls, model.classifier) : cls);
}

export const GRAPHS = { mlp, bert, vit };
