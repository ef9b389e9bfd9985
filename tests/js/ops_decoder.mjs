// Run the CPU path's decoder operators (web_runtime/ops_decoder.js) under Node for tests/test_ops_decoder.py.
//   node ops_decoder.mjs REQUEST.json  ->  JSON on stdout
// REQUEST: {cases: [{op, ...inputs}]}; each answer holds the operator's outputs (NaN written as null).
// Every buffer an operator writes into is NaN-filled first, so an element it leaves unwritten shows.
import { readFileSync } from 'node:fs';

const ops = await import('../../web_runtime/ops_decoder.js');
const { ACTIVATIONS } = await import('../../web_runtime/ops_cpu.js');
const request = JSON.parse(readFileSync(process.argv[2], 'utf8'));

const f32 = (values) => Float32Array.from(values);
const poisoned = (n) => new Float32Array(n).fill(NaN);
const list = (a) => Array.from(a, (v) => (Number.isNaN(v) ? null : v));

function errorOf(fn) {
  try {
    fn();
    return null;
  } catch (e) {
    return String(e.message);
  }
}

function rmsNorm({ x, rows, cols, weight, eps }) {
  const out = ops.rmsNorm(f32(x), rows, cols, f32(weight), eps, poisoned(rows * cols));
  return { out: list(out), fresh: list(ops.rmsNorm(f32(x), rows, cols, f32(weight), eps)) };
}

function rotary({ x, rows, heads, headDim, positions, invFreq }) {
  const input = f32(x);
  const out = ops.rotary(input, rows, heads, headDim, Int32Array.from(positions), Float64Array.from(invFreq), poisoned(input.length));
  const untouched = input.every((v, i) => v === Math.fround(x[i]));
  const inPlace = f32(x);
  const returned = ops.rotary(inPlace, rows, heads, headDim, Int32Array.from(positions), Float64Array.from(invFreq));
  return { out: list(out), inPlace: list(inPlace), untouched, returnsInput: returned === inPlace };
}

function glu({ gate, up, activation }) {
  return { out: list(ops.gluMultiply(f32(gate), f32(up), activation, poisoned(gate.length))) };
}

function activation({ name, x }) {
  const fn = name === 'silu' ? ops.silu : ACTIVATIONS[name];
  return { out: list(f32(x.map(fn))), sameAsExport: name !== 'gelu_tanh' || ops.geluTanh === ACTIVATIONS.gelu_tanh };
}

// Chunks of tokens through a cache (a prefill, then steps): per chunk the positions, per layer the
// attention output, the capacity; at the end the cache's filled slots. `poisonPadding`: after each
// append, padding slots' keys/values and every slot past `length` are NaN, so reading one shows.
function sequence({ layers, batch, heads, kvHeads, headDim, capacity, invFreq, chunks, poisonPadding }) {
  const cache = ops.createKvCache({ layers, batch, kvHeads, headDim, capacity });
  const inv = Float64Array.from(invFreq);
  const answers = chunks.map(({ mask, n, q, k, v }) => {
    const { start, positions } = cache.beginStep(mask, n);
    const outputs = [];
    for (let layer = 0; layer < layers; layer++) {
      const ql = ops.rotary(f32(q[layer]), batch * n, heads, headDim, positions, inv);
      const kl = ops.rotary(f32(k[layer]), batch * n, kvHeads, headDim, positions, inv);
      cache.append(layer, kl, f32(v[layer]));
      if (poisonPadding) {
        for (const buffer of [cache.keys[layer], cache.values[layer]]) {
          for (let b = 0; b < batch; b++) {
            for (let h = 0; h < kvHeads; h++) {
              for (let slot = 0; slot < cache.capacity; slot++) {
                if (slot < cache.length && cache.keep[b * cache.capacity + slot]) continue;
                const o = ((b * kvHeads + h) * cache.capacity + slot) * headDim;
                buffer.fill(NaN, o, o + headDim);
              }
            }
          }
        }
      }
      const out = ops.causalAttention(ql, cache, layer, batch, n, heads, kvHeads, headDim, start, poisoned(batch * n * heads * headDim));
      outputs.push(list(out));
    }
    return { start, positions: Array.from(positions), outputs, capacity: cache.capacity, length: cache.length };
  });
  const filled = (buffers) => buffers.map((buffer) => {
    const slots = [];
    for (let bh = 0; bh < batch * kvHeads; bh++) {
      slots.push(list(buffer.subarray(bh * cache.capacity * headDim, (bh * cache.capacity + cache.length) * headDim)));
    }
    return slots;
  });
  const keep = [];
  for (let b = 0; b < batch; b++) keep.push(Array.from(cache.keep.subarray(b * cache.capacity, b * cache.capacity + cache.length)));
  return { chunks: answers, keys: filled(cache.keys), values: filled(cache.values), keep, nextPosition: Array.from(cache.nextPosition) };
}

function errors() {
  const cache = ops.createKvCache({ layers: 1, batch: 1, kvHeads: 3, headDim: 4, capacity: 2 });
  cache.beginStep(null, 1);
  return {
    gqa: errorOf(() => ops.causalAttention(new Float32Array(16), cache, 0, 1, 1, 4, 3, 4, 0)),
    append: errorOf(() => cache.append(0, new Float32Array(5), new Float32Array(12))),
    activation: errorOf(() => ops.gluMultiply(new Float32Array(2), new Float32Array(2), 'relu')),
    rotary: errorOf(() => ops.rotary(new Float32Array(6), 1, 1, 6, [0], [1, 2])),
    capacity: errorOf(() => ops.createKvCache({ layers: 1, batch: 1, kvHeads: 1, headDim: 4, capacity: 0 })),
    pastLength: errorOf(() => ops.causalAttention(new Float32Array(24), cache, 0, 1, 2, 3, 3, 4, 0)),
  };
}

// Dense float32 weights behind decoderForward's io (the packed linear op is ops_cpu.js's, tested
// elsewhere): only the activations ops_cpu.js's linear applies are accepted, as there.
function denseIo(weights, hidden) {
  const tensors = Object.fromEntries(Object.entries(weights).map(([name, values]) => [name, f32(values)]));
  return {
    vector: (name) => tensors[name],
    embed(table, ids) {
      const t = tensors[table];
      const y = poisoned(ids.length * hidden);
      ids.forEach((id, r) => y.set(t.subarray(id * hidden, (id + 1) * hidden), r * hidden));
      return y;
    },
    linear(node, x, rows, residual) {
      const act = ACTIVATIONS[node.activation];
      if (!act) throw new Error(`linear: activation ${node.activation} is not the linear op's`);
      const { in_features: k, out_features: n } = node;
      const w = tensors[node.weight];
      const b = node.bias ? tensors[node.bias] : null;
      const y = poisoned(rows * n);
      for (let m = 0; m < rows; m++) {
        for (let j = 0; j < n; j++) {
          let acc = 0;
          for (let i = 0; i < k; i++) acc += x[m * k + i] * w[j * k + i];
          if (b) acc += b[j];
          y[m * n + j] = node.residual ? act(acc) + residual[m * n + j] : act(acc);
        }
      }
      return y;
    },
  };
}

// A prompt (left-padded where mask says so) prefilled, then `steps` greedy tokens one cached step at
// a time: the prefill's logits, each step's, and the tokens picked (argmax, ties to the lowest id).
// decoderForward is async (a backend's io may run kernels on workers); this io answers at once.
async function decode({ model, weights, ids, mask, batch, seq, steps, capacity }) {
  const io = denseIo(weights, model.hidden_size);
  const cache = ops.createKvCache({ layers: model.num_layers, batch, kvHeads: model.num_kv_heads, headDim: model.head_dim, capacity });
  const vocab = model.vocab_size;
  const argmax = (logits, row) => {
    let best = 0;
    for (let j = 1; j < vocab; j++) if (logits[row * vocab + j] > logits[row * vocab + best]) best = j;
    return best;
  };
  const prefill = await ops.decoderForward(model, io, cache, Int32Array.from(ids), Float32Array.from(mask), seq);
  let token = Int32Array.from({ length: batch }, (_, b) => argmax(prefill, b * seq + seq - 1));
  const tokens = [Array.from(token)];
  const stepLogits = [];
  for (let s = 1; s < steps; s++) {
    const logits = await ops.decoderForward(model, io, cache, token, null, 1);
    stepLogits.push(list(logits));
    token = Int32Array.from({ length: batch }, (_, b) => argmax(logits, b));
    tokens.push(Array.from(token));
  }
  const far = ops.createKvCache({ layers: model.num_layers, batch: 1, kvHeads: model.num_kv_heads, headDim: model.head_dim });
  const past = await ops.decoderForward(model, io, far, new Int32Array(model.max_position + 1), null, model.max_position + 1)
    .then(() => null, (e) => String(e.message));
  return { prefill: list(prefill), steps: stepLogits, tokens, capacity: cache.capacity, past, pastLeftCache: far.length === 0 };
}

const OPS = { rmsNorm, rotary, glu, activation, sequence, errors, decode };
process.stdout.write(JSON.stringify(await Promise.all(request.cases.map((c) => OPS[c.op](c)))));
