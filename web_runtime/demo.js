// The demo page: loads the bundle beside it, runs the demo input, and shows output, path,
// variant, notes, load progress and timings. Tests read window.ulpqDemo.

import * as ulpq from './ulpq.js';

window.ulpq = ulpq;
const state = { status: 'loading', result: null, error: null, model: null, progress: [] };
window.ulpqDemo = state;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const hardware = params.get('hardware') ?? 'auto';
const profile = params.get('profile');
const poison = params.has('poison'); // tests: NaN-fill GPU outputs before each run

function fact(name, value) {
  const dt = document.createElement('dt');
  dt.textContent = name;
  const dd = document.createElement('dd');
  dd.textContent = value;
  dd.id = `fact-${name.toLowerCase().replace(/[^a-z]+/g, '-')}`;
  $('facts').append(dt, dd);
}

function showProgress({ phase, file, loaded, total }) {
  state.progress.push({ phase, loaded, total });
  $('progress').max = total || 1;
  $('progress').value = loaded;
  const mb = (n) => (n / 1048576).toFixed(2);
  $('progress-text').textContent = phase === 'weights'
    ? `downloading weights${file ? ` (${file})` : ''}: ${mb(loaded)} / ${mb(total)} MiB`
    : phase === 'verified' ? 'weights verified (sha256), compiling shaders...' : 'ready';
}

function showOutput(result) {
  const table = document.createElement('table');
  const head = table.insertRow();
  head.append(...['row', ...result.output[0].map((_, j) => `y${j}`)].map((t) => Object.assign(document.createElement('th'), { textContent: t })));
  result.output.forEach((row, i) => {
    const tr = table.insertRow();
    tr.insertCell().textContent = i;
    for (const v of row) tr.insertCell().textContent = v.toFixed(5);
  });
  $('output').replaceChildren(table);
  $('output').classList.remove('muted');
}

async function main() {
  const model = new ulpq.UlpqModel('./manifest.json', { hardware, profile, poison, onProgress: showProgress });
  state.model = model;
  await model.initialize();
  const m = model.manifest;
  $('title').textContent = `${m.model.name} (${m.model.architecture})`;
  $('subtitle').textContent = `${m.quantization.default.format} weights, ${m.quantization.quantized_bits_per_weight} bits per quantized weight, `
    + `${(m.quantization.bytes / 1024).toFixed(1)} KiB (${m.quantization.reduction_vs_float32}x smaller than float32)`;
  const result = await model.process(m.demo.inputs);
  fact('Path', result.path);
  fact('Variant', result.variant ? `${result.variant.name}${result.variant.fallback ? ` (requested ${result.variant.requested})` : ''}` : 'none (CPU)');
  fact('WebGPU', result.webgpu.available ? 'available' : `absent: ${result.webgpu.reason}`);
  fact('Notes', result.notes.join(' | ') || '-');
  fact('Timings', `load ${result.timings.load_ms.toFixed(0)} ms, init ${result.timings.init_ms.toFixed(0)} ms, run ${result.timings.run_ms.toFixed(1)} ms`);
  showOutput(result);
  state.result = result;
  state.status = 'done';
}

main().catch((err) => {
  state.error = { name: err.name, message: err.message };
  state.status = 'error';
  $('error').textContent = `${err.name}: ${err.message}`;
});
