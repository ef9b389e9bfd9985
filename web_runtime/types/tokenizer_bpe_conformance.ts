// Compile-time only, never shipped or run: `tsc -p web_runtime` fails when tokenizer_bpe.js stops
// providing what types/tokenizer_bpe.d.ts promises (as types/conformance.ts does for ulpq.js).

import * as tokenizerJs from '../tokenizer_bpe.js';
import type * as tokenizerApi from './tokenizer_bpe.js';

export const tokenizerBpe: typeof tokenizerApi = tokenizerJs;
