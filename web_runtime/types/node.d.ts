// Types of the runtime under Node.js (node.js): everything ulpq.js exports, with bundle folders,
// manifest paths and file: URLs accepted wherever the browser API takes a manifest URL.

import type { FactoryOptions, Hardware, ModelKind, ModelOptions, UlpqModel as BrowserModel } from './ulpq.js';

export * from './ulpq.js';

/** What happened to WebGPU in this process: Dawn (npm `webgpu`) loaded, the adapter it found, or why none. */
export const nodeWebgpu: { dawn: boolean; adapter: string | null; reason: string | null };

/** A bundle folder, manifest path or URL -> the manifest's URL. */
export function manifestUrlOf(where: string | URL): URL;

/** The browser model, taking a bundle folder or manifest path too; its notes say why Dawn found no adapter. */
export class UlpqModel<K extends ModelKind = 'any'> extends BrowserModel<K> {
  constructor(where: string | URL, options?: ModelOptions);
}

/** Fetch, verify and initialize a bundle (a folder, manifest path, file: or http(s) URL) in one call. */
export function loadBundle(where: string | URL, options?: ModelOptions): Promise<UlpqModel>;

/** A text model; `modelId` is a bundle folder (path or URL) or its manifest. */
export function createBertModel(hardware?: Hardware, options?: FactoryOptions): UlpqModel<'text'>;

/** An image model; `modelId` is a bundle folder (path or URL) or its manifest. */
export function createVitModel(hardware?: Hardware, options?: FactoryOptions): UlpqModel<'image'>;

/** The original SDK's name for createBertModel. */
export const createModel: typeof createBertModel;
