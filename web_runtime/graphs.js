// Model graphs, written once against the backend interface (input, linear, ..., output) so the
// WebGPU and CPU paths run the same sequence of operators.

async function mlp(backend, model, x, rows) {
  let h = backend.input(x, rows, model.input_size);
  for (const layer of model.layers) h = backend.linear(h, layer);
  return backend.output(h);
}

export const GRAPHS = { mlp };

/** Turn an array of rows (arrays of numbers) into a Float32Array; check the width. */
export function toMatrix(input, width) {
  if (!Array.isArray(input) || input.length === 0 || !input.every((r) => Array.isArray(r) || ArrayBuffer.isView(r))) {
    throw new TypeError('process(input): input must be a non-empty array of rows (arrays of numbers)');
  }
  const data = new Float32Array(input.length * width);
  input.forEach((row, i) => {
    if (row.length !== width) throw new TypeError(`process(input): row ${i} has ${row.length} values, the model takes ${width}`);
    data.set(row, i * width);
  });
  return { data, rows: input.length };
}
