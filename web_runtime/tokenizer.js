// BERT WordPiece tokenizer: the same ids as Hugging Face `tokenizers` for a BertNormalizer +
// BertPreTokenizer + WordPiece + [CLS] ... [SEP] tokenizer.json (or a bare vocab.txt).
// tests/test_tokenizer.py compares it with the `tokenizers` package on a few hundred sentences.

// Rust's char::is_whitespace (Unicode White_Space); JS \s differs on U+0085 and U+FEFF.
const WHITESPACE = new Set([0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x85, 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
  0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a]);
const OTHER = /\p{C}/u; // control, format, surrogate, private use, unassigned
const MARK_NONSPACING = /\p{Mn}/u;
const PUNCTUATION = /\p{P}/u;
const CJK = [[0x4e00, 0x9fff], [0x3400, 0x4dbf], [0x20000, 0x2a6df], [0x2a700, 0x2b73f], [0x2b740, 0x2b81f],
  [0x2b920, 0x2ceaf], [0xf900, 0xfaff], [0x2f800, 0x2fa1f]];

const isWhitespace = (cp) => WHITESPACE.has(cp);
const isControl = (ch, cp) => cp !== 0x09 && cp !== 0x0a && cp !== 0x0d && OTHER.test(ch);
const isCjk = (cp) => CJK.some(([lo, hi]) => cp >= lo && cp <= hi);
const isAsciiPunct = (cp) => (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126);
const isPunct = (ch, cp) => isAsciiPunct(cp) || PUNCTUATION.test(ch);
const WIDE = 0x80000000; // CompactVocab: an entry whose place is in its string of wider characters

/**
 * A token -> id vocabulary held as a few flat arrays instead of a Map: the tokens in two strings
 * (those of Latin-1 characters only, one byte per character in the engines, and the rest), each
 * entry's place and length, an open-addressing hash table of entry numbers, and the ids only where
 * they are not 0..size-1 in order. The tokenizer lives as long as the model: a Map of BERT's 30522
 * tokens kept 1.6 MiB of JS heap in Node (a string and a table entry per token), this 0.5 MiB.
 * Map-like: get, has, size.
 */
export class CompactVocab {
  /** @param {Iterable<[string, number]>} entries token, id; a token given twice keeps its smaller id */
  constructor(entries) {
    const all = Array.from(entries).sort((a, b) => a[1] - b[1]);
    let slots = 16;
    while (slots < 2 * all.length) slots *= 2;
    this.mask = slots - 1;
    this.table = all.length < 0xffff ? new Uint16Array(slots) : new Uint32Array(slots); // entry + 1; 0 = empty
    // one pass in id order: a token already in the table is a repeat (a Set would cost as much again)
    const tokens = [];
    const ids = [];
    for (const [token, id] of all) {
      let h = CompactVocab.hash(token) & this.mask;
      while (this.table[h] && tokens[this.table[h] - 1] !== token) h = (h + 1) & this.mask;
      if (this.table[h]) continue;
      tokens.push(token);
      ids.push(id);
      this.table[h] = tokens.length;
    }
    this.size = tokens.length;
    const narrow = [];
    const wide = [];
    let narrowLength = 0;
    let wideLength = 0;
    this.starts = new Uint32Array(this.size); // WIDE set: the place is in this.wide
    this.lengths = tokens.every((t) => t.length < 256) ? new Uint8Array(this.size) : new Uint32Array(this.size);
    tokens.forEach((token, e) => {
      this.lengths[e] = token.length;
      let latin1 = true;
      for (let i = 0; i < token.length && latin1; i++) latin1 = token.charCodeAt(i) < 256;
      if (latin1) {
        this.starts[e] = narrowLength;
        narrowLength += token.length;
        narrow.push(token);
      } else {
        this.starts[e] = (wideLength | WIDE) >>> 0;
        wideLength += token.length;
        wide.push(token);
      }
    });
    this.narrow = narrow.join('');
    this.wide = wide.join('');
    // ids 0..size-1 in order (every BERT vocabulary): an entry's number is its id, no array needed
    this.ids = ids.every((id, e) => id === e) ? null : Int32Array.from(ids);
  }

  /** FNV-1a over UTF-16 code units. */
  static hash(s) {
    let h = 0x811c9dc5;
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
    return h >>> 0;
  }

  /** The id of `token`, or undefined. */
  get(token) {
    for (let h = CompactVocab.hash(token) & this.mask; ; h = (h + 1) & this.mask) {
      const slot = this.table[h];
      if (slot === 0) return undefined;
      const e = slot - 1;
      if (this.lengths[e] !== token.length) continue;
      const start = this.starts[e];
      const found = start & WIDE ? this.wide.startsWith(token, start & ~WIDE) : this.narrow.startsWith(token, start);
      if (found) return this.ids ? this.ids[e] : e;
    }
  }

  has(token) {
    return this.get(token) !== undefined;
  }

  /**
   * [token, id] for every token, in id order (as a Map built from vocab.txt or tokenizer.json iterates).
   * @returns {Generator<[string, number], void, undefined>}
   */
  *entries() {
    for (let e = 0; e < this.size; e++) {
      const start = this.starts[e];
      const text = start & WIDE ? this.wide : this.narrow;
      const from = start & ~WIDE;
      /** @type {[string, number]} */
      const entry = [text.slice(from, from + this.lengths[e]), this.ids ? this.ids[e] : e];
      yield entry;
    }
  }

  [Symbol.iterator]() {
    return this.entries();
  }
}

export class WordPieceTokenizer {
  /**
   * @param {Map<string, number> | CompactVocab | Iterable<[string, number]>} vocab token -> id (held as a CompactVocab)
   * @param {object} options lowercase, stripAccents (null: follow lowercase), maxLength, specials ({cls, sep, pad, unk}),
   *   addedTokens (strings matched literally before normalisation), continuingPrefix, maxInputCharsPerWord
   */
  constructor(vocab, options) {
    const words = vocab instanceof CompactVocab ? vocab : new CompactVocab(vocab);
    this.vocab = words;
    this.lowercase = options.lowercase ?? true;
    this.stripAccents = options.stripAccents ?? this.lowercase;
    this.cleanText = options.cleanText ?? true;
    this.chineseChars = options.chineseChars ?? true;
    this.maxLength = options.maxLength ?? 512;
    this.prefix = options.continuingPrefix ?? '##';
    this.maxChars = options.maxInputCharsPerWord ?? 100;
    const id = (token) => {
      if (!words.has(token)) throw new Error(`tokenizer: the vocabulary has no ${token}`);
      return words.get(token);
    };
    this.cls = id(options.specials?.cls ?? '[CLS]');
    this.sep = id(options.specials?.sep ?? '[SEP]');
    this.pad = id(options.specials?.pad ?? '[PAD]');
    this.unkToken = options.specials?.unk ?? '[UNK]';
    this.unk = id(this.unkToken);
    this.added = (options.addedTokens ?? []).filter((t) => t.length > 0).sort((a, b) => b.length - a.length);
  }

  /** From a tokenizer.json object (its normalizer, model and added tokens) and the model's max length. */
  static fromTokenizerJson(json, maxLength) {
    const model = json.model ?? {};
    if (model.type !== 'WordPiece') throw new Error(`tokenizer.json: model type ${model.type}, this runtime reads WordPiece`);
    const norm = json.normalizer ?? {};
    const special = (json.added_tokens ?? []).filter((t) => t.special).map((t) => t.content);
    return new WordPieceTokenizer(new CompactVocab(Object.entries(model.vocab)), {
      lowercase: norm.lowercase ?? true, stripAccents: norm.strip_accents ?? null, cleanText: norm.clean_text ?? true,
      chineseChars: norm.handle_chinese_chars ?? true, maxLength, continuingPrefix: model.continuing_subword_prefix,
      maxInputCharsPerWord: model.max_input_chars_per_word, specials: { unk: model.unk_token }, addedTokens: special,
    });
  }

  /** From a vocab.txt (one token per line, the line number is the id). */
  static fromVocabTxt(text, options) {
    const entries = text.split(/\r?\n/).map((token, i) => [token, i]).filter(([token]) => token.length);
    return new WordPieceTokenizer(new CompactVocab(entries), options); // a repeated line keeps its first id
  }

  normalize(text) {
    let out = '';
    for (const ch of text) {
      const cp = ch.codePointAt(0);
      if (this.cleanText) {
        if (cp === 0 || cp === 0xfffd || isControl(ch, cp)) continue;
        if (isWhitespace(cp)) { out += ' '; continue; }
      }
      out += this.chineseChars && isCjk(cp) ? ` ${ch} ` : ch;
    }
    if (this.stripAccents) {
      let stripped = '';
      for (const ch of out.normalize('NFD')) if (!MARK_NONSPACING.test(ch)) stripped += ch;
      out = stripped;
    }
    if (this.lowercase) {
      let lower = '';
      for (const ch of out) lower += ch.toLowerCase(); // per character, as Rust's char::to_lowercase
      out = lower;
    }
    return out;
  }

  /** Whitespace-separated words with every punctuation character a word of its own. */
  preTokenize(text) {
    const words = [];
    let word = '';
    for (const ch of text) {
      const cp = ch.codePointAt(0);
      if (isWhitespace(cp)) {
        if (word) words.push(word);
        word = '';
      } else if (isPunct(ch, cp)) {
        if (word) words.push(word);
        words.push(ch);
        word = '';
      } else {
        word += ch;
      }
    }
    if (word) words.push(word);
    return words;
  }

  wordPiece(word, ids) {
    const chars = Array.from(word);
    if (chars.length > this.maxChars) { ids.push(this.unk); return; }
    const pieces = [];
    for (let start = 0; start < chars.length;) {
      let end = chars.length;
      let found = -1;
      while (end > start) {
        const piece = (start > 0 ? this.prefix : '') + chars.slice(start, end).join('');
        found = this.vocab.get(piece) ?? -1;
        if (found >= 0) break;
        end -= 1;
      }
      if (found < 0) { ids.push(this.unk); return; }
      pieces.push(found);
      start = end;
    }
    ids.push(...pieces);
  }

  /** Token ids with [CLS] / [SEP], truncated to maxLength. */
  encode(text) {
    return this.encodeCounted(text).ids;
  }

  /** {ids, dropped}: the ids as encode() gives them and how many word pieces past maxLength were cut. */
  encodeCounted(text) {
    const ids = [];
    for (const part of this.#splitAdded(String(text))) {
      if (part.special !== undefined) { ids.push(part.special); continue; }
      for (const word of this.preTokenize(this.normalize(part.text))) this.wordPiece(word, ids);
    }
    const room = Math.max(0, this.maxLength - 2);
    return { ids: [this.cls, ...ids.slice(0, room), this.sep], dropped: Math.max(0, ids.length - room) };
  }

  /** Special added tokens ([MASK], ...) are matched literally before normalisation. */
  #splitAdded(text) {
    const parts = [];
    let rest = text;
    while (rest.length) {
      let best = null;
      for (const token of this.added) {
        const at = rest.indexOf(token);
        if (at >= 0 && (best === null || at < best.at)) best = { at, token };
      }
      if (!best) { parts.push({ text: rest }); break; }
      if (best.at > 0) parts.push({ text: rest.slice(0, best.at) });
      parts.push({ special: this.vocab.get(best.token) ?? this.unk });
      rest = rest.slice(best.at + best.token.length);
    }
    return parts;
  }

  /** A padded batch: ids, attention mask, positions (all [batch * seq], row-major) and the shape. */
  batch(texts) {
    const counted = texts.map((t) => this.encodeCounted(t));
    const encoded = counted.map((c) => c.ids);
    const seq = Math.max(...encoded.map((e) => e.length));
    const n = encoded.length * seq;
    const ids = new Uint32Array(n).fill(this.pad);
    const mask = new Float32Array(n);
    const positions = new Uint32Array(n);
    encoded.forEach((e, b) => {
      ids.set(e, b * seq);
      mask.fill(1, b * seq, b * seq + e.length);
      for (let s = 0; s < seq; s++) positions[b * seq + s] = s;
    });
    // truncated: [{index, tokens, dropped}] for each text cut at maxLength (the caller reports it)
    const truncated = counted.flatMap((c, index) => (c.dropped ? [{ index, tokens: c.ids.length - 2 + c.dropped, dropped: c.dropped }] : []));
    return { ids, mask, positions, types: new Uint32Array(n), batch: encoded.length, seq, lengths: encoded.map((e) => e.length), truncated };
  }
}
