// Types of the ulpq runtime (ulpq.js), written by hand to match it; `tsc -p web_runtime` checks the
// JS against them (types/conformance.ts). No WebGPU or DOM types appear here, so a consumer needs
// neither @webgpu/types nor lib "dom" to use them.

/** Where a model runs: WebGPU, else the CPU path ('auto'); WebGPU or an error; the CPU path only. */
export type Hardware = 'auto' | 'webgpu' | 'cpu';

/** The path a result came from. */
export type RunPath = 'webgpu' | 'cpu';

/** A browser profile of the bundle's shader variants ('firefox', 'chrome', 'safari', 'edge' in bundles today). */
export type ProfileName = 'firefox' | 'chrome' | 'safari' | 'edge' | (string & {});

/** The CPU backend: null picks WebAssembly SIMD where it runs, else plain JS. */
export type CpuChoice = 'wasm' | 'js' | null;

/** What the caller expects the bundle to be quantized as; a bundle built otherwise says so in `notes`. */
export interface QuantizationRequest {
  bitsPerWeight?: number;
  /** Same as bitsPerWeight. */
  bits?: number;
  /** A format name of the bundle's registry, e.g. 'int4'. */
  format?: string;
}

/** Where a shard's bytes came from: the browser's Cache API (after a new sha256 check) or a download. */
export type WeightSource = 'cache' | 'network';

/**
 * What the weight cache did during a load (model.cache, result.cache, the 'verified' event).
 * status 'on': the Cache API was used; 'off': the caller passed cache: false; 'unavailable': no
 * Cache API here (Node.js, a page that is not a secure context; the reason is in notes).
 */
export interface WeightCacheReport {
  status: 'on' | 'off' | 'unavailable';
  /** Weight bytes taken from the cache in this load. */
  cacheBytes: number;
  /** Weight bytes downloaded in this load. */
  networkBytes: number;
  notes: string[];
}

/**
 * A load progress event; switch on `phase`. 'weights' repeats while shards arrive (`file` is null
 * and `source` absent on the first event), 'verified' once every shard passed its sha256, 'ready'
 * when the model can run. `loaded` and `total` count weight bytes (both 1 for 'ready').
 */
export type LoadProgress =
  | { phase: 'weights'; file: string | null; loaded: number; total: number; source?: WeightSource }
  | { phase: 'verified'; file: null; loaded: number; total: number; cache: WeightCacheReport }
  | { phase: 'ready'; file: null; loaded: number; total: number };

/** Options shared by `new UlpqModel`, `loadBundle` and the factories. */
export interface CommonOptions {
  /** Force a browser profile instead of the one matched from the user agent. */
  profile?: ProfileName | null;
  /** Called with every progress event; an exception it throws is noted, never fatal. */
  onProgress?: ((event: LoadProgress) => void) | null;
  /** Fill GPU outputs with NaN before each run, so an unwritten element shows (tests). */
  poison?: boolean;
  /** Check the chosen WebGPU variant against the CPU on a known product before the first run (default true). */
  selfTest?: boolean;
  cpu?: CpuChoice;
  /** Cap on CPU worker threads, 1 to 256. */
  threads?: number;
  /** Keep verified weight shards in the browser's Cache API and take them from there next time (default true). */
  cache?: boolean;
}

/** Options of `new UlpqModel(manifestUrl, options)` and `loadBundle`. Unknown keys are a TypeError. */
export interface ModelOptions extends CommonOptions {
  hardware?: Hardware;
  /** The quantization the caller expects (the factories' `quantization`). */
  expected?: QuantizationRequest | null;
}

/** Options of `createBertModel` / `createVitModel`. Unknown keys are a TypeError. */
export interface FactoryOptions extends CommonOptions {
  /** The bundle folder's URL, or its manifest.json (default: the current folder). */
  modelId?: string | URL;
  quantization?: QuantizationRequest | null;
}

/** The options a model runs with, defaults filled in. */
export interface ResolvedOptions {
  hardware: Hardware;
  profile: ProfileName | null;
  onProgress: ((event: LoadProgress) => void) | null;
  poison: boolean;
  selfTest: boolean;
  cpu: CpuChoice;
  threads: number | undefined;
  cache: boolean;
  expected: QuantizationRequest | null;
}

/** Whether this environment exposes WebGPU at all, and why not. */
export interface WebGpuPresence {
  available: boolean;
  reason: string | null;
}

/** The shader variant a WebGPU run used. */
export interface Variant {
  /** The variant's name, e.g. 'chrome-256'. */
  name: string;
  profile: ProfileName;
  workgroup_size: number;
  /** The profile asked for (the `profile` option, else the detected one, else 'chrome'). */
  requested: ProfileName;
  /** The profile matched from the user agent, or null. */
  detected: ProfileName | null;
  /** True when the requested profile did not fit or failed, so another one ran. */
  fallback: boolean;
  /**
   * The optional WebGPU features whose shader variants ran ('subgroups', 'shader-f16'): those the
   * adapter offered and the device was granted, where this profile ships variants for them; [] runs
   * the base variants.
   */
  features: string[];
  /** The adapter's subgroup size range where it reports one (the kernels serve any size), else null. */
  subgroup_sizes: { min: number; max: number } | null;
}

/** Milliseconds spent: fetching and verifying, starting the backend, encoding the input, running. */
export interface Timings {
  /** From initialize() until the weights are in memory and verified. */
  load_ms: number;
  /**
   * From the weights in memory until the model is ready. The backend starts while the weights
   * download (WebGPU's device and pipelines need only the manifest), so this is what was left then.
   */
  init_ms: number;
  encode_ms: number;
  run_ms: number;
}

/** What every result carries. */
export interface ResultBase {
  /** The model's output rows (one per input item). */
  output: number[][];
  /** [rows, columns] of `output`. */
  shape: [number, number];
  path: RunPath;
  /** The shader variant, or null on the CPU path. */
  variant: Variant | null;
  /** Why this path and variant, fallbacks, truncated texts, ignored options. */
  notes: string[];
  webgpu: WebGpuPresence;
  timings: Timings;
  /** Where this model's weights came from when it was loaded. */
  cache: WeightCacheReport;
}

/** A text (BERT) model's result. */
export interface TextResult extends ResultBase {
  /** One embedding per text (L2-normalised for sentence-transformers models); the same rows as `output`. */
  embeddings: number[][];
  /** Tokens per text, [CLS] and [SEP] included. */
  tokens: number[];
}

/** A class of an image classifier's prediction. */
export interface Prediction {
  index: number;
  label: string;
  probability: number;
}

/** An image (ViT) model's result: a classifier gives logits and predictions, a bare encoder embeddings. */
export interface ImageResult extends ResultBase {
  logits?: number[][];
  /** The most probable class per image. */
  predictions?: Prediction[];
  embeddings?: number[][];
}

/** A result of a model whose architecture the caller did not state (`loadBundle`). */
export interface AnyResult extends ResultBase {
  embeddings?: number[][];
  logits?: number[][];
  predictions?: Prediction[];
  tokens?: number[];
}

/** What generate() hears of each new token, as soon as it is chosen. */
export interface GeneratedToken {
  token: number;
  /** 0 for the first new token. */
  index: number;
  /** The characters this token completes ('' while a multi-byte character is still open). */
  text: string;
}

/** generate()'s options; a TypeError (RangeError: a number out of range) names a bad one. */
export interface GenerateOptions {
  /** New tokens at most (default 32). */
  maxNewTokens?: number;
  /** 0 (the default): greedy; above 0: sampling from softmax(logits / temperature). */
  temperature?: number;
  /** Sample among the k most probable tokens (0, the default: all). */
  topK?: number;
  /** Sample among the most probable tokens whose mass reaches topP (1, the default: all). */
  topP?: number;
  /** Seed of the sampling PRNG (null, the default: a random one, reported in the result). */
  seed?: number | null;
  onToken?: ((token: GeneratedToken) => void) | null;
  /** Aborting it rejects the call with an AbortError (checked between tokens). */
  signal?: AbortSignal | null;
}

/** Milliseconds and counts of a generation. */
export interface GenerateTimings {
  load_ms: number;
  init_ms: number;
  encode_ms: number;
  /** The prompt's one pass. */
  prefill_ms: number;
  /** The cached steps after the first token. */
  decode_ms: number;
  prompt_tokens: number;
  decode_steps: number;
  /** decode_steps per second of decode_ms; null with fewer than two new tokens. */
  tokens_per_second: number | null;
}

/** What generate() resolves to. */
export interface GenerateResult {
  /** The new tokens' text (special tokens left out). */
  text: string;
  /** The new tokens only. */
  tokenIds: number[];
  /** The prompt's ids as the model read them. */
  promptIds: number[];
  /** 'eos': an end-of-sequence token (kept in tokenIds); 'length': maxNewTokens; 'max_position': the model's last position. */
  finishReason: 'eos' | 'length' | 'max_position';
  /** The sampling PRNG's seed (pass it again to repeat the run). */
  seed: number;
  /** Where it ran: 'cpu' also after a WebGPU failure under hardware 'auto' (the notes say so). */
  path: RunPath;
  variant: Variant | null;
  notes: string[];
  webgpu: WebGpuPresence;
  timings: GenerateTimings;
}

/** An RGBA image: ImageData, or the same fields (data holds width * height * 4 values, 0..255). */
export interface ImageInput {
  width: number;
  height: number;
  data: Uint8ClampedArray | Uint8Array | ArrayLike<number>;
}

/** A row of finite numbers for an MLP bundle (input_size values). */
export type NumericRow = ArrayLike<number>;

/** Inputs and results per kind of model: `UlpqModel<'text'>` takes strings and gives embeddings. */
export interface ModelKinds {
  text: { input: readonly string[]; result: TextResult };
  image: { input: readonly ImageInput[]; result: ImageResult };
  rows: { input: readonly NumericRow[]; result: AnyResult };
  any: { input: readonly string[] | readonly ImageInput[] | readonly NumericRow[]; result: AnyResult };
}

export type ModelKind = keyof ModelKinds;

/** The parts of manifest.json a caller may read; ulpq_build writes it, bundle_loader.js checks it. */
export interface Manifest {
  schema_version: number;
  model: {
    name: string;
    architecture: 'bert' | 'vit' | 'mlp' | (string & {});
    output: 'embeddings' | 'logits' | 'output' | (string & {});
    labels?: string[];
    [field: string]: unknown;
  };
  quantization?: { default: { format: string }; quantized_bits_per_weight?: number; [field: string]: unknown };
  formats: Record<string, { name: string; bits: number; [field: string]: unknown }>;
  profiles: Array<{ name: ProfileName; variant: string; workgroup_size: number; [field: string]: unknown }>;
  shards: Array<{ file: string; bytes: number; sha256: string }>;
  files: Array<{ file: string; bytes: number; sha256: string }>;
  [field: string]: unknown;
}

/** The backend a model runs on (internal: fields beyond `path` may change between versions). */
export interface Backend {
  readonly path: string;
}

/**
 * A bundle's model. `initialize()` fetches and verifies the bundle and starts a backend;
 * `process()` runs inputs (calls may overlap: they run one after another); `dispose()` frees it.
 */
export class UlpqModel<K extends ModelKind = 'any'> {
  /** Checks the options at once (TypeError on an unknown key or ill-typed value). */
  constructor(manifestUrl: string | URL, options?: ModelOptions);
  readonly manifestUrl: URL;
  readonly options: ResolvedOptions;
  /** The verified manifest once initialize() has read it, else null. */
  manifest: Manifest | null;
  backend: Backend | null;
  /** The shader variant in use, or null (CPU path, or not initialized). */
  variant: Variant | null;
  /** Notes so far (every result carries them too). */
  notes: string[];
  webgpu: WebGpuPresence;
  /** load_ms and init_ms once initialized. */
  timings: Partial<Pick<Timings, 'load_ms' | 'init_ms'>>;
  /** The last load's weight cache report, else null. */
  cache: WeightCacheReport | null;
  /** The text model's tokenizer once initialized, else null. */
  tokenizer: WordPieceTokenizer | null;
  /** Fetch and verify the bundle and start a backend; calling it again returns the same load. */
  initialize(): Promise<this>;
  /**
   * Run the model on a batch. Bad input is a TypeError naming the item, before anything runs.
   * Rejects with IntegrityError (a tampered file), GpuUnavailable (hardware 'webgpu' without a
   * working GPU) or an Error once disposed.
   */
  process(input: ModelKinds[K]['input']): Promise<ModelKinds[K]['result']>;
  /**
   * A decoder bundle's text generation after `prompt` (a string, or token ids): the prompt in one
   * pass, then one cached step per token, each streamed through onToken. Rejects with a TypeError
   * for a bundle that is not a decoder, an AbortError when `signal` fires.
   */
  generate(prompt: string | readonly number[], options?: GenerateOptions): Promise<GenerateResult>;
  /** Free the GPU device, buffers, weights and tokenizer after the calls already made; later calls throw. */
  dispose(): Promise<void>;
}

/** A bundle that cannot be used: unreachable, not JSON, a manifest that fails its schema. */
export class BundleError extends Error {
  constructor(message: string);
}

/** A shard, shader, kernel or tokenizer file whose bytes do not match the manifest's sha256 or size. */
export class IntegrityError extends BundleError {
  constructor(message: string);
}

/** WebGPU is missing or failed (only thrown to callers that asked for hardware 'webgpu'). */
export class GpuUnavailable extends Error {
  constructor(message: string);
}

export interface TokenizerOptions {
  lowercase?: boolean;
  /** null: follow `lowercase`. */
  stripAccents?: boolean | null;
  cleanText?: boolean;
  chineseChars?: boolean;
  maxLength?: number;
  specials?: { cls?: string; sep?: string; pad?: string; unk?: string };
  /** Strings matched literally before normalisation. */
  addedTokens?: string[];
  continuingPrefix?: string;
  maxInputCharsPerWord?: number;
}

/** A padded batch of token ids, all [batch * seq] row-major. */
export interface TokenBatch {
  ids: Uint32Array;
  mask: Float32Array;
  positions: Uint32Array;
  types: Uint32Array;
  batch: number;
  seq: number;
  lengths: number[];
  /** Texts cut at maxLength: their index, word pieces before the cut, pieces dropped. */
  truncated: Array<{ index: number; tokens: number; dropped: number }>;
}

/**
 * The WordPiece vocabulary as the tokenizer holds it (one string, typed offsets and a hash table,
 * not a Map of 30k strings): lookups, its size, and its [token, id] entries in id order.
 */
export interface Vocabulary extends Iterable<[string, number]> {
  readonly size: number;
  get(token: string): number | undefined;
  has(token: string): boolean;
  entries(): IterableIterator<[string, number]>;
}

/** BERT's WordPiece tokenizer, as Hugging Face `tokenizers` does it. */
export class WordPieceTokenizer {
  /** @param vocab token -> id entries (a Map, or any iterable of [token, id]); a repeated token keeps its smaller id */
  constructor(vocab: Iterable<[string, number]>, options: TokenizerOptions);
  static fromTokenizerJson(json: object, maxLength?: number): WordPieceTokenizer;
  static fromVocabTxt(text: string, options: TokenizerOptions): WordPieceTokenizer;
  readonly vocab: Vocabulary;
  readonly maxLength: number;
  /** Token ids with [CLS] and [SEP], truncated to maxLength. */
  encode(text: string): number[];
  /** The ids as encode() gives them and how many word pieces past maxLength were cut. */
  encodeCounted(text: string): { ids: number[]; dropped: number };
  batch(texts: readonly string[]): TokenBatch;
}

/** Fetch, verify and initialize a bundle in one call. */
export function loadBundle(manifestUrl: string | URL, options?: ModelOptions): Promise<UlpqModel>;

/**
 * A text model: `createBertModel(hardware, {modelId, quantization})`, then initialize() and
 * process(texts). `modelId` is the bundle folder's URL or its manifest.json.
 */
export function createBertModel(hardware?: Hardware, options?: FactoryOptions): UlpqModel<'text'>;

/** An image model: process() takes ImageData or {width, height, data} RGBA images. */
export function createVitModel(hardware?: Hardware, options?: FactoryOptions): UlpqModel<'image'>;

/** The original SDK's name for createBertModel. */
export const createModel: typeof createBertModel;

/**
 * Delete the weight shards kept in the browser's Cache API: every bundle's, or only those of
 * `bundle` (a bundle folder URL or its manifest.json). Resolves to the number of entries deleted
 * (0 where there is no Cache API).
 */
export function clearCache(bundle?: string | URL | null): Promise<number>;
