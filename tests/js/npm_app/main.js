// A web app that uses the runtime as an npm package: `npm install ulpq-runtime-<version>.tgz`, then
// esbuild bundles this file and the package into one script. The page serves that script and a
// bundle folder of weights (e2e/test_npm_app_in_browser.py builds, serves and checks it).

import { BundleError, createBertModel } from 'ulpq-runtime';

/** Embed `sentences` with the bundle in ./bundle/ on `hardware`; the result plus the progress phases seen. */
async function embed(sentences, hardware) {
  const phases = [];
  const model = createBertModel(hardware, { modelId: './bundle/', poison: true, onProgress: (e) => phases.push(e.phase) });
  try {
    await model.initialize();
    const result = await model.process(sentences);
    return { ...result, phases: [...new Set(phases)] };
  } finally {
    await model.dispose();
  }
}

/** What a missing bundle gives: the package's own error class, by name and by instanceof. */
async function missingBundle() {
  try {
    await createBertModel('auto', { modelId: './no-such-bundle/' }).initialize();
    return { error: null };
  } catch (err) {
    return { error: err.name, isBundleError: err instanceof BundleError, message: err.message };
  }
}

window.npmApp = { embed, missingBundle };
