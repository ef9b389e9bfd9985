// One worker thread of the wasm CPU path (a module Web Worker in browsers, a worker_threads Worker
// under Node): instantiates the kernels over the shared memory once, then runs its share of each
// recorded program; worker 0 says when all threads are past the last op.

import { makeBarrier, runOps } from './wasm_exec.js';
import { decoderKernels } from './decoder_wasm_ops.js';

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
      state = { exports: { ...instance.exports, ...decoderKernels(msg.memory) }, thread: msg.thread, scratch: msg.scratch,
        sync: { barrier: makeBarrier(cells, msg.threads), counters: new Int32Array(msg.memory.buffer, msg.counters, msg.maxOps) } };
      port.post({ type: 'ready', thread: msg.thread });
    } else if (msg.type === 'run') {
      runOps(state.exports, msg.ops, state.scratch, state.sync);
      if (state.thread === 0) port.post({ type: 'done', run: msg.run });
    }
  } catch (err) {
    port.post({ type: 'error', run: msg.run, message: `worker ${state?.thread ?? '?'}: ${err?.message ?? err}` });
  }
});
