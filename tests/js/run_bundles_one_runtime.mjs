// Load several bundles through ONE runtime (the node.js of RUNTIME_DIR, as a page or a benchmark
// that imports one copy of the runtime does) on the CPU path, and report per bundle which CPU
// backend ran it and what process() gave, as JSON. Each bundle must run on its own kernels.
//   node run_bundles_one_runtime.mjs RUNTIME_DIR REQUEST.json  ->  [{dir, kind, threads, notes, output}]
// REQUEST: {bundles: [dir, ...], input: (what process() takes), options: {threads, ...}}
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [runtime, requestPath] = process.argv.slice(2);
const request = JSON.parse(readFileSync(requestPath, 'utf8'));
const node = await import(pathToFileURL(path.join(path.resolve(runtime), 'node.js')).href);
const results = [];
for (const dir of request.bundles) {
  const model = await node.loadBundle(dir, { hardware: 'cpu', ...(request.options ?? {}) });
  const result = await model.process(request.input);
  results.push({ dir, kind: model.backend.kind ?? null, threads: model.backend.threads ?? null, notes: [...model.notes],
    output: result.output });
  model.backend.destroy?.();
}
process.stdout.write(JSON.stringify(results), () => process.exit(0));
