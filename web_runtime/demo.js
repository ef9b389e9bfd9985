// The demo page: loads the bundle beside it and runs it, as its architecture's row says (DEMOS):
// sentence similarity for text models, classification of built-in samples or a picked image for
// image models, a fixed input for the demo MLP, streamed text generation for decoders. Shows precision, path and variant, load progress,
// bundle size and timings. Tests read window.ulpqDemo (status, result, model, progress).

import * as ulpq from './ulpq.js';
import { architectureOf } from './architectures.js';
import { sampleToImage } from './images.js';

window.ulpq = ulpq;
const state = { status: 'loading', result: null, error: null, model: null, progress: [] };
window.ulpqDemo = state;

/** @type {(id: string) => any} the page's elements: <progress>, <textarea>, <input type=file> and others */
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const hardware = params.get('hardware') ?? 'auto';
const profile = params.get('profile');
const poison = params.has('poison'); // tests: NaN-fill GPU outputs before each run
const autorun = params.get('run') !== '0'; // tests: ?run=0 loads and initializes only (status 'ready')

function fact(name, value) {
  let dd = document.getElementById(`fact-${name.toLowerCase().replace(/[^a-z]+/g, '-')}`);
  if (!dd) {
    const dt = document.createElement('dt');
    dt.textContent = name;
    dd = document.createElement('dd');
    dd.id = `fact-${name.toLowerCase().replace(/[^a-z]+/g, '-')}`;
    $('facts').append(dt, dd);
  }
  dd.textContent = value;
}

function showProgress({ phase, file, loaded, total }) {
  state.progress.push({ phase, loaded, total });
  $('progress').max = total || 1;
  $('progress').value = loaded;
  const mb = (n) => (n / 1048576).toFixed(2);
  $('progress-text').textContent = phase === 'weights'
    ? `downloading weights${file ? ` (${file})` : ''}: ${mb(loaded)} / ${mb(total)} MiB`
    : phase === 'verified' ? 'weights verified (sha256), preparing the runtime...' : 'ready';
}

function table(head, rows) {
  const t = document.createElement('table');
  const h = t.insertRow();
  for (const text of head) h.append(Object.assign(document.createElement('th'), { textContent: text }));
  for (const row of rows) {
    const tr = t.insertRow();
    row.forEach((cell, i) => {
      const td = tr.insertCell();
      td.textContent = typeof cell === 'number' ? cell.toFixed(4) : cell;
      if (i === 0 && typeof cell === 'string') td.className = 'text';
    });
  }
  return t;
}

function showResult(result) {
  fact('Path', result.path);
  fact('Variant', result.variant ? `${result.variant.name}${result.variant.fallback ? ` (requested ${result.variant.requested})` : ''}` : 'none (CPU)');
  fact('WebGPU', result.webgpu.available ? 'available' : `absent: ${result.webgpu.reason}`);
  fact('Notes', result.notes.join(' | ') || '-');
  fact('Timings', `load ${result.timings.load_ms.toFixed(0)} ms, init ${result.timings.init_ms.toFixed(0)} ms, `
    + `run ${result.timings.run_ms.toFixed(1)} ms`);
  $('output').classList.remove('muted');
  state.result = result;
}

async function runText(model, sentences) {
  const result = await model.process(sentences);
  const e = result.embeddings;
  const cos = (a, b) => a.reduce((s, v, i) => s + v * b[i], 0) / Math.sqrt(a.reduce((s, v) => s + v * v, 0) * b.reduce((s, v) => s + v * v, 0));
  $('output').replaceChildren(table(['sentence', ...sentences.map((_, i) => `#${i + 1}`)],
    sentences.map((s, i) => [`#${i + 1} ${s}`, ...e.map((_, j) => cos(e[i], e[j]))])));
  showResult(result);
  return result;
}

async function runImages(model, images, names) {
  const result = await model.process(images);
  $('output').replaceChildren(table(['image', 'predicted class', 'probability'],
    result.predictions.map((p, i) => [names[i], p.label, p.probability])));
  showResult(result);
  return result;
}

function drawImage(image) {
  const canvas = document.createElement('canvas');
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(image.data), image.width, image.height), 0, 0);
  return canvas;
}

async function main() {
  const model = new ulpq.UlpqModel('./manifest.json', { hardware, profile, poison, onProgress: showProgress });
  state.model = model;
  await model.initialize();
  const m = model.manifest;
  const q = m.quantization;
  $('title').textContent = `${m.model.name} (${m.model.architecture})`;
  $('subtitle').textContent = `${q.default.format} weights, ${q.quantized_bits_per_weight} bits per quantized weight; `
    + `${(q.bytes / 1048576).toFixed(2)} MiB of weights (${q.reduction_vs_float32}x smaller than float32)`;
  fact('Precision', `${q.default.format}${q.default.group_size > 0 ? `, groups of ${q.default.group_size}` : ''}`);
  fact('Bundle size', `${(m.shards.reduce((a, s) => a + s.bytes, 0) / 1048576).toFixed(2)} MiB of shards`);
  if (!autorun) {
    fact('Path', model.backend.path);
    state.status = 'ready';
    return;
  }
  await DEMOS[architectureOf(m.model).demo](model, m);
  state.status = 'done';
}

/** Sentence similarity: the manifest's sentences, then whatever the visitor types. */
async function sentencesDemo(model, m) {
  $('text-demo').hidden = false;
  $('sentences').value = m.demo.sentences.join('\n');
  $('embed').onclick = () => runText(model, $('sentences').value.split('\n').map((s) => s.trim()).filter(Boolean));
  await runText(model, m.demo.sentences);
}

/** Classification of the bundle's sample images (each one on a click), or of a picked image. */
async function imagesDemo(model, m) {
  $('image-demo').hidden = false;
  const samples = m.demo.samples ? await (await fetch(m.demo.samples)).json() : [];
  const images = samples.map(sampleToImage);
  samples.forEach((s, i) => {
    const div = Object.assign(document.createElement('div'), { className: 'sample', title: 'classify this image' });
    div.append(drawImage(images[i]), s.label);
    div.onclick = () => runImages(model, [images[i]], [s.label]);
    $('samples').append(div);
  });
  $('picker').onchange = async () => {
    const bitmap = await createImageBitmap($('picker').files[0]);
    const size = m.model.image_size;
    const canvas = Object.assign(document.createElement('canvas'), { width: size, height: size });
    canvas.getContext('2d').drawImage(bitmap, 0, 0, size, size);
    await runImages(model, [canvas.getContext('2d').getImageData(0, 0, size, size)], [$('picker').files[0].name]);
  };
  await runImages(model, images, samples.map((s) => `sample: ${s.label}`));
}

/** The manifest's fixed rows and the outputs, as a table. */
async function rowsDemo(model, m) {
  const result = await model.process(m.demo.inputs);
  $('output').replaceChildren(table(['row', ...result.output[0].map((_, j) => `y${j}`)], result.output.map((r, i) => [String(i), ...r])));
  showResult(result);
}

/** Text generation: the prompt box, the text as it streams, tokens per second; Stop aborts. */
async function promptDemo(model, m) {
  $('prompt-demo').hidden = false;
  $('prompt').value = m.demo.prompt;
  $('max-new-tokens').value = String(m.demo.max_new_tokens);
  let controller = null;
  const number = (id) => Number($(id).value);
  const generate = async () => {
    controller = new AbortController();
    $('generate').disabled = true;
    $('stop').disabled = false;
    $('generated-prompt').textContent = $('prompt').value;
    $('generated-text').textContent = '';
    $('output').textContent = 'generating...';
    let first = null;
    try {
      const result = await model.generate($('prompt').value, {
        maxNewTokens: number('max-new-tokens'), temperature: number('temperature'), topK: number('top-k'),
        topP: number('top-p'), seed: number('seed'), signal: controller.signal,
        onToken: ({ text, index }) => {
          $('generated-text').textContent += text;
          const now = performance.now();
          first ??= now;
          $('speed').textContent = index > 0 ? `${index + 1} tokens, ${((1000 * index) / (now - first)).toFixed(1)} tokens/s` : '1 token';
        },
      });
      $('generated-text').textContent = result.text;
      const t = result.timings;
      $('speed').textContent = `${result.tokenIds.length} new tokens (${result.finishReason}); prompt ${t.prompt_tokens} tokens `
        + `in ${t.prefill_ms.toFixed(1)} ms; ${t.tokens_per_second === null ? '-' : t.tokens_per_second.toFixed(1)} tokens/s decoding`;
      showGeneration(result);
      return result;
    } catch (err) {
      if (err.name !== 'AbortError') throw err;
      $('output').textContent = 'stopped';
      return null;
    } finally {
      $('generate').disabled = false;
      $('stop').disabled = true;
    }
  };
  $('generate').onclick = () => generate().catch(showError);
  $('stop').onclick = () => controller?.abort();
  await generate();
}

function showGeneration(result) {
  fact('Path', result.path);
  fact('Variant', 'none (CPU)');
  fact('WebGPU', result.webgpu.available ? 'available' : `absent: ${result.webgpu.reason}`);
  fact('Notes', result.notes.join(' | ') || '-');
  const t = result.timings;
  fact('Timings', `load ${t.load_ms.toFixed(0)} ms, init ${t.init_ms.toFixed(0)} ms, prefill ${t.prefill_ms.toFixed(1)} ms, `
    + `decode ${t.decode_ms.toFixed(1)} ms for ${t.decode_steps} steps`);
  $('output').textContent = `token ids: ${result.tokenIds.join(' ')}`;
  $('output').classList.remove('muted');
  state.result = result;
}

// What the page shows, by the `demo` of the model's row in architectures.js.
const DEMOS = { sentences: sentencesDemo, images: imagesDemo, rows: rowsDemo, prompt: promptDemo };

function showError(err) {
  state.error = { name: err.name, message: err.message };
  state.status = 'error';
  $('error').textContent = `${err.name}: ${err.message}`;
}

main().catch(showError);
