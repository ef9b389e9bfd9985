// How an app written in TypeScript uses the package, checked by tsc against its .d.ts (strict).
// Lines marked @ts-expect-error are wrong usages that the types must reject: tsc fails if any
// of them type-checks (tests/test_npm_package.py also checks them without the markers).

import {
  BundleError, IntegrityError, GpuUnavailable, clearCache, createBertModel, createVitModel, loadBundle,
  type LoadProgress, type TextResult, type UlpqModel,
} from 'ulpq-runtime';
import { loadBundle as loadInNode, nodeWebgpu } from 'ulpq-runtime/node';

const phases: string[] = [];
function onProgress(event: LoadProgress): void {
  if (event.phase === 'weights') phases.push(`${event.file ?? '-'} ${event.loaded}/${event.total} ${event.source ?? ''}`);
  if (event.phase === 'verified') phases.push(`${event.cache.status}: ${event.cache.networkBytes} bytes downloaded`);
}

export async function embed(texts: string[]): Promise<number[][]> {
  const bert = createBertModel('auto', { modelId: './ulpq-bundle', quantization: { bitsPerWeight: 4 }, onProgress });
  await bert.initialize();
  const result: TextResult = await bert.process(texts);
  const first: number = result.embeddings[0][0];
  const tokens: number = result.tokens[0];
  const where: 'webgpu' | 'cpu' = result.path;
  console.log(first, tokens, where, result.variant?.name, result.timings.run_ms, result.cache.status, result.notes.join('; '));
  await bert.dispose();
  return result.embeddings;
}

export async function classify(image: { width: number; height: number; data: Uint8ClampedArray }): Promise<string> {
  const vit = await createVitModel('webgpu', { modelId: new URL('https://example.com/vit-bundle/') }).initialize();
  const { predictions } = await vit.process([image]);
  return predictions?.[0].label ?? 'no classifier head';
}

export async function anyBundle(): Promise<UlpqModel> {
  try {
    const model = await loadBundle('./ulpq-bundle/manifest.json', { hardware: 'cpu', cpu: 'wasm', threads: 2, cache: false });
    const deleted: number = await clearCache('./ulpq-bundle/');
    console.log(deleted, model.manifest?.model.architecture, nodeWebgpu.reason);
    return model;
  } catch (err) {
    if (err instanceof IntegrityError || err instanceof BundleError || err instanceof GpuUnavailable) console.error(err.message);
    throw err;
  }
}

export async function inNode(): Promise<number> {
  const model = await loadInNode('./ulpq-bundle', { hardware: 'cpu' });
  const result = await model.process(['a sentence']);
  return result.output.length;
}

// --- wrong usages: each must be a type error ---------------------------------------------------
export async function wrong(): Promise<void> {
  const bert = createBertModel('auto', { modelId: './ulpq-bundle' });
  // @ts-expect-error process() takes an array of strings, not a number
  await bert.process(42);
  // @ts-expect-error a text model takes strings, not images
  await bert.process([{ width: 1, height: 1, data: new Uint8Array(4) }]);
  // @ts-expect-error 'gpu' is not a hardware setting
  createBertModel('gpu', { modelId: './ulpq-bundle' });
  // @ts-expect-error unknown option (the runtime throws a TypeError for it too)
  createBertModel('auto', { modelID: './ulpq-bundle' });
  const result = await bert.process(['a']);
  // @ts-expect-error the field is `embeddings`
  console.log(result.embedding);
  // @ts-expect-error cache is a boolean
  await loadBundle('./ulpq-bundle/manifest.json', { cache: 'yes' });
  // @ts-expect-error initialize() takes no URL: the model has its manifest already
  await bert.initialize('./other');
}
