// Tokenize texts with the runtime's WordPiece tokenizer under Node.
//   node tokenize.mjs RUNTIME_DIR TOKENIZER.json MAX_LENGTH TEXTS.json  ->  JSON ids on stdout
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [runtime, tokenizerPath, maxLength, textsPath] = process.argv.slice(2);
const { WordPieceTokenizer } = await import(pathToFileURL(path.join(runtime, 'tokenizer.js')).href);
const tokenizer = WordPieceTokenizer.fromTokenizerJson(JSON.parse(readFileSync(tokenizerPath, 'utf8')), Number(maxLength));
const texts = JSON.parse(readFileSync(textsPath, 'utf8'));
process.stdout.write(JSON.stringify({ ids: texts.map((t) => tokenizer.encode(t)), batch: tokenizer.batch(texts.slice(0, 3)) },
  (k, v) => (ArrayBuffer.isView(v) ? Array.from(v) : v)));
