// Runs a recorded list of wasm kernel calls on one thread of T: each op names an export, its
// arguments, and the range [lo, hi) of its parallel dimension (GEMM: output columns in steps of 4;
// attention: (sequence, head) pairs; row ops: rows), which is cut into T equal shares. Shared by
// the main thread (T = 1) and the workers (T > 1, a barrier after every op so the next op sees
// every share of the last one's output).

/** This thread's share [lo, hi) of `total` items handed out in multiples of `unit`. */
export function share(total, unit, thread, threads) {
  const per = Math.ceil(Math.ceil(total / unit) / threads) * unit;
  return [Math.min(total, thread * per), Math.min(total, (thread + 1) * per)];
}

/**
 * ops: [{fn, args, range (index of lo in args; hi follows), total, unit, scratch (index or -1)}].
 * scratch: this thread's scratch address (decoded weight blocks, attention scores).
 */
export function runOps(exports, ops, thread, threads, scratch, barrier = null) {
  for (const op of ops) {
    const [lo, hi] = share(op.total, op.unit, thread, threads);
    if (lo < hi) {
      const args = op.args.slice();
      args[op.range] = lo;
      args[op.range + 1] = hi;
      if (op.scratch >= 0) args[op.scratch] = scratch;
      exports[op.fn](...args);
    }
    if (barrier) barrier();
  }
}

/**
 * A reusable barrier for `threads` workers over two i32 cells of the shared memory (count,
 * generation): the last to arrive opens the next generation. Waiters spin briefly first (ops are
 * short; Atomics.wait wake-ups cost tens of microseconds), then sleep.
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
