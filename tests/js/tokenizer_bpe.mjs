// Run the runtime's byte-level BPE tokenizer under Node for tests/test_tokenizer_bpe.py.
//   node tokenizer_bpe.mjs REQUEST.json  ->  JSON on stdout
// REQUEST: {cases: [{tokenizer: PATH, texts: [...], ids: [[...], ...], maxId}], broken: [PATH, ...]}
// Per case: the pre-tokenizer's words, encode with and without the template's special tokens, decode (special tokens kept and
// skipped) of each text's ids and of each free id list, the streaming decode of each (chunks),
// vocabSize and the token <-> id maps (ids 0 .. maxId + 8). Per broken tokenizer.json: the error message (or null).
import { readFileSync } from 'node:fs';

const { ByteLevelBpeTokenizer } = await import('../../web_runtime/tokenizer_bpe.js');
const request = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const load = (path) => new ByteLevelBpeTokenizer(JSON.parse(readFileSync(path, 'utf8')));

function stream(tokenizer, ids, skipSpecialTokens) {
  const s = tokenizer.decodeStream({ skipSpecialTokens });
  const chunks = ids.map((id) => s.step(id));
  chunks.push(s.flush());
  return chunks;
}

const cases = request.cases.map(({ tokenizer: path, texts, ids: freeIds, maxId }) => {
  const tokenizer = load(path);
  const encoded = texts.map((t) => tokenizer.encode(t));
  const plain = texts.map((t) => tokenizer.encode(t, { addSpecialTokens: false }));
  const words = texts.map((t) => tokenizer.preTokenize(t));
  const decodeAll = (lists) => lists.map((ids) => ({
    kept: tokenizer.decode(ids),
    skipped: tokenizer.decode(ids, { skipSpecialTokens: true }),
    stream: stream(tokenizer, ids, false),
    streamSkipped: stream(tokenizer, ids, true),
  }));
  const tokens = {};
  for (let id = 0; id <= maxId + 8; id++) tokens[id] = tokenizer.idToToken(id) ?? null;
  const ids = {};
  for (const token of Object.values(tokens)) if (token !== null) ids[token] = tokenizer.tokenToId(token);
  return { encoded, plain, words, decoded: decodeAll(encoded), free: decodeAll(freeIds), vocabSize: tokenizer.vocabSize, tokens, ids };
});

const broken = request.broken.map((path) => {
  try {
    load(path);
    return null;
  } catch (e) {
    return String(e.message);
  }
});

process.stdout.write(JSON.stringify({ cases, broken }));
