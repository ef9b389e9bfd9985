// Call pure functions of a runtime folder under Node and report what each gave, as JSON, so
// Python tests can check values and error messages without a browser.
//   node call_runtime.mjs RUNTIME_DIR REQUEST.json  ->  [{value} | {error: {name, message}}, ...]
// REQUEST: [{module: 'inputs.js', run: '(m) => m.toMatrix([[1, 2]], 2)'}, ...]: `run` is the JS
// source of a function of the module's exports; its (awaited) result or error is reported.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [runtime, requestPath] = process.argv.slice(2);
const calls = JSON.parse(readFileSync(requestPath, 'utf8'));
globalThis.readText = (file) => readFileSync(file, 'utf8'); // for `run` sources that read a bundle file
const results = [];
for (const call of calls) {
  const module = await import(pathToFileURL(path.join(path.resolve(runtime), call.module)).href);
  try {
    const value = await (0, eval)(`(${call.run})`)(module);
    results.push({ value: value === undefined ? null : value });
  } catch (err) {
    results.push({ error: { name: err?.name ?? null, message: String(err?.message ?? err) } });
  }
}
process.stdout.write(JSON.stringify(results, (k, v) => (ArrayBuffer.isView(v) ? Array.from(v) : v)));
