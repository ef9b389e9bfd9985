// Run a decoder bundle's own runtime under Node (the bundle's node.js, ulpq.js and the rest):
// generate() per request, so Python can compare tokens, text and streaming with numpy and `tokenizers`.
//   node generate_bundle.mjs BUNDLE_DIR REQUEST.json -> JSON on stdout, one entry per run
//   request: {runs: [{prompt (a string or ids), options, load: loadBundle's options (default
//             {hardware: 'cpu'}), call: 'generate' (default) | 'process', abortAfter: abort after
//             this many streamed tokens}]}; a run that throws gives {error: {name, message}}
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [bundleDir, requestPath] = process.argv.slice(2);
const request = JSON.parse(readFileSync(requestPath, 'utf8'));
const { loadBundle } = await import(pathToFileURL(path.join(path.resolve(bundleDir), 'node.js')).href);

const models = new Map(); // one load per distinct load options
const errorOf = (err) => ({ error: { name: err.name, message: err.message } });
const out = [];
for (const run of request.runs) {
  const load = run.load ?? { hardware: 'cpu' };
  const key = JSON.stringify(load);
  if (!models.has(key)) models.set(key, await loadBundle(path.resolve(bundleDir), load).catch((err) => err));
  const model = models.get(key);
  if (model instanceof Error) { out.push(errorOf(model)); continue; }
  const streamed = [];
  const controller = new AbortController();
  const options = { ...run.options };
  if (run.stream !== false) {
    options.signal = controller.signal;
    options.onToken = ({ token, text, index }) => {
      streamed.push({ token, text, index });
      if (run.abortAfter !== undefined && streamed.length >= run.abortAfter) controller.abort();
    };
  }
  try {
    if (run.call === 'process') {
      await model.process([run.prompt]);
      out.push({ processed: true });
      continue;
    }
    const r = await model.generate(run.prompt, options);
    out.push({ text: r.text, tokenIds: r.tokenIds, promptIds: r.promptIds, finishReason: r.finishReason, seed: r.seed,
      path: r.path, variant: r.variant, notes: r.notes, streamed, timings: r.timings, kind: model.backend.kind ?? 'js' });
  } catch (err) {
    out.push({ ...errorOf(err), streamed });
  }
}
for (const model of models.values()) if (!(model instanceof Error)) await model.dispose();
process.stdout.write(JSON.stringify(out));
