// The wasm decoder session (decoder_cpu.js wasmDecoderSession: a whole pass as one program in the
// wasm memory) against given tokens, under Node, for tests/test_decoder_cpu_speed.py:
//   node decoder_session.mjs BUNDLE_DIR REQUEST.json -> JSON: {passes: [last-row logits per pass], threads, kind}
//   REQUEST: {promptIds, steps: [token per decode step], threads, poison}
// With poison, everything the session may write (its KV cache and every later activation) is NaN
// before the first pass: a kernel that skips a value shows up as NaN logits.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [bundleDir, requestPath] = process.argv.slice(2);
const request = JSON.parse(readFileSync(requestPath, 'utf8'));
const dir = path.resolve(bundleDir);
const { loadBundle } = await import(pathToFileURL(path.join(dir, 'node.js')).href);
const { wasmDecoderSession } = await import(pathToFileURL(path.join(dir, 'decoder_cpu.js')).href);
const model = await loadBundle(dir, { hardware: 'cpu', cpu: 'wasm', threads: request.threads });
const { backend } = model;
const session = wasmDecoderSession(backend, model.manifest.model, request.promptIds.length + request.steps.length);
if (request.poison) {
  const from = backend.held[backend.held.length - 1][0]; // the session's cache, then the arena above it
  backend.memory.grow(64); // 4 MiB more: the passes' activations land in poisoned memory too
  new Float32Array(backend.memory.buffer, from).fill(NaN);
}
const passes = [Array.from(await session.forward(Int32Array.from(request.promptIds)))];
for (const token of request.steps) passes.push(Array.from(await session.forward(Int32Array.of(token))));
session.close();
const out = { passes, threads: backend.threads, kind: backend.kind };
await model.dispose();
process.stdout.write(JSON.stringify(out));
