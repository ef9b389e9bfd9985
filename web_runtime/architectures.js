// The runtime's side of the architecture registry (ulpq_build/architectures/ is the build side):
// one row per model family, keyed by manifest.model.architecture. A row says what the model takes,
// how the input is encoded, which graph runs it (graphs.js), what a result adds, and what the demo
// page shows; ulpq.js, bundle_loader.js and demo.js read the rows instead of branching on the name.
// A new family is a row here, its graph, and its row in ulpq_build/architectures/.

import { GRAPHS } from './graphs.js';
import { preprocessImages } from './images.js';
import { checkImages, checkTexts, toMatrix } from './inputs.js';
import { WordPieceTokenizer } from './tokenizer.js';
import { ByteLevelBpeTokenizer } from './tokenizer_bpe.js';

/**
 * @typedef {object} EncodedBatch  an input checked and encoded for the graph
 * @property {any} x  what the graph takes
 * @property {number[]} rows  matrix-product rows per item (the CPU path slices the batch by them)
 * @property {(a: number, b: number) => any} slice  the encoding of items a..b-1
 * @property {string[]} notes  said in the result (a truncated text)
 */

/**
 * @typedef {object} TokenizerRow  the encoder a text model reads from a bundle file
 * @property {string[]} files  the files it reads, in order of preference (one must be in manifest.files)
 * @property {(name: string, text: string, model: any) => any} read  the tokenizer from file `name`'s text
 */

/**
 * @typedef {object} Architecture
 * @property {'text' | 'image' | 'rows' | 'prompt'} input  what process() takes: strings, images, rows of
 *   numbers; 'prompt': a generative decoder, run by generate() (decoder_cpu.js), not process()
 * @property {Record<string, any>} manifest  the fields of manifest.model this runtime reads, in
 *   bundle_loader.js's schema notation (checked before anything is fetched)
 * @property {TokenizerRow | null} tokenizer  the tokenizer a text model loads, else null
 * @property {(model: any, input: any, tokenizer: any) => EncodedBatch} encode  check and encode an input
 * @property {(backend: any, model: any, x: any) => Promise<{data: Float32Array, rows: number, cols: number}>} run  its graph
 * @property {(out: any, job: EncodedBatch) => void} output  add the family's own fields to a result
 * @property {'sentences' | 'images' | 'rows' | 'prompt'} demo  what the demo page shows (demo.js)
 * @property {boolean} [decoder]  a generative decoder: the model gets generate() (ulpq.js)
 * @property {(model: any) => any[]} [shapes]  input shapes whose GPU work initialisation builds
 *   ahead (ulpq.js #prepare), each given to `sample`
 * @property {(model: any, shape: any) => any} [sample]  an input for the graph of that shape (its
 *   values do not matter: nothing runs)
 * @property {(model: any) => any} [warmInput]  a tiny input for process(), run once during a GPU
 *   initialisation (ulpq.js #warmUp)
 */

// The matrix-product row counts whose GPU work (plans, bind groups, shared activation buffers) a
// WebGPU model builds during initialisation, so that a first run at a new input shape records its
// steps and runs, rather than also making a hundred GPU objects (issue 10: a first run within 2x of
// a steady one). Which kernels a run's products take depends on its row count m only, and changes
// at m = 9 (GEMV to GEMM), at multiples of the GEMM tile's 64 rows (whether a product splits K:
// dispatch.js splitFor) and at 1024 (the large tiles): one row count per 64-row band up to 256 rows
// (a batch of short sentences or one long one) finds every structure there. The activation
// buffers then held are those of a 256-row run (about 10 MB for BERT-base); longer inputs grow
// them on first use.
const PREPARED_ROWS = [8, 64, 128, 192, 256];

const nothingMore = () => {};

/**
 * Llama/Qwen2/Mistral- and GPT-2-style decoders (ulpq_build/architectures/llama.py, gpt2.py): one
 * graph (ops_decoder.js decoderForward) reads which variant of each part the description names.
 * @type {Architecture}
 */
const DECODER = {
  input: 'prompt',
  decoder: true,
  manifest: { hidden_size: 'uint', num_layers: 'uint', num_heads: 'uint', num_kv_heads: 'uint', head_dim: 'uint',
    vocab_size: 'uint', max_position: 'uint', norm: 'string', norm_eps: 'number', ffn: 'string', positions: { kind: 'string' },
    embeddings: { word: { table: 'string' } }, layers: ['object'], final_norm: 'object', lm_head: 'object',
    eos_token_ids: ['uint'], tokenizer: { files: ['string'] } },
  tokenizer: {
    files: ['tokenizer.json'],
    read: (name, text) => new ByteLevelBpeTokenizer(JSON.parse(text)),
  },
  encode() {
    throw new TypeError('this bundle is a generative decoder: call generate(prompt, options), not process()');
  },
  run() {
    throw new TypeError('this bundle is a generative decoder: call generate(prompt, options), not process()');
  },
  output: nothingMore,
  demo: 'prompt',
};

/** @type {Record<string, Architecture>} */
export const ARCHITECTURES = {
  mlp: {
    input: 'rows',
    manifest: { input_size: 'uint', layers: ['object'] },
    tokenizer: null,
    encode(model, input) {
      const x = toMatrix(input, model.input_size);
      return { x, rows: Array(x.rows).fill(1), notes: [],
        slice: (a, b) => ({ data: x.data.subarray(a * model.input_size, b * model.input_size), rows: b - a }) };
    },
    run: GRAPHS.mlp,
    output: nothingMore,
    demo: 'rows',
    shapes: () => [1, ...PREPARED_ROWS],
    warmInput: (model) => [Array(model.input_size).fill(0)],
    sample: (model, rows) => ({ data: new Float32Array(rows * model.input_size), rows }),
  },
  bert: {
    input: 'text',
    manifest: { tokenizer: { max_length: 'uint', 'lowercase?': 'bool' }, layers: ['object'] },
    tokenizer: {
      files: ['tokenizer.json', 'vocab.txt'],
      read(name, text, model) {
        const facts = model.tokenizer;
        if (name === 'tokenizer.json') return WordPieceTokenizer.fromTokenizerJson(JSON.parse(text), facts.max_length);
        return WordPieceTokenizer.fromVocabTxt(text, { lowercase: facts.lowercase, stripAccents: facts.strip_accents,
          maxLength: facts.max_length });
      },
    },
    encode(model, input, tokenizer) {
      const texts = checkTexts(input);
      const x = tokenizer.batch(texts);
      const notes = x.truncated.map(({ index, tokens, dropped }) => `text ${index} was truncated: ${tokens} word pieces, `
        + `${dropped} dropped past the model's max_length of ${tokenizer.maxLength} tokens`);
      return { x, rows: x.lengths, slice: (a, b) => tokenizer.batch(texts.slice(a, b)), notes };
    },
    run: GRAPHS.bert,
    output(out, job) { out.tokens = job.x.lengths; },
    demo: 'sentences',
    shapes(model) {
      const longest = model.tokenizer.max_length;
      // rows r as one text of r tokens, or as r / longest texts of the longest length
      return PREPARED_ROWS.map((r) => {
        const seq = Math.min(r, longest);
        return { batch: Math.ceil(r / seq), seq };
      });
    },
    warmInput: () => ['ready'],
    sample(model, { batch, seq }) {
      const n = batch * seq;
      return { ids: new Uint32Array(n), mask: new Float32Array(n).fill(1), positions: Uint32Array.from({ length: n }, (_, i) => i % seq),
        types: new Uint32Array(n), batch, seq, lengths: Array(batch).fill(seq), truncated: [] };
    },
  },
  vit: {
    input: 'image',
    manifest: { preprocess: { image_size: 'uint', channels: 'uint', mean: ['number'], std: ['number'], rescale: 'number' },
      labels: ['string'], layers: ['object'] },
    tokenizer: null,
    encode(model, input) {
      const x = preprocessImages(checkImages(input), model.preprocess);
      const per = x.data.length / x.batch;
      return { x, rows: Array(x.batch).fill(model.num_patches + 1), notes: [],
        slice: (a, b) => ({ data: x.data.subarray(a * per, b * per), batch: b - a }) };
    },
    run: GRAPHS.vit,
    output: nothingMore,
    demo: 'images',
    // batches of 1 to 8 images within 256 rows (one image of a large ViT is past it already)
    shapes: (model) => [1, 2, 4, 8].filter((b) => b === 1 || b * (model.num_patches + 1) <= PREPARED_ROWS[PREPARED_ROWS.length - 1]),
    sample: (model, batch) => ({ data: new Float32Array(batch * model.num_channels * model.image_size * model.image_size), batch }),
    warmInput: () => [{ width: 8, height: 8, data: new Uint8ClampedArray(8 * 8 * 4) }],
  },
  llama: DECODER,
  gpt2: DECODER,
};

/** The row of manifest.model.architecture, or null for a name this runtime does not know. */
export function architectureOf(model) {
  const name = model?.architecture;
  return typeof name === 'string' && Object.prototype.hasOwnProperty.call(ARCHITECTURES, name) ? ARCHITECTURES[name] : null;
}

/** The file a text model's tokenizer is read from: the first of its row's files the manifest lists, else null. */
export function tokenizerFile(architecture, listed) {
  return architecture.tokenizer?.files.find((name) => listed.includes(name)) ?? null;
}
