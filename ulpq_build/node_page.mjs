// `node` as a browser for verify and bench (ulpq_build/browsers.py, NodeSession): a page-like
// process that loads a bundle the way its demo page does and evaluates the same page scripts.
// Commands arrive as JSON lines on stdin; each answer is one line on stdout starting with
// REPLY_MARK (Dawn may print its own lines there):
//   {"op": "goto", "url": "http://127.0.0.1:PORT/index.html?run=0&poison=1&hardware=..&profile=.."}
//        imports the bundle's OWN node.js from that address (the module hook below fetches http
//        modules), then loads the bundle as window.ulpqDemo = {status, error, model}
//   {"op": "evaluate", "source": "async (arg) => ...", "arg": ...}  ->  its resolved value
import { register } from 'node:module';
import { createInterface } from 'node:readline';

const REPLY_MARK = '@@ulpq-reply@@ ';

// Modules at http(s) addresses (the bundle's runtime, as a page imports it), relative imports among them.
const HOOKS = `
export async function resolve(specifier, context, next) {
  if (context.parentURL?.startsWith('http') && /^\\.{0,2}\\//.test(specifier)) {
    return { url: new URL(specifier, context.parentURL).href, shortCircuit: true };
  }
  if (/^(https?|node|file):/.test(specifier)) return { url: specifier, shortCircuit: true };
  return next(specifier, context);
}
export async function load(url, context, next) {
  if (!url.startsWith('http')) return next(url, context);
  const response = await fetch(url);
  if (!response.ok) throw new Error(url + ': HTTP ' + response.status);
  return { format: 'module', source: await response.text(), shortCircuit: true };
}`;
register(`data:text/javascript,${encodeURIComponent(HOOKS)}`);

globalThis.window = globalThis;
const state = { status: 'loading', error: null, model: null, result: null };

async function goto(url) {
  const page = new URL(url);
  const params = page.searchParams;
  Object.assign(state, { status: 'loading', error: null, model: null, result: null });
  globalThis.ulpqDemo = state;
  try {
    const ulpq = await import(new URL('node.js', page).href);
    globalThis.ulpq = ulpq;
    state.model = await ulpq.loadBundle(new URL('manifest.json', page).href, {
      hardware: params.get('hardware') ?? 'auto', profile: params.get('profile'), poison: params.has('poison'),
    });
    state.status = 'ready';
  } catch (err) {
    state.status = 'error';
    state.error = `${err.name}: ${err.message}`;
  }
}

const reply = (payload) => process.stdout.write(`${REPLY_MARK}${JSON.stringify(payload)}\n`);
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  try {
    const command = JSON.parse(line);
    if (command.op === 'goto') {
      await goto(command.url);
      reply({ ok: true, value: null });
    } else if (command.op === 'evaluate') {
      const fn = (0, eval)(`(${command.source})`);
      const value = await fn(command.arg);
      reply({ ok: true, value: value === undefined ? null : value });
    } else {
      reply({ ok: false, error: `unknown op ${command.op}` });
    }
  } catch (err) {
    reply({ ok: false, error: `${err?.name}: ${err?.message}\n${err?.stack ?? ''}` });
  }
}
process.exit(0);
