// Types of the byte-level BPE tokenizer (tokenizer_bpe.js), written by hand to match it;
// `tsc -p web_runtime` checks the JS against them (types/tokenizer_bpe_conformance.ts).

export interface BpeEncodeOptions {
  /** Apply the post-processor's template (Llama-3's <|begin_of_text|>); default true, as `tokenizers`' encode. */
  addSpecialTokens?: boolean;
}

export interface BpeDecodeOptions {
  /** Leave out tokens marked special; default false (transformers' decode). */
  skipSpecialTokens?: boolean;
}

/** Incremental decoding for streamed generation: only complete characters come out of step(). */
export interface TokenTextStream {
  /** The text this id completes ('' while a character is still open). */
  step(id: number): string;
  /** What is left at the end of the stream. */
  flush(): string;
}

/** The byte-level stream: the chunks add up to decode() of the same ids. */
export declare class BpeDecodeStream implements TokenTextStream {
  constructor(tokenizer: ByteLevelBpeTokenizer, skipSpecialTokens?: boolean);
  /** The text this id completes ('' while a multi-byte character is still open). */
  step(id: number): string;
  /** What is left at the end (an unfinished character as U+FFFD, as decode() gives it). */
  flush(): string;
}

/** The stream for token-level decoders (Llama-2's): `tokenizers`' DecodeStream algorithm, chunk for chunk. */
export declare class WindowDecodeStream implements TokenTextStream {
  constructor(tokenizer: ByteLevelBpeTokenizer, skipSpecialTokens?: boolean);
  step(id: number): string;
  flush(): string;
}

/**
 * A BPE tokenizer.json: the byte-level family (GPT-2, Llama-3, Qwen2) and Llama-2's SentencePiece-style
 * layout (Prepend/Replace normalizer, byte fallback, Replace/ByteFallback/Fuse/Strip decoder).
 * Unsupported fields throw, naming the field.
 */
export declare class ByteLevelBpeTokenizer {
  constructor(json: unknown);
  static fromJSON(json: unknown): ByteLevelBpeTokenizer;
  /** Distinct tokens, model vocabulary and added tokens together (`get_vocab_size(with_added_tokens=True)`). */
  readonly vocabSize: number;
  encode(text: string, options?: BpeEncodeOptions): number[];
  decode(ids: Iterable<number>, options?: BpeDecodeOptions): string;
  decodeStream(options?: BpeDecodeOptions): BpeDecodeStream | WindowDecodeStream;
  /** The pre-tokenizer's words (byte-level characters), as `pre_tokenizer.pre_tokenize_str`. */
  preTokenize(text: string): string[];
  /** The UTF-8 bytes that ids stand for. */
  tokenBytes(ids: Iterable<number>, skipSpecialTokens?: boolean): Uint8Array;
  tokenToId(token: string): number | undefined;
  idToToken(id: number): string | undefined;
  isSpecial(id: number): boolean;
}

/** An Oniguruma pattern (as `tokenizers` compiles them) as an equivalent JS `u` regex with the g flag. */
export declare function onigToJsRegex(pattern: string, field?: string): RegExp;
