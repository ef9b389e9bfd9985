// Globals the demo page (demo.js) sets for tests and the console; not part of the package's types.
interface Window {
  ulpq: unknown;
  ulpqDemo: unknown;
}
