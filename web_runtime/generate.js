// Choosing the next token from a decoder's logits, for generate(): greedy (temperature 0, the
// default), or sampling after temperature, top-k and top-p in that order (as transformers'
// logits processors apply them), drawn with a seeded PRNG so that a seed repeats a run.
//
//   greedy       the highest logit; ties go to the lowest id (numpy's and torch's argmax)
//   temperature  p = softmax(logits / temperature)
//   top-k        keep the k highest logits and every logit equal to the k-th (transformers' rule)
//   top-p        keep, from the most probable down, the tokens whose probability mass before them
//                is below topP (at least one): the smallest set reaching topP
//   draw         u in [0, 1) from the PRNG; walk the kept tokens from the most probable (ties: lower
//                id first) with their renormalised probabilities; the first whose running sum
//                passes u. One u per sampled token, none for greedy ones.

/** The options generate() takes, with their defaults. */
export const GENERATE_DEFAULTS = Object.freeze({
  maxNewTokens: 32, temperature: 0, topK: 0, topP: 1, seed: null, onToken: null, signal: null,
});

/**
 * mulberry32: a 32-bit seeded PRNG, uniform in [0, 1) with 2^-32 steps. Small and exact in JS
 * integer arithmetic, so a Python reimplementation (the tests') gives the same numbers.
 * @param {number} seed  an integer; only its low 32 bits count
 * @returns {() => number}
 */
export function createRng(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * generate()'s options checked and with defaults: a TypeError (RangeError for a number out of
 * range) naming the option, before anything runs.
 */
export function checkGenerateOptions(options = {}) {
  if (options === null || typeof options !== 'object') throw new TypeError(`generate: options must be an object, not ${options}`);
  const unknown = Object.keys(options).filter((key) => !(key in GENERATE_DEFAULTS));
  if (unknown.length) {
    throw new TypeError(`generate: unknown option '${unknown[0]}' (known: ${Object.keys(GENERATE_DEFAULTS).join(', ')})`);
  }
  const o = { ...GENERATE_DEFAULTS };
  for (const [key, value] of Object.entries(options)) if (value !== undefined) o[key] = value;
  const number = (key, ok, rule) => {
    if (typeof o[key] !== 'number' || Number.isNaN(o[key])) throw new TypeError(`generate: option ${key} must be a number, not ${o[key]}`);
    if (!ok(o[key])) throw new RangeError(`generate: option ${key} must be ${rule}, not ${o[key]}`);
  };
  number('maxNewTokens', (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer');
  number('temperature', (v) => v >= 0 && Number.isFinite(v), 'a finite number >= 0 (0: greedy)');
  number('topK', (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer (0: no top-k)');
  number('topP', (v) => v > 0 && v <= 1, 'in (0, 1] (1: no top-p)');
  if (o.seed !== null) number('seed', (v) => Number.isInteger(v), 'an integer (or null: a random seed)');
  if (o.onToken !== null && typeof o.onToken !== 'function') throw new TypeError('generate: option onToken must be a function');
  if (o.signal !== null && (typeof o.signal !== 'object' || typeof o.signal.aborted !== 'boolean')) {
    throw new TypeError('generate: option signal must be an AbortSignal');
  }
  return o;
}

/** The index of the highest value; the lowest index among equal ones. */
export function argmax(logits) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * The tokens sampling may pick and their probabilities (summing to 1), most probable first (ties:
 * lower id first), after temperature (> 0), top-k and top-p.
 * @param {ArrayLike<number>} logits
 * @param {{temperature: number, topK: number, topP: number}} options
 */
export function candidates(logits, { temperature, topK, topP }) {
  const n = logits.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
  let keep = n;
  if (topK > 0 && topK < n) {
    const kth = logits[order[topK - 1]];
    keep = topK;
    while (keep < n && logits[order[keep]] === kth) keep += 1;
  }
  const top = logits[order[0]] / temperature;
  const weights = new Float64Array(keep);
  let total = 0;
  for (let i = 0; i < keep; i++) {
    weights[i] = Math.exp(logits[order[i]] / temperature - top);
    total += weights[i];
  }
  if (topP < 1) {
    let mass = 0;
    let cut = 0;
    while (cut < keep && (cut === 0 || mass < topP)) {
      mass += weights[cut] / total;
      cut += 1;
    }
    keep = cut;
    total = 0;
    for (let i = 0; i < keep; i++) total += weights[i];
  }
  const probs = new Float64Array(keep);
  for (let i = 0; i < keep; i++) probs[i] = weights[i] / total;
  return { ids: Int32Array.from(order.slice(0, keep)), probs };
}

/** The candidate `u` (in [0, 1)) lands on. */
export function draw({ ids, probs }, u) {
  let sum = 0;
  for (let i = 0; i < ids.length; i++) {
    sum += probs[i];
    if (u < sum) return ids[i];
  }
  return ids[ids.length - 1]; // u within rounding of 1
}

/**
 * The next token: greedy at temperature 0, else a draw from `random` among the candidates.
 * @param {ArrayLike<number>} logits
 * @param {{temperature: number, topK: number, topP: number}} options
 * @param {() => number} random
 */
export function pickToken(logits, options, random) {
  if (options.temperature === 0) return argmax(logits);
  return draw(candidates(logits, options), random());
}
