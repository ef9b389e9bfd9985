"""Weight caching (issue 13, part 2): a second visit takes the shards from the Cache API with no
request for them, a rebuilt bundle at the same URL is downloaded again (never a stale entry), a
tampered entry is refetched, clearCache() empties the cache, and a full quota or a missing Cache API
fall back to the network with one warning and a note.

Requests are counted by the server that serves the bundle (ulpq_build.serve with a counting
handler): the browser's own view of the network could miss or hide requests. Counting requests, not
only body bytes, matters: the server answers `no-cache` revalidations with 304 and no body, so a
runtime without a weight cache would also send zero shard bytes on a second visit, but it would
still send the requests. For the same reason a shard asked for again after tampering or clearCache()
may come as a 304 from the browser's HTTP cache: there the test counts the request, not the bytes.
Outputs are compared with the numpy reference over each build's weights.

Chromium and Firefox reload the page as a new page of the same browser context. WebKitGTK (through
WebKitWebDriver) has the Cache API on http://127.0.0.1, but its automation sessions are ephemeral and
drop cached entries at every navigation, so there the cache is checked within one page."""

import functools
import json
import shutil
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.default_model import LAYER_SIZES
from ulpq_build.reference import mlp_forward, relative_error
from ulpq_build.safetensors_io import write_safetensors
from ulpq_build.serve import BundleRequestHandler, BundleServer

pytestmark = pytest.mark.browser

PAGE = Path(__file__).with_name("runtime_page.html")
CPU_TOLERANCE = 1e-5  # the JS CPU path computes in float64 over the same weights
CACHE_NAME = "ulpq-weights-v1"

WAIT_READY = """async () => {
  for (let i = 0; i < 400 && !window.pageReady; i++) await new Promise((r) => setTimeout(r, 50));
  return Boolean(window.pageReady);
}"""

# One load and run: the outputs, the cache report, the per-file sources from the progress events and
# the console warnings. `loads` > 1 loads again in the same page (warnings are counted over all).
LOAD = """async ({ x, options, loads = 1 }) => attempt(async () => {
  const warnings = [];
  const warn = console.warn;
  console.warn = (...args) => { warnings.push(args.join(' ')); warn(...args); };
  try {
    const runs = [];
    for (let i = 0; i < loads; i++) {
      const events = [];
      const m = await ulpq.loadBundle('./manifest.json', { hardware: 'cpu', onProgress: (e) => events.push(e), ...options });
      const r = await m.process(x);
      runs.push({ output: r.output, cache: r.cache, notes: r.notes,
        sources: events.filter((e) => e.phase === 'weights' && e.file).map((e) => [e.file, e.source]),
        verified: events.find((e) => e.phase === 'verified')?.cache ?? null });
    }
    return { runs, warnings };
  } finally {
    console.warn = warn;
  }
})"""
CACHED_KEYS = f"""async () => {{
  if (!(await caches.has('{CACHE_NAME}'))) return [];
  return (await (await caches.open('{CACHE_NAME}')).keys()).map((r) => r.url);
}}"""
# Flip one bit in the middle of every cached entry of this bundle (the entry stays the right size).
TAMPER = f"""async () => {{
  const cache = await caches.open('{CACHE_NAME}');
  const keys = (await cache.keys()).filter((r) => r.url.startsWith(new URL('./.ulpq-weights/', location.href).href));
  for (const key of keys) {{
    const bytes = new Uint8Array(await (await cache.match(key)).arrayBuffer());
    bytes[bytes.length >> 1] ^= 1;
    await cache.put(key, new Response(bytes));
  }}
  return keys.length;
}}"""
CLEAR = "async (bundle) => ulpq.clearCache(bundle ?? undefined)"
QUOTA = "() => { Cache.prototype.put = async () => { throw new DOMException('quota reached (test)', 'QuotaExceededError'); }; }"
NO_CACHE_API = "() => { Object.defineProperty(window, 'caches', { value: undefined, configurable: true }); }"
OPTIONS = """async () => {
  const sync = (f) => { try { f(); return 'no error'; } catch (e) { return `${e.name}: ${e.message}`; } };
  const load = await attempt(() => ulpq.loadBundle('./manifest.json', { cache: 'yes' }));
  const clear = await attempt(() => ulpq.clearCache(5));
  return {
    load: `${load.error?.name}: ${load.error?.message}`,
    bert: sync(() => ulpq.createBertModel('cpu', { modelId: '.', cache: 1 })),
    vit: sync(() => ulpq.createVitModel('cpu', { modelId: '.', cache: null })),
    clear: `${clear.error?.name}: ${clear.error?.message}`,
    good: sync(() => ulpq.createBertModel('cpu', { modelId: '.', cache: false })),
  };
}"""


class CountingHandler(BundleRequestHandler):
    """The project's bundle handler, recording each GET (path, status) and the body bytes sent."""

    def send_response(self, code, message=None):
        self.server.log_request_of(self.path, code)
        super().send_response(code, message)

    def copyfile(self, source, outputfile):
        sent = 0
        while chunk := source.read(64 * 1024):
            outputfile.write(chunk)
            sent += len(chunk)
        self.server.log_bytes_of(self.path, sent)


class CountingServer(BundleServer):
    def __init__(self, folder: Path):
        super().__init__(folder, 0)
        self.RequestHandlerClass = functools.partial(CountingHandler, directory=str(Path(folder).resolve()))
        self._lock = threading.Lock()
        self.requests: Counter = Counter()
        self.bytes: Counter = Counter()

    def log_request_of(self, path: str, code: int) -> None:
        with self._lock:
            self.requests[path.split("?")[0]] += 1

    def log_bytes_of(self, path: str, sent: int) -> None:
        with self._lock:
            self.bytes[path.split("?")[0]] += sent

    def take(self, folder: str) -> tuple[int, int]:
        """(requests, body bytes) for weight shards under /folder/ since the last take()."""
        with self._lock:
            shard = lambda p: p.startswith(f"/{folder}/") and p.rsplit("/", 1)[-1].startswith("weights-")  # noqa: E731
            counts = (sum(n for p, n in self.requests.items() if shard(p)), sum(n for p, n in self.bytes.items() if shard(p)))
            self.requests.clear()
            self.bytes.clear()
            return counts


@pytest.fixture(scope="module")
def cache_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("weight-cache")
    server = CountingServer(root).start_in_background()
    yield root, server
    server.shutdown()
    server.server_close()


def mlp_model(folder: Path, seed: int) -> Path:
    """An MLP of the built-in shape with weights from `seed` (a stand-in for a retrained model)."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for i, (n_in, n_out) in enumerate(zip(LAYER_SIZES, LAYER_SIZES[1:])):
        tensors[f"layers.{i}.weight"] = (rng.uniform(-1, 1, (n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
        tensors[f"layers.{i}.bias"] = rng.uniform(-0.1, 0.1, (n_out,)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["UlpqMLP"], "model_type": "ulpq-mlp",
                                                    "layer_sizes": list(LAYER_SIZES), "hidden_act": "gelu"}))
    names = list(tensors)
    write_safetensors(folder / "model.safetensors", [(n, "float32", tensors[n].shape) for n in names],
                      (tensors[n] for n in names), {"format": "pt"})
    return folder


def build(root: Path, name: str, seed: int):
    """(Re)build the bundle `name` from weights of `seed`, with the test page beside it; its numpy model."""
    out = root / name
    (out / PAGE.name).unlink(missing_ok=True)  # a rebuild refuses to delete files it did not write
    model = mlp_model(root / "models" / f"{name}-{seed}", seed)
    assert cli_main(["bundle", "--model", str(model), "--format", "int4", "--out", str(out)]) == 0
    shutil.copyfile(PAGE, out / PAGE.name)
    bundle = load_bundle(out)
    return bundle, sum(s["bytes"] for s in bundle.manifest["shards"])


def reference(bundle, x):
    return mlp_forward(bundle.model, bundle.weights, np.asarray(x))


class Visits:
    """Pages of one browser on one bundle. Playwright browsers: each visit is a new page of the same
    context (a reload, as a returning visitor's); WebKitDriver: the session's one page."""

    def __init__(self, session, url: str):
        self.session, self.url = session, url
        self.pages = []

    def new(self):
        context = getattr(getattr(self.session, "page", None), "context", None)
        if context is None:
            self.session.goto(self.url)
            target = self.session
        else:
            target = context.new_page()
            target.set_default_timeout(120_000)
            self.pages.append(target)
            target.goto(self.url, wait_until="load")
        assert target.evaluate(WAIT_READY), f"{self.url}: the runtime page did not load"
        return target

    def close(self):
        for page in self.pages:
            page.close()


def load(page, x, loads=1, **options):
    got = page.evaluate(LOAD, {"x": x, "options": options, "loads": loads})
    assert "value" in got, got
    return got["value"]


def check_run(run, bundle, x, source):
    """One load: every weights event from `source`, the report agreeing, the output numpy's."""
    shards = [s["file"] for s in bundle.manifest["shards"]]
    total = sum(s["bytes"] for s in bundle.manifest["shards"])
    assert {f for f, _ in run["sources"]} == set(shards) and {s for _, s in run["sources"]} == {source}, run["sources"]
    assert run["verified"] == run["cache"], (run["verified"], run["cache"])
    assert (run["cache"]["cacheBytes"], run["cache"]["networkBytes"]) == ((total, 0) if source == "cache" else (0, total)), run["cache"]
    assert relative_error(np.asarray(run["output"]), reference(bundle, x)) < CPU_TOLERANCE


@pytest.mark.parametrize("browser", ["chromium", "firefox"])
def test_second_visit_takes_weights_from_the_cache(browsers, cache_site, browser):
    root, server = cache_site
    name = f"{browser}-visits"
    bundle, total = build(root, name, seed=1)
    x = np.random.default_rng(7).standard_normal((3, LAYER_SIZES[0])).round(4).tolist()
    visits = Visits(browsers(browser), f"{server.url}{name}/{PAGE.name}")
    try:
        # Every e2e test shares one browser session, and a server earlier in it may have had this port,
        # so this origin: its bundles' entries would be in the cache listings below. Start empty.
        visits.new().evaluate(f"() => caches.delete('{CACHE_NAME}')")
        server.take(name)
        first = load(visits.new(), x)["runs"][0]
        assert server.take(name) == (1, total)
        check_run(first, bundle, x, "network")
        assert first["cache"]["status"] == "on" and not first["cache"]["notes"], first["cache"]

        page = visits.new()  # the returning visitor: no request for any shard
        second = load(page, x)["runs"][0]
        assert server.take(name) == (0, 0)
        check_run(second, bundle, x, "cache")
        assert second["output"] == first["output"]
        keys = page.evaluate(CACHED_KEYS)
        assert keys == [f"{server.url}{name}/.ulpq-weights/{s['sha256']}" for s in bundle.manifest["shards"]], keys

        # The counter would see a runtime without the cache: cache: false asks for every shard again.
        control = load(visits.new(), x, cache=False)["runs"][0]
        requests, _ = server.take(name)
        assert requests == len(bundle.manifest["shards"]) and control["cache"]["status"] == "off"
        assert {s for _, s in control["sources"]} == {"network"} and control["output"] == first["output"]

        # A rebuild with other weights at the same URL: downloaded again, the new answers, old entries dropped.
        rebuilt, new_total = build(root, name, seed=2)
        assert [s["sha256"] for s in rebuilt.manifest["shards"]] != [s["sha256"] for s in bundle.manifest["shards"]]
        page = visits.new()
        after = load(page, x)["runs"][0]
        assert server.take(name) == (1, new_total)
        check_run(after, rebuilt, x, "network")
        assert relative_error(np.asarray(after["output"]), reference(bundle, x)) > 0.1  # not the old model's answers
        assert page.evaluate(CACHED_KEYS) == [f"{server.url}{name}/.ulpq-weights/{s['sha256']}" for s in rebuilt.manifest["shards"]]

        # A tampered entry is never used: deleted, downloaded, and the verified copy cached again.
        assert page.evaluate(TAMPER) == 1
        tampered = load(visits.new(), x)["runs"][0]
        assert server.take(name)[0] == 1
        check_run(tampered, rebuilt, x, "network")
        assert any("did not match the manifest's sha256" in n for n in tampered["notes"]), tampered["notes"]
        healed = load(visits.new(), x)["runs"][0]
        assert server.take(name) == (0, 0)
        check_run(healed, rebuilt, x, "cache")

        # clearCache(bundle) and clearCache(): the next visit downloads again.
        page = visits.new()
        assert page.evaluate(CLEAR, "./manifest.json") == 1 and page.evaluate(CLEAR, "./") == 0
        assert page.evaluate(CACHED_KEYS) == []
        cleared = load(visits.new(), x)["runs"][0]
        assert server.take(name)[0] == 1
        check_run(cleared, rebuilt, x, "network")
        page = visits.new()
        assert page.evaluate(CLEAR, None) >= 1 and page.evaluate(CACHED_KEYS) == []
        load(page, x)
        assert server.take(name)[0] == 1
    finally:
        visits.close()


@pytest.mark.parametrize("browser", ["chromium", "firefox"])
def test_quota_and_missing_cache_api_fall_back_to_the_network(browsers, cache_site, browser):
    root, server = cache_site
    name = f"{browser}-fallback"
    bundle, total = build(root, name, seed=3)
    x = np.random.default_rng(8).standard_normal((2, LAYER_SIZES[0])).round(4).tolist()
    visits = Visits(browsers(browser), f"{server.url}{name}/{PAGE.name}")
    try:
        page = visits.new()
        page.evaluate(QUOTA)
        got = load(page, x, loads=2)
        assert server.take(name)[0] == 2  # nothing was stored, so both loads ask for the shard
        for run in got["runs"]:
            check_run(run, bundle, x, "network")
            assert run["cache"]["status"] == "on"
            assert any("QuotaExceededError" in n for n in run["cache"]["notes"]) and run["cache"]["notes"][0] in run["notes"]
        assert len(got["warnings"]) == 1 and "QuotaExceededError" in got["warnings"][0], got["warnings"]

        page = visits.new()
        page.evaluate(NO_CACHE_API)
        got = load(page, x, loads=2)
        assert server.take(name)[0] == 2
        for run in got["runs"]:
            check_run(run, bundle, x, "network")
            assert run["cache"]["status"] == "unavailable" and "no Cache API" in run["cache"]["notes"][0], run["cache"]
        assert len(got["warnings"]) == 1 and "weight cache unavailable" in got["warnings"][0], got["warnings"]
        assert page.evaluate(CLEAR, None) == 0  # nothing to clear, and no error

        got = visits.new().evaluate(OPTIONS)
        assert got["load"].startswith("TypeError: UlpqModel: option cache must be true or false"), got
        assert got["bert"].startswith("TypeError: createBertModel: option cache must be true or false"), got
        assert got["vit"].startswith("TypeError: createVitModel: option cache must be true or false"), got
        assert got["clear"].startswith("TypeError: clearCache: bundle must be"), got
        assert got["good"] == "no error", got
    finally:
        visits.close()


def test_cache_within_one_webkit_page(browsers, cache_site):
    """WebKitGTK: a second load in the same page takes the cache; tampering and clearCache() as above."""
    root, server = cache_site
    name = "webkit"
    bundle, total = build(root, name, seed=4)
    x = np.random.default_rng(9).standard_normal((2, LAYER_SIZES[0])).round(4).tolist()
    page = Visits(browsers("webkit"), f"{server.url}{name}/{PAGE.name}").new()
    server.take(name)
    first, second = load(page, x, loads=2)["runs"]
    assert server.take(name) == (1, total)
    check_run(first, bundle, x, "network")
    check_run(second, bundle, x, "cache")
    assert second["output"] == first["output"]
    assert page.evaluate(TAMPER) == 1
    (tampered,) = load(page, x)["runs"]
    assert server.take(name)[0] == 1
    check_run(tampered, bundle, x, "network")
    assert any("did not match the manifest's sha256" in n for n in tampered["notes"]), tampered["notes"]
    assert page.evaluate(CLEAR, "./") == 1
    (cleared,) = load(page, x)["runs"]
    assert server.take(name)[0] == 1
    check_run(cleared, bundle, x, "network")
