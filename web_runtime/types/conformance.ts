// Compile-time only, never shipped or run: `tsc -p web_runtime` fails when the JS modules stop
// providing what the hand-written declarations promise (a missing export, a member or a result
// field of another type). Parameter types the JS leaves implicit are `any` there, so the
// declarations are the stricter side; JSDoc in the JS names these types where it helps.

import * as browserJs from '../ulpq.js';
import * as nodeJs from '../node.js';
import type * as browserApi from './ulpq.js';
import type * as nodeApi from './node.js';

// The factories' UlpqModel<'text'> / <'image'> narrow process() by kind, which the untyped JS
// class cannot state: the JS is held to UlpqModel<'any'> there (every kind's result extends AnyResult).
type Factories = 'createBertModel' | 'createVitModel' | 'createModel';
type AsAnyKind<Api, Model> = {
  [K in keyof Api]: K extends Factories ? (...args: Api[K] extends (...a: infer P) => unknown ? P : never) => Model : Api[K];
};

export const browser: AsAnyKind<typeof browserApi, browserApi.UlpqModel> = browserJs;
export const node: AsAnyKind<typeof nodeApi, nodeApi.UlpqModel> = nodeJs;

// Each kind's result is an AnyResult with fields made certain.
export const textIsAny = (r: browserApi.TextResult): browserApi.AnyResult => r;
export const imageIsAny = (r: browserApi.ImageResult): browserApi.AnyResult => r;
