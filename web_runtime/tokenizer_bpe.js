// BPE tokenizer of the byte-level family (GPT-2, Llama-3, Qwen2) and of Llama-2's SentencePiece-style
// layout (legacy converter: Prepend/Replace normalizer, no pre-tokenizer, byte fallback, the
// Replace/ByteFallback/Fuse/Strip decoder): the same ids and the same decoded text as Hugging Face
// `tokenizers` for their tokenizer.json. tests/test_tokenizer_bpe.py trains such
// tokenizers with `tokenizers` and compares encode, decode and streaming decode on several hundred
// strings. A field this file does not implement is an Error naming it, never a silent difference.
//
// The pipeline, in `tokenizers`' order: added tokens with normalized: false are split out of the raw
// text; the rest is normalized (NFC, ...); added tokens with normalized: true are split out of that;
// the remaining pieces are pre-tokenized (Split regexes, ByteLevel) into words, each word is BPE'd;
// the post-processor's template adds its special tokens when addSpecialTokens is true (the default,
// as `Tokenizer.encode` in `tokenizers`: Llama-3's <|begin_of_text|>; GPT-2 and Qwen2 add none).

// GPT-2's reversible byte <-> printable character map: bytes that are printable Latin-1 stand for
// themselves, the others (controls, space, 0x7f-0xa0, 0xad) take code points from 256 on.
const BYTE_TO_CHAR = [];
const CHAR_TO_BYTE = new Map();
{
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const ch = String.fromCodePoint(printable ? b : 256 + extra++);
    BYTE_TO_CHAR.push(ch);
    CHAR_TO_BYTE.set(ch, b);
  }
}

// GPT-2's split regex as `tokenizers` (Oniguruma) writes it; translated like any Split pattern.
const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
// Rust's char::is_whitespace and Oniguruma's \s are Unicode White_Space; JS \s differs on U+0085, U+FEFF.
const WHITESPACE = /\p{White_Space}/u;
const WORD_CHAR = /[\p{Alphabetic}\p{N}_]/u; // the single_word boundary test of `tokenizers`
// Oniguruma's Unicode \w (Letter, Mark, Number, Connector_Punctuation) and \d (Decimal_Number); JS's are ASCII.
const ONIG_WORD = '\\p{L}\\p{M}\\p{N}\\p{Pc}';
const REGEX_SYNTAX = new Set('^$\\.*+?()[]{}|/'.split('')); // what JS's u mode lets one escape

const utf8 = new TextEncoder();
const KEEP_BOM = { ignoreBOM: true }; // a leading U+FEFF is text (TextDecoder drops it by default)

function unsupported(field, value) {
  const shown = typeof value === 'string' ? value : JSON.stringify(value);
  return new Error(`tokenizer.json: ${field} = ${shown} is not supported by the byte-level BPE tokenizer (tokenizer_bpe.js)`);
}

const CASE_VARIANTS = new Map();

/** Every BMP character that `c` matches case-insensitively (Unicode simple case folding, as Oniguruma's (?i)). */
function caseVariants(c) {
  if (!CASE_VARIANTS.has(c)) CASE_VARIANTS.set(c, scanCaseVariants(c));
  return CASE_VARIANTS.get(c);
}

function scanCaseVariants(c) {
  const re = new RegExp(`^${REGEX_SYNTAX.has(c) ? '\\' + c : c}$`, 'iu');
  const out = [];
  for (let cp = 0; cp < 0x10000; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const ch = String.fromCharCode(cp);
    if (re.test(ch)) out.push(ch);
  }
  return out;
}

/**
 * An Oniguruma pattern (what `tokenizers` compiles Split and ByteLevel regexes with) as a JS `u`
 * regex: \s \S \d \D \w \W and . get Oniguruma's Unicode meanings, (?i:...) groups spell out each letter's case
 * variants (Node 20 has no inline modifiers), escaped punctuation JS's u mode rejects is unescaped.
 * Constructs with no JS equivalent (possessive quantifiers, atomic groups, other inline flags) throw.
 */
export function onigToJsRegex(pattern, field = 'pre_tokenizer.pattern.Regex') {
  let out = '';
  let inClass = 0;
  const groups = []; // per open group: is it case-insensitive
  const insensitive = () => groups.length > 0 && groups[groups.length - 1];
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\') {
      const n = pattern[i + 1];
      i++;
      if (n === undefined) throw unsupported(field, pattern);
      if (n === 's') out += '\\p{White_Space}';
      else if (n === 'S') out += '\\P{White_Space}';
      else if (n === 'd') out += '\\p{Nd}';
      else if (n === 'D') out += '\\P{Nd}';
      else if (n === 'w') out += inClass ? ONIG_WORD : `[${ONIG_WORD}]`;
      else if (n === 'W' && !inClass) out += `[^${ONIG_WORD}]`;
      else if (n === 'p' || n === 'P') {
        const end = pattern.indexOf('}', i);
        if (pattern[i + 1] !== '{' || end < 0) throw unsupported(field, pattern);
        out += pattern.slice(i - 1, end + 1);
        i = end;
      } else if (/[A-Za-z0-9]/.test(n)) {
        // Oniguruma-only escapes, and \b \B \W whose Unicode meaning JS's u mode lacks (\W in a class)
        if ('hHAzZGKRXyYoOkgQEbBW'.includes(n)) throw unsupported(field, pattern);
        out += '\\' + n;
      } else out += REGEX_SYNTAX.has(n) || (inClass && n === '-') ? '\\' + n : n;
      continue;
    }
    if (inClass) {
      if (c === '[') throw unsupported(field, pattern); // nested classes / set operations
      if (c === ']') inClass = 0;
      else if (insensitive() && /\p{L}/u.test(c)) {
        if (pattern[i + 1] === '-' || pattern[i - 1] === '-') throw unsupported(field, pattern);
        out += caseVariants(c).join('');
        continue;
      }
      out += c;
      continue;
    }
    if (c === '[') {
      inClass = 1;
      out += c;
      if (pattern[i + 1] === '^') { out += '^'; i++; }
      if (pattern[i + 1] === ']') { out += '\\]'; i++; }
      continue;
    }
    if (c === '(') {
      if (pattern[i + 1] === '?') {
        const rest = pattern.slice(i + 2);
        if (rest.startsWith('i:')) { groups.push(true); out += '(?:'; i += 3; continue; }
        if (rest.startsWith(':') || rest.startsWith('=') || rest.startsWith('!') || rest.startsWith('<=') || rest.startsWith('<!')) {
          groups.push(insensitive()); out += '('; continue;
        }
        throw unsupported(field, pattern);
      }
      groups.push(insensitive());
      out += c;
      continue;
    }
    if (c === ')') { groups.pop(); out += c; continue; }
    if (c === '+' && /[*+?]/.test(pattern[i - 1] ?? '') && pattern[i - 2] !== '\\') throw unsupported(field, pattern); // possessive
    if (c === '.') { out += '[^\\n]'; continue; } // Oniguruma's . stops only at \n; JS's also at \r, U+2028/9
    if (insensitive() && /\p{L}/u.test(c)) {
      const variants = caseVariants(c);
      out += variants.length > 1 ? `[${variants.join('')}]` : c;
      continue;
    }
    out += c;
  }
  try {
    return new RegExp(out, 'gu');
  } catch (e) {
    throw unsupported(field, pattern);
  }
}

/** [start, end, isMatch] spans covering `text`, as `tokenizers`' Pattern::find_matches. */
function findMatches(text, pattern) {
  if (text === '') return [[0, 0, false]];
  const spans = [];
  let prev = 0;
  if (typeof pattern === 'string') {
    if (pattern === '') return [[0, text.length, false]];
    for (let at = text.indexOf(pattern); at >= 0; at = text.indexOf(pattern, at + pattern.length)) {
      if (prev !== at) spans.push([prev, at, false]);
      spans.push([at, at + pattern.length, true]);
      prev = at + pattern.length;
    }
  } else {
    pattern.lastIndex = 0;
    for (const m of text.matchAll(pattern)) {
      if (prev !== m.index) spans.push([prev, m.index, false]);
      spans.push([m.index, m.index + m[0].length, true]);
      prev = m.index + m[0].length;
    }
  }
  if (prev !== text.length) spans.push([prev, text.length, false]);
  return spans;
}

/** Isolated, not inverted, with a regex (every ByteLevel and Llama-3/Qwen2 split): pieces without the span list. */
function splitIsolated(text, regex) {
  const pieces = [];
  let prev = 0;
  regex.lastIndex = 0;
  for (let m = regex.exec(text); m !== null; m = regex.exec(text)) {
    const end = m.index + m[0].length;
    if (end === m.index) { // an empty match splits nothing; step over one character
      regex.lastIndex = end + ((text.codePointAt(end) ?? 0) > 0xffff ? 2 : 1);
      continue;
    }
    if (m.index > prev) pieces.push(text.slice(prev, m.index));
    pieces.push(m[0]);
    prev = end;
  }
  if (prev < text.length) pieces.push(text.slice(prev));
  return pieces;
}

/** `tokenizers`' SplitDelimiterBehavior applied to find_matches spans; empty pieces dropped. */
function splitBy(text, pattern, behavior, invert) {
  if (behavior === 'Isolated' && !invert && typeof pattern !== 'string') return splitIsolated(text, pattern);
  const spans = findMatches(text, pattern).map(([s, e, m]) => [s, e, invert ? !m : m]);
  const pieces = [];
  switch (behavior) {
    case 'Isolated':
      for (const [s, e] of spans) pieces.push([s, e]);
      break;
    case 'Removed':
      for (const [s, e, m] of spans) if (!m) pieces.push([s, e]);
      break;
    case 'MergedWithPrevious': {
      let previousMatch = false;
      for (const [s, e, m] of spans) {
        if (m && !previousMatch && pieces.length) pieces[pieces.length - 1][1] = e;
        else pieces.push([s, e]);
        previousMatch = m;
      }
      break;
    }
    case 'MergedWithNext': {
      let previousMatch = false;
      for (const [s, e, m] of spans) {
        if (previousMatch && !m && pieces.length) pieces[pieces.length - 1][1] = e;
        else pieces.push([s, e]);
        previousMatch = m;
      }
      break;
    }
    case 'Contiguous': {
      let previousMatch = false;
      for (const [s, e, m] of spans) {
        if (m && previousMatch && pieces.length) pieces[pieces.length - 1][1] = e;
        else pieces.push([s, e]);
        previousMatch = m;
      }
      break;
    }
    default:
      throw unsupported('pre_tokenizer.behavior', behavior);
  }
  return pieces.map(([s, e]) => text.slice(s, e)).filter((p) => p.length > 0);
}

const ASCII_UNPRINTABLE = /[\x00-\x20\x7f]/g;
const ASCII = /^[\x00-\x7f]*$/;

function byteLevelChars(text) {
  // ASCII: only controls, space and DEL change (space -> 'Ġ'); everything else stands for itself
  if (ASCII.test(text)) return text.replace(ASCII_UNPRINTABLE, (c) => BYTE_TO_CHAR[c.charCodeAt(0)]);
  let out = '';
  for (const b of utf8.encode(text)) out += BYTE_TO_CHAR[b];
  return out;
}

/** A Replace normalizer/decoder ({pattern: {String | Regex}, content}) as a string -> string function. */
function replacer(spec, where) {
  const pattern = spec.pattern ?? {};
  const content = String(spec.content ?? '');
  if (typeof pattern.String === 'string') return (s) => (pattern.String ? s.split(pattern.String).join(content) : s);
  if (typeof pattern.Regex === 'string') {
    const regex = onigToJsRegex(pattern.Regex, `${where}.pattern.Regex`);
    return (s) => s.replace(regex, () => content);
  }
  throw unsupported(`${where}.pattern`, pattern);
}

/** A normalizer of tokenizer.json as a string -> string function (null: none). */
function buildNormalizer(spec) {
  if (spec == null) return null;
  switch (spec.type) {
    case 'NFC': case 'NFD': case 'NFKC': case 'NFKD':
      return (s) => s.normalize(spec.type);
    case 'Sequence': {
      const parts = (spec.normalizers ?? []).map(buildNormalizer).filter(Boolean);
      return (s) => parts.reduce((acc, f) => f(acc), s);
    }
    case 'Prepend': // SentencePiece-style (Llama-2): '▁' before every non-empty piece
      return (s) => (s.length ? spec.prepend + s : s);
    case 'Replace':
      return replacer(spec, 'normalizer');
    default:
      throw unsupported('normalizer.type', spec.type);
  }
}

/** The pre-tokenizer as a list of steps, each (pieces: string[]) -> string[]; none for null. */
function buildPreTokenizer(spec, steps = []) {
  if (spec == null) return steps;
  switch (spec.type) {
    case 'Sequence':
      for (const p of spec.pretokenizers ?? []) buildPreTokenizer(p, steps);
      break;
    case 'Split': {
      const pattern = spec.pattern ?? {};
      let compiled;
      if (typeof pattern.Regex === 'string') compiled = onigToJsRegex(pattern.Regex, 'pre_tokenizer.pattern.Regex');
      else if (typeof pattern.String === 'string') compiled = pattern.String;
      else throw unsupported('pre_tokenizer.pattern', pattern);
      const behavior = spec.behavior;
      splitBy('', compiled, behavior, false); // an unknown behavior throws here, at load
      const invert = !!spec.invert;
      steps.push({ kind: 'split', run: (pieces) => pieces.flatMap((p) => splitBy(p, compiled, behavior, invert)) });
      break;
    }
    case 'ByteLevel': {
      const prefix = !!spec.add_prefix_space;
      const useRegex = spec.use_regex ?? true;
      const regex = useRegex ? onigToJsRegex(GPT2_PATTERN) : null;
      steps.push({
        kind: 'bytelevel',
        run: (pieces) => pieces.flatMap((p) => {
          const text = prefix && !p.startsWith(' ') ? ' ' + p : p;
          const words = regex ? splitBy(text, regex, 'Isolated', false) : text.length ? [text] : [];
          return words.map(byteLevelChars);
        }),
      });
      break;
    }
    default:
      throw unsupported('pre_tokenizer.type', spec.type);
  }
  return steps;
}

const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;

/**
 * A decoder other than ByteLevel as (tokens: string[]) -> string[] (`tokenizers`' decode_chain);
 * the decoded text is the pieces joined. Covers Llama-2's Sequence[Replace, ByteFallback, Fuse, Strip].
 */
function buildTokenDecoder(spec) {
  switch (spec.type) {
    case 'Sequence': {
      const parts = (spec.decoders ?? []).map(buildTokenDecoder);
      return (tokens) => parts.reduce((acc, f) => f(acc), tokens);
    }
    case 'Replace': {
      const replace = replacer(spec, 'decoder');
      return (tokens) => tokens.map(replace);
    }
    case 'Fuse':
      return (tokens) => [tokens.join('')];
    case 'Strip': {
      const { content, start = 0, stop = 0 } = spec;
      return (tokens) => tokens.map((token) => {
        const chars = Array.from(token);
        let from = 0, to = chars.length;
        while (from < Math.min(start, chars.length) && chars[from] === content) from++;
        for (let i = 0; i < stop && to > from && chars[to - 1] === content; i++) to--;
        return chars.slice(from, to).join('');
      });
    }
    case 'ByteFallback':
      // runs of <0xXX> tokens become their UTF-8 text, or one U+FFFD per byte when invalid
      return (tokens) => {
        const out = [];
        let bytes = [];
        const flush = () => {
          if (!bytes.length) return;
          try {
            out.push(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(Uint8Array.from(bytes)));
          } catch {
            for (let i = 0; i < bytes.length; i++) out.push('\ufffd');
          }
          bytes = [];
        };
        for (const token of tokens) {
          const m = BYTE_TOKEN.exec(token);
          if (m) bytes.push(parseInt(m[1], 16));
          else { flush(); out.push(token); }
        }
        flush();
        return out;
      };
    default:
      throw unsupported('decoder.type', spec.type);
  }
}

/** The post-processor as (ids) -> ids for a single sequence with special tokens added. */
function buildPostProcessor(spec) {
  if (spec == null) return (ids) => ids;
  switch (spec.type) {
    case 'ByteLevel':
      return (ids) => ids; // trims offsets only
    case 'Sequence': {
      const parts = (spec.processors ?? []).map(buildPostProcessor);
      return (ids) => parts.reduce((acc, f) => f(acc), ids);
    }
    case 'TemplateProcessing': {
      const specials = spec.special_tokens ?? {};
      const pieces = (spec.single ?? []).map((item) => {
        if (item.Sequence) {
          if (item.Sequence.id !== 'A') throw unsupported('post_processor.single.Sequence.id', item.Sequence.id);
          return null;
        }
        if (item.SpecialToken) {
          const s = specials[item.SpecialToken.id];
          if (!s) throw unsupported('post_processor.single.SpecialToken.id', item.SpecialToken.id);
          return s.ids;
        }
        throw unsupported('post_processor.single', item);
      });
      return (ids) => pieces.flatMap((p) => (p === null ? ids : p));
    }
    default:
      throw unsupported('post_processor.type', spec.type);
  }
}

/** A binary min-heap of [rank, pos, newId] ordered by rank, then position (`tokenizers`' Merge order). */
class MergeQueue {
  constructor() { this.items = []; }
  get size() { return this.items.length; }
  static less(a, b) { return a[0] !== b[0] ? a[0] < b[0] : a[1] < b[1]; }
  push(item) {
    const h = this.items;
    h.push(item);
    for (let i = h.length - 1; i > 0;) {
      const parent = (i - 1) >> 1;
      if (!MergeQueue.less(h[i], h[parent])) break;
      [h[i], h[parent]] = [h[parent], h[i]];
      i = parent;
    }
  }
  pop() {
    const h = this.items;
    const top = h[0];
    const last = h.pop();
    if (h.length) {
      h[0] = last;
      for (let i = 0; ;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && MergeQueue.less(h[l], h[m])) m = l;
        if (r < h.length && MergeQueue.less(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

const CACHE_LIMIT = 20000; // words; cleared when full, like `tokenizers`' bounded cache

/** The BPE model of tokenizer.json: word (byte-level characters) -> ids. */
class BpeModel {
  constructor(spec) {
    if (spec.dropout != null && spec.dropout !== 0) throw unsupported('model.dropout', spec.dropout);
    this.vocab = new Map(Object.entries(spec.vocab ?? {}));
    this.unkToken = spec.unk_token ?? null;
    this.fuseUnk = !!spec.fuse_unk;
    this.byteFallback = !!spec.byte_fallback;
    this.ignoreMerges = !!spec.ignore_merges;
    this.prefix = spec.continuing_subword_prefix ?? null;
    this.suffix = spec.end_of_word_suffix ?? null;
    this.idToToken = new Map();
    let maxId = -1;
    for (const [token, id] of this.vocab) {
      this.idToToken.set(id, token);
      if (id > maxId) maxId = id;
    }
    this.stride = maxId + 1;
    // (left id * stride + right id) -> [rank, merged id]
    this.merges = new Map();
    const prefixLength = this.prefix ? this.prefix.length : 0;
    (spec.merges ?? []).forEach((merge, rank) => {
      let pair = merge;
      if (typeof merge === 'string') {
        pair = merge.split(' ');
        if (pair.length !== 2) throw new Error(`tokenizer.json: model.merges[${rank}] = ${JSON.stringify(merge)} is not "left right"`);
      }
      const [a, b] = pair;
      const ida = this.vocab.get(a), idb = this.vocab.get(b), idm = this.vocab.get(a + b.slice(prefixLength));
      if (ida === undefined || idb === undefined || idm === undefined) {
        throw new Error(`tokenizer.json: model.merges[${rank}] = ${JSON.stringify(merge)} names a token missing from model.vocab`);
      }
      this.merges.set(ida * this.stride + idb, [rank, idm]);
    });
    this.cache = new Map();
  }

  /** ids of one pre-tokenized word. */
  tokenize(word) {
    const cached = this.cache.get(word);
    if (cached) return cached;
    const ids = this.tokenizeUncached(word);
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(word, ids);
    return ids;
  }

  tokenizeUncached(word) {
    if (this.ignoreMerges && this.vocab.has(word)) return [this.vocab.get(word)];
    const symbols = [];
    const chars = Array.from(word);
    let unk = null;
    chars.forEach((ch, i) => {
      let s = ch;
      if (i > 0 && this.prefix) s = this.prefix + s;
      if (i === chars.length - 1 && this.suffix) s = s + this.suffix;
      const id = this.vocab.get(s);
      if (id !== undefined) {
        if (unk !== null) { symbols.push(unk); unk = null; }
        symbols.push(id);
        return;
      }
      if (this.byteFallback) {
        const bytes = Array.from(utf8.encode(s), (b) => this.vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`));
        if (bytes.every((b) => b !== undefined)) { symbols.push(...bytes); return; }
      }
      if (this.unkToken !== null) {
        const unkId = this.vocab.get(this.unkToken);
        if (unkId === undefined) throw new Error(`tokenizer.json: model.unk_token ${this.unkToken} is not in model.vocab`);
        if (unk !== null && !this.fuseUnk) symbols.push(unk);
        if (unk === null || !this.fuseUnk) unk = unkId;
      }
      // no unk_token: `tokenizers` drops the character
    });
    if (unk !== null) symbols.push(unk);
    return this.mergeAll(symbols);
  }

  /** `tokenizers`' Word::merge_all: lowest rank first, leftmost among equals, over a linked list. */
  mergeAll(ids) {
    const n = ids.length;
    if (n < 2) return ids;
    const c = ids.slice();
    const prev = Array.from({ length: n }, (_, i) => i - 1);
    const next = Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
    const alive = new Array(n).fill(true);
    const queue = new MergeQueue();
    for (let i = 0; i + 1 < n; i++) {
      const m = this.merges.get(c[i] * this.stride + c[i + 1]);
      if (m) queue.push([m[0], i, m[1]]);
    }
    while (queue.size) {
      const [, pos, newId] = queue.pop();
      if (!alive[pos] || next[pos] === -1) continue;
      const right = next[pos];
      const m = this.merges.get(c[pos] * this.stride + c[right]);
      if (!m || m[1] !== newId) continue;
      c[pos] = newId;
      alive[right] = false;
      next[pos] = next[right];
      if (next[right] !== -1) prev[next[right]] = pos;
      if (prev[pos] >= 0) {
        const p = prev[pos];
        const mp = this.merges.get(c[p] * this.stride + c[pos]);
        if (mp) queue.push([mp[0], p, mp[1]]);
      }
      if (next[pos] !== -1) {
        const mn = this.merges.get(c[pos] * this.stride + c[next[pos]]);
        if (mn) queue.push([mn[0], pos, mn[1]]);
      }
    }
    const out = [];
    for (let i = 0; i !== -1; i = next[i]) out.push(c[i]);
    return out;
  }
}

/** Escape a literal for a JS `u` regex. */
const escapeRegex = (s) => s.replace(/[\^$\\.*+?()[\]{}|/]/g, '\\$&');

/**
 * `tokenizers`' added-token matcher over one string: leftmost-longest literal matches (an
 * Aho-Corasick automaton there, an alternation sorted longest first here), honouring single_word,
 * lstrip and rstrip. Returns [piece, id | null] with the text between matches as null pieces.
 */
class AddedTokenMatcher {
  constructor(tokens, contentOf) {
    this.byContent = new Map(tokens.map((t) => [contentOf(t), t]));
    const contents = [...this.byContent.keys()].filter((s) => s.length).sort((a, b) => b.length - a.length);
    this.regex = contents.length ? new RegExp(contents.map(escapeRegex).join('|'), 'gu') : null;
  }

  split(text) {
    if (!this.regex || text === '') return [[text, null]];
    const out = [];
    let offset = 0;
    this.regex.lastIndex = 0;
    for (const m of text.matchAll(this.regex)) {
      const token = this.byContent.get(m[0]);
      let start = m.index, stop = m.index + m[0].length;
      if (token.single_word) {
        const before = start === 0 || !WORD_CHAR.test(lastChar(text.slice(0, start)));
        const after = stop === text.length || !WORD_CHAR.test(String.fromCodePoint(text.codePointAt(stop)));
        if (!before || !after) continue;
      }
      if (token.lstrip) {
        let s = start;
        for (const ch of Array.from(text.slice(0, start)).reverse()) {
          if (!WHITESPACE.test(ch)) break;
          s -= ch.length;
        }
        start = Math.max(s, offset);
      }
      if (token.rstrip) {
        for (const ch of text.slice(stop)) {
          if (!WHITESPACE.test(ch)) break;
          stop += ch.length;
        }
      }
      if (offset < start) out.push([text.slice(offset, start), null]);
      out.push([text.slice(start, stop), token.id]);
      offset = stop;
    }
    if (offset !== text.length) out.push([text.slice(offset), null]);
    return out;
  }
}

function lastChar(s) {
  const chars = Array.from(s.slice(-2));
  return chars[chars.length - 1] ?? '';
}

/** Incremental decoding: `step(id)` returns the text completed by that token ('' while a UTF-8 character is still open). */
export class BpeDecodeStream {
  constructor(tokenizer, skipSpecialTokens = false) {
    this.tokenizer = tokenizer;
    this.skipSpecialTokens = skipSpecialTokens;
    this.decoder = new TextDecoder('utf-8', KEEP_BOM);
  }

  /** The complete characters this id closes (possibly ''). */
  step(id) {
    return this.decoder.decode(this.tokenizer.tokenBytes([id], this.skipSpecialTokens), { stream: true });
  }

  /** The end of the stream: bytes of an unfinished character come out as U+FFFD, as decode() gives them. */
  flush() {
    const rest = this.decoder.decode();
    this.decoder = new TextDecoder('utf-8', KEEP_BOM);
    return rest;
  }
}

/**
 * Incremental decoding for token-level decoders (Llama-2's), by `tokenizers`' DecodeStream
 * algorithm: decode a window of recent ids and emit what grew past the previous window's text,
 * unless it ends in U+FFFD (an unfinished byte-fallback character); the window keeps one token of
 * context so a decoder's start-of-text rules (Strip) apply once. Where the window's text stops
 * starting with the previous one (invalid byte runs, whose U+FFFDs depend on the window),
 * `tokenizers` raises "Invalid prefix"; this stream carries on with what lies past the old length.
 */
export class WindowDecodeStream {
  constructor(tokenizer, skipSpecialTokens = false) {
    this.tokenizer = tokenizer;
    this.skipSpecialTokens = skipSpecialTokens;
    this.ids = [];
    this.prefix = '';
    this.prefixIndex = 0;
  }

  decodeWindow() {
    return this.tokenizer.decode(this.ids, { skipSpecialTokens: this.skipSpecialTokens });
  }

  /** The text this id adds ('' while it is still unfinished). */
  step(id) {
    if (this.prefix === '' && this.ids.length) {
      const prefix = this.decodeWindow();
      if (!prefix.endsWith('\ufffd')) { this.prefix = prefix; this.prefixIndex = this.ids.length; }
    }
    this.ids.push(id);
    const text = this.decodeWindow();
    if (text.length <= this.prefix.length || text.endsWith('\ufffd')) return '';
    const added = text.slice(this.prefix.length);
    const nextIndex = this.ids.length - this.prefixIndex;
    this.ids = this.ids.slice(this.prefixIndex);
    this.prefix = this.decodeWindow();
    this.prefixIndex = nextIndex;
    return added;
  }

  /** The end of the stream: what the window holds past the last emitted text. */
  flush() {
    const text = this.decodeWindow();
    const rest = text.length > this.prefix.length ? text.slice(this.prefix.length) : '';
    this.ids = [];
    this.prefix = '';
    this.prefixIndex = 0;
    return rest;
  }
}

export class ByteLevelBpeTokenizer {
  /** @param {any} json a parsed tokenizer.json of the byte-level BPE family */
  constructor(json) {
    if (json == null || typeof json !== 'object') throw new Error('tokenizer.json: not a JSON object');
    const model = json.model ?? {};
    if (model.type !== 'BPE') throw unsupported('model.type', model.type ?? null);
    if (json.truncation != null) throw unsupported('truncation', json.truncation);
    if (json.padding != null) throw unsupported('padding', json.padding);
    if (json.decoder == null) throw unsupported('decoder', null);
    this.byteLevel = json.decoder.type === 'ByteLevel';
    this.decodeTokens = this.byteLevel ? null : buildTokenDecoder(json.decoder);
    this.normalize = buildNormalizer(json.normalizer);
    this.preTokenizers = buildPreTokenizer(json.pre_tokenizer);
    this.postProcess = buildPostProcessor(json.post_processor);
    this.model = new BpeModel(model);

    this.added = (json.added_tokens ?? []).map((t) => ({ ...t, normalized: t.normalized ?? !t.special }));
    this.addedById = new Map(this.added.map((t) => [t.id, t]));
    this.addedByContent = new Map(this.added.map((t) => [t.content, t.id]));
    this.specialIds = new Set(this.added.filter((t) => t.special).map((t) => t.id));
    this.rawMatcher = new AddedTokenMatcher(this.added.filter((t) => !t.normalized), (t) => t.content);
    this.normalizedMatcher = new AddedTokenMatcher(this.added.filter((t) => t.normalized),
      (t) => (this.normalize ? this.normalize(t.content) : t.content));
    const all = new Set([...this.model.vocab.keys(), ...this.addedByContent.keys()]);
    this.vocabSize = all.size;
  }

  static fromJSON(json) { return new ByteLevelBpeTokenizer(json); }

  /**
   * Token ids of `text`. addSpecialTokens (default true, as `tokenizers`' encode) applies the
   * post-processor's template; added/special tokens written in the text are always matched.
   * @param {string} text
   * @param {{addSpecialTokens?: boolean}} [options]
   * @returns {number[]}
   */
  encode(text, { addSpecialTokens = true } = {}) {
    const ids = [];
    for (const [raw, rawId] of this.rawMatcher.split(text)) {
      if (rawId !== null) { ids.push(rawId); continue; }
      if (raw === '') continue;
      const normalized = this.normalize ? this.normalize(raw) : raw;
      for (const [piece, id] of this.normalizedMatcher.split(normalized)) {
        if (id !== null) { ids.push(id); continue; }
        if (piece === '') continue;
        for (const word of this.preTokenize(piece)) for (const wid of this.model.tokenize(word)) ids.push(wid);
      }
    }
    return addSpecialTokens ? this.postProcess(ids) : ids;
  }

  /**
   * The words the pre-tokenizer makes of `text` (byte-level characters), as `tokenizers`'
   * pre_tokenizer.pre_tokenize_str: no normalizer, no added tokens.
   * @param {string} text
   * @returns {string[]}
   */
  preTokenize(text) {
    let words = text.length ? [text] : [];
    for (const step of this.preTokenizers) words = step.run(words);
    return words;
  }

  /** The UTF-8 bytes tokens `ids` stand for, as `tokenizers`' ByteLevel decoder joins them. */
  tokenBytes(ids, skipSpecialTokens = false) {
    const bytes = [];
    for (const id of ids) {
      const token = this.idToToken(id);
      if (token === undefined || (skipSpecialTokens && this.specialIds.has(id))) continue;
      const start = bytes.length;
      let mapped = true;
      for (const ch of token) {
        const b = CHAR_TO_BYTE.get(ch);
        if (b === undefined) { mapped = false; break; }
        bytes.push(b);
      }
      if (!mapped) {
        bytes.length = start; // a token outside the byte alphabet stands for its own UTF-8
        for (const b of utf8.encode(token)) bytes.push(b);
      }
    }
    return Uint8Array.from(bytes);
  }

  /**
   * Text of `ids`; invalid UTF-8 becomes U+FFFD per maximal subpart, as Rust's from_utf8_lossy.
   * skipSpecialTokens defaults to false (transformers' decode; `tokenizers`' Python decode defaults to true).
   * @param {Iterable<number>} ids
   * @param {{skipSpecialTokens?: boolean}} [options]
   */
  decode(ids, { skipSpecialTokens = false } = {}) {
    if (this.byteLevel) return new TextDecoder('utf-8', KEEP_BOM).decode(this.tokenBytes(ids, skipSpecialTokens));
    const tokens = [];
    for (const id of ids) {
      const token = this.idToToken(id);
      if (token !== undefined && !(skipSpecialTokens && this.specialIds.has(id))) tokens.push(token);
    }
    return this.decodeTokens(tokens).join('');
  }

  /**
   * A streaming decoder for generation: feed ids one at a time, get only complete characters.
   * @returns {BpeDecodeStream | WindowDecodeStream}
   */
  decodeStream({ skipSpecialTokens = false } = {}) {
    return this.byteLevel ? new BpeDecodeStream(this, skipSpecialTokens) : new WindowDecodeStream(this, skipSpecialTokens);
  }

  /** @param {string} token */
  tokenToId(token) {
    return this.addedByContent.get(token) ?? this.model.vocab.get(token);
  }

  /** @param {number} id */
  idToToken(id) {
    return this.addedById.get(id)?.content ?? this.model.idToToken.get(id);
  }

  /** @param {number} id */
  isSpecial(id) {
    return this.specialIds.has(id);
  }
}
