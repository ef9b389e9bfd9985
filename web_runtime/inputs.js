// Input checks for process(): every item of a batch is checked before any of it is encoded, so a
// hole, a null, a NaN pixel or a short row is a TypeError naming the item, never NaN logits, an
// all-zero embedding or an extra prediction. Pure functions (no DOM, no GPU): tests/js runs them.

const MAX_IMAGE_SIDE = 16384;

function describe(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 20 ? `${value.slice(0, 20)}...` : value)}`;
  if (typeof value === 'number') return String(value);
  return typeof value;
}

/** A non-empty dense array (holes are items too: `every` and `forEach` skip them silently). */
function checkBatch(input, what) {
  if (!Array.isArray(input)) throw new TypeError(`process(input): pass an array of ${what}, not ${describe(input)}`);
  if (input.length === 0) throw new TypeError(`process(input): the array is empty; pass at least one of ${what}`);
  for (let i = 0; i < input.length; i++) {
    if (!(i in input)) throw new TypeError(`process(input): item ${i} is missing (a hole in the array); pass one of ${what} per item`);
  }
}

/** Strings for a text model. */
export function checkTexts(input) {
  checkBatch(input, 'strings');
  input.forEach((text, i) => {
    if (typeof text !== 'string') throw new TypeError(`process(input): item ${i} is ${describe(text)}; a text model takes strings`);
  });
  return input;
}

/**
 * One row of numbers (a plain array or a typed array) of `width` finite values.
 * @param {ArrayLike<number>} row
 */
function checkRow(row, i, width) {
  const isTyped = ArrayBuffer.isView(row) && !(row instanceof DataView);
  if (!Array.isArray(row) && !isTyped) {
    throw new TypeError(`process(input): row ${i} is ${describe(row)}; each row is an array of ${width} numbers`);
  }
  if (row.length !== width) throw new TypeError(`process(input): row ${i} has ${row.length} values, the model takes ${width}`);
  for (let j = 0; j < width; j++) {
    const v = row[j];
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      const what = !(j in row) ? 'missing (a hole)' : describe(v);
      throw new TypeError(`process(input): row ${i}, value ${j} is ${what}; every value must be a finite number`);
    }
  }
}

/**
 * Rows of numbers -> {data: Float32Array [rows * width], rows}. Every value must be a finite
 * number (no strings, NaN, Infinity, holes); every row exactly `width` long.
 */
export function toMatrix(input, width) {
  checkBatch(input, `rows of ${width} numbers`);
  input.forEach((row, i) => checkRow(row, i, width));
  const data = new Float32Array(input.length * width);
  input.forEach((row, i) => data.set(row, i * width));
  return { data, rows: input.length };
}

/**
 * Images: ImageData or {width, height, data} with RGBA data of width * height * 4 values, each a
 * finite number in 0..255 (Uint8Array / Uint8ClampedArray data is in range by construction).
 */
export function checkImages(input) {
  checkBatch(input, 'images (ImageData or {width, height, data})');
  input.forEach((image, i) => {
    if (image === null || typeof image !== 'object') {
      throw new TypeError(`process(input): image ${i} is ${describe(image)}; pass ImageData or {width, height, data}`);
    }
    const { width, height, data } = /** @type {{width: any, height: any, data: ArrayLike<number>}} */ (image);
    for (const [name, value] of [['width', width], ['height', height]]) {
      if (!Number.isInteger(value) || value < 1 || value > MAX_IMAGE_SIDE) {
        throw new TypeError(`process(input): image ${i} has ${name} ${describe(value)}; it must be an integer from 1 to ${MAX_IMAGE_SIDE}`);
      }
    }
    const isTyped = ArrayBuffer.isView(data) && !(data instanceof DataView);
    if (!Array.isArray(data) && !isTyped) {
      throw new TypeError(`process(input): image ${i} has data ${describe(data)}; pass RGBA values (Uint8ClampedArray, Uint8Array or an array)`);
    }
    if (data.length !== width * height * 4) {
      throw new TypeError(`process(input): image ${i} has ${data.length} data values; ${width}x${height} RGBA needs ${width * height * 4}`);
    }
    if (data instanceof Uint8Array || data instanceof Uint8ClampedArray) return;
    for (let j = 0; j < data.length; j++) {
      const v = data[j];
      if (typeof v !== 'number' || !(v >= 0 && v <= 255)) {
        const what = !(j in data) ? 'missing (a hole)' : describe(v);
        throw new TypeError(`process(input): image ${i}, data value ${j} is ${what}; RGBA values are numbers from 0 to 255`);
      }
    }
  });
  return input;
}

/**
 * Consecutive slices of a batch whose cost stays near `budget` rows of matrix products each (one
 * item at least), so the CPU path can hand the page back between slices. [[start, end), ...].
 */
export function slices(rowsPerItem, budget) {
  const out = [];
  let start = 0;
  let rows = 0;
  rowsPerItem.forEach((n, i) => {
    if (i > start && rows + n > budget) {
      out.push([start, i]);
      start = i;
      rows = 0;
    }
    rows += n;
  });
  if (rowsPerItem.length) out.push([start, rowsPerItem.length]);
  return out;
}

const OPTION_TYPES = {
  hardware: (v) => ['auto', 'webgpu', 'cpu'].includes(v) || `one of 'auto', 'webgpu', 'cpu'`,
  profile: (v) => v === null || (typeof v === 'string' && v.length > 0) || 'null or a profile name (a string such as \'chrome\')',
  onProgress: (v) => typeof v === 'function' || 'a function',
  poison: (v) => typeof v === 'boolean' || 'true or false',
  selfTest: (v) => typeof v === 'boolean' || 'true or false',
  cpu: (v) => v === null || v === 'wasm' || v === 'js' || "null (the best CPU backend), 'wasm' or 'js'",
  threads: (v) => (Number.isInteger(v) && v >= 1 && v <= 256) || 'an integer from 1 to 256 (CPU worker threads)',
  cache: (v) => typeof v === 'boolean' || 'true or false (keep weight shards in the browser\'s Cache API)',
  expected: (v) => v === null || (typeof v === 'object' && !Array.isArray(v)) || 'null or an object',
  modelId: (v) => typeof v === 'string' || v instanceof URL || 'a string (the bundle folder or its manifest.json URL)',
  quantization: (v) => v === null || (typeof v === 'object' && !Array.isArray(v)) || 'null or an object such as {bitsPerWeight: 4}',
};

/**
 * Check an options object against the keys `allowed` (a TypeError naming an unknown key or a value
 * of the wrong type). `where` names the call in the message. Undefined values take the defaults.
 */
export function checkOptions(options, allowed, where) {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError(`${where}: options must be an object, not ${describe(options)}`);
  }
  for (const [key, value] of Object.entries(options)) {
    if (!allowed.includes(key)) {
      throw new TypeError(`${where}: unknown option '${key}'; the options are ${allowed.join(', ')}`);
    }
    if (value === undefined) continue;
    const verdict = OPTION_TYPES[key](value);
    if (verdict !== true) throw new TypeError(`${where}: option ${key} must be ${verdict}, not ${describe(value)}`);
  }
  return options;
}
