// Runs a recorded list of wasm kernel calls on one thread of T: each op names an export, its
// arguments, and the range [lo, hi) of its parallel dimension (GEMM: output columns in steps of 4;
// attention: (sequence, head) pairs; row ops: rows). Shared by the main thread (T = 1: each op whole)
// and the workers (T > 1): threads take chunks of an op from a shared counter until none is left
// (a thread the OS delays leaves its chunks to the others, instead of stalling everyone at the
// barrier), then meet at a barrier so the next op sees all of this op's output.

function call(exports, op, lo, hi, scratch) {
  const args = op.args.slice();
  args[op.range] = lo;
  args[op.range + 1] = hi;
  if (op.scratch >= 0) args[op.scratch] = scratch;
  exports[op.fn](...args);
}

/**
 * ops: [{fn, args, range (index of lo in args; hi follows), total, chunk, scratch (index or -1)}].
 * scratch: this thread's scratch address (decoded weight blocks, attention scores). sync (threads):
 * {counters: Int32Array, one cell per op, zeroed before the run; barrier: function}.
 */
export function runOps(exports, ops, scratch, sync = null) {
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i];
    if (!sync) {
      call(exports, op, 0, op.total, scratch);
      continue;
    }
    for (;;) {
      const lo = Atomics.add(sync.counters, i, 1) * op.chunk;
      if (lo >= op.total) break;
      call(exports, op, lo, Math.min(op.total, lo + op.chunk), scratch);
    }
    sync.barrier();
  }
}

/**
 * A reusable barrier for `threads` workers over two i32 cells of the shared memory (count,
 * generation): the last to arrive opens the next generation. Waiters spin a little first (ops are
 * short; Atomics.wait wake-ups cost tens of microseconds), then sleep, so a busy machine's cores
 * are not burnt spinning.
 */
export function makeBarrier(cells, threads) {
  return () => {
    const generation = Atomics.load(cells, 1);
    if (Atomics.add(cells, 0, 1) === threads - 1) {
      Atomics.store(cells, 0, 0);
      Atomics.add(cells, 1, 1);
      Atomics.notify(cells, 1);
      return;
    }
    for (let spin = 0; Atomics.load(cells, 1) === generation; spin++) {
      if (spin > 200) Atomics.wait(cells, 1, generation, 20);
    }
  };
}
