// One worker thread of the wasm CPU path (a module Web Worker in browsers, a worker_threads Worker
// under Node): instantiates the kernels over the shared memory once, then runs its share of each
// recorded program; worker 0 says when all threads are past the last op.

import { makeBarrier, runOps } from './wasm_exec.js';

// The decoders' operators (decoder_wasm_ops.js and what it imports) load only where they sit beside
// this file: an encoder app bundled from the npm package copies just this file and wasm_exec.js
// (README, "Bundlers"), and a decoder op without them fails with the files to copy.
async function decoderKernels(memory) {
  try {
    return { kernels: (await import('./decoder_wasm_ops.js')).decoderKernels(memory), missing: null };
  } catch (err) {
    return { kernels: {}, missing: `the decoder operators did not load in the worker (${err?.message ?? err}); `
      + 'copy decoder_wasm_ops.js, ops_decoder.js and ops_cpu.js beside wasm_worker.js' };
  }
}

const inNode = typeof process !== 'undefined' && !!process.versions?.node && typeof self === 'undefined';
let port;
if (inNode) {
  const { parentPort } = await import('node:worker_threads');
  port = { on: (fn) => parentPort.on('message', fn), post: (m) => parentPort.postMessage(m) };
} else {
  port = { on: (fn) => { self.onmessage = (e) => fn(e.data); }, post: (m) => self.postMessage(m) };
}

let state = null;

port.on(async (msg) => {
  try {
    if (msg.type === 'init') {
      const instance = await WebAssembly.instantiate(/** @type {WebAssembly.Module} */ (msg.module), { env: { memory: msg.memory } });
      const cells = new Int32Array(msg.memory.buffer, msg.barrier, 2);
      const decoder = await decoderKernels(msg.memory);
      state = { exports: { ...instance.exports, ...decoder.kernels }, decoderMissing: decoder.missing, thread: msg.thread, scratch: msg.scratch,
        sync: { barrier: makeBarrier(cells, msg.threads), counters: new Int32Array(msg.memory.buffer, msg.counters, msg.maxOps) } };
      port.post({ type: 'ready', thread: msg.thread });
    } else if (msg.type === 'run') {
      runOps(state.exports, msg.ops, state.scratch, state.sync);
      if (state.thread === 0) port.post({ type: 'done', run: msg.run });
    }
  } catch (err) {
    const hint = state?.decoderMissing ? ` (${state.decoderMissing})` : '';
    port.post({ type: 'error', run: msg.run, message: `worker ${state?.thread ?? '?'}: ${err?.message ?? err}${hint}` });
  }
});
