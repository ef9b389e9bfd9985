// dispatch.js's decoder rules under Node, for Python to compare with kernels.py (one rule, two copies):
//   node decoder_dispatch.mjs REQUEST.json -> JSON: per case, decodeChunks, argmaxSplit and the grids
// REQUEST: [{shader: a manifest shader entry, slots, kv_heads, rows, target, cols, dims}]
import { readFileSync } from 'node:fs';
import { argmaxSplit, decodeChunks, workgroups } from '../../web_runtime/dispatch.js';

const cases = JSON.parse(readFileSync(process.argv[2], 'utf8'));
process.stdout.write(JSON.stringify(cases.map((c) => ({
  chunks: c.slots ? decodeChunks(c.shader, c.slots, c.kv_heads, c.rows, c.target) : null,
  argmax: c.cols ? argmaxSplit(c.shader, c.cols) : null,
  grid: c.dims ? workgroups(c.shader, c.dims) : null,
}))));
