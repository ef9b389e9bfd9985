"""WGSL bytes per bundle and per page (issue 13): builds the MiniLM, ViT and a mixed-precision ViT
bundle with the ulpq_build on the path, then counts
  - per bundle: the bytes of every distinct shader file the bundle stores;
  - per page:   the bytes a page fetches for one profile, i.e. the distinct files behind every kernel
                key the model graph names for that profile (what backend_webgpu.js fetches at init).
It reads only `shaders[].key/file` and the graph, which both manifest formats have, so the same
script measures an older checkout (`git archive HEAD | tar -x -C /tmp/before`):
`scripts/shader_bytes.py --checkout /tmp/before --json before.json`, then
`scripts/shader_bytes.py --before before.json` prints both.

    python3 scripts/shader_bytes.py [--checkout DIR] [--models minilm vit vit-mixed] [--json OUT] [--before JSON]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIXED = {"bitsPerWeight": 2, "distributeOptimalValues": True,
         "mixedPrecision": {"firstLayerBits": 8, "lastLayerBits": 4, "attentionBits": 4}}
BUNDLES = {  # name -> (model, options); int4 = the default format at the time of writing, pinned
    "minilm": ("builtin:minilm", {"format": "int4"}, None),
    "vit": ("builtin:vit", {"format": "int4"}, None),
    "vit-mixed": ("builtin:vit", {}, MIXED),
}


def _graph_nodes(tree, has: str):
    # ulpq_build.graph.graph_nodes, copied: this script measures any --checkout, older ones included,
    # and imports that checkout's package only once it has read its arguments
    if isinstance(tree, dict):
        if has in tree:
            yield tree
        for key, value in tree.items():
            if key != "kernels":
                yield from _graph_nodes(value, has)
    elif isinstance(tree, list):
        for item in tree:
            yield from _graph_nodes(item, has)


def page_keys(model: dict, profile: str) -> set[str]:
    """The kernel keys a page on `profile` compiles (backend_webgpu.js: #shaderKeys)."""
    keys = set((model.get("op_kernels") or {}).get(profile, {}).values())
    for has in ("in_features", "table"):
        for node in _graph_nodes(model, has):
            keys.update(node["kernels"][profile].values())
    return keys


def measure(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    file_of = {s["key"]: s["file"] for s in manifest["shaders"]}
    size = {f: (folder / f).stat().st_size for f in set(file_of.values())}
    packed = {f: len(gzip.compress((folder / f).read_bytes(), 6)) for f in size}  # what a compressing host sends
    pages = {}
    for profile in (p["name"] for p in manifest["profiles"]):
        files = {file_of[k] for k in page_keys(manifest["model"], profile)}
        pages[profile] = {"files": len(files), "bytes": sum(size[f] for f in files),
                          "gzip_bytes": sum(packed[f] for f in files)}
    return {"variants": len(file_of), "files": len(size), "bytes": sum(size.values()), "pages": pages}


def build_and_measure(names: list[str]) -> dict:
    from ulpq_build.bundle import build_bundle

    results = {}
    with tempfile.TemporaryDirectory(prefix="shader-bytes-") as tmp:
        for name in names:
            model, overrides, config = BUNDLES[name]
            config_path = None
            if config is not None:
                config_path = Path(tmp) / f"{name}.json"
                config_path.write_text(json.dumps(config))
            out = Path(tmp) / name
            build_bundle(model, out, overrides, config_path, log=lambda *_: None)
            results[name] = measure(out)
    return results


def _kb(n: int) -> str:
    return f"{n / 1000:,.1f} kB"


def table(after: dict, before: dict | None) -> str:
    profiles = sorted({p for r in after.values() for p in r["pages"]})
    head = ("| bundle | | files (variants) | WGSL per bundle | " + " | ".join(f"page: {p}" for p in profiles)
            + " | page: chrome, gzip -6 |")
    lines = [head, "|" + "---|" * (5 + len(profiles))]
    for name, now in after.items():
        rows = [("before", before[name]), ("after", now)] if before and name in before else [("", now)]
        for label, r in rows:
            pages = " | ".join(f"{_kb(r['pages'][p]['bytes'])} ({r['pages'][p]['files']})" for p in profiles)
            lines.append(f"| {name} | {label} | {r['files']} ({r['variants']}) | {_kb(r['bytes'])} | {pages} "
                         f"| {_kb(r['pages']['chrome']['gzip_bytes'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the ulpq_build checkout to measure (default: this one)")
    parser.add_argument("--models", nargs="+", choices=list(BUNDLES), default=list(BUNDLES))
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--before", type=Path, help="figures of an older checkout (its --json) to print beside")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.checkout.resolve()))
    import ulpq_build

    print(f"ulpq_build {ulpq_build.__version__} from {Path(ulpq_build.__file__).parent}", file=sys.stderr)
    results = build_and_measure(args.models)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    before = json.loads(args.before.read_text()) if args.before else None
    print(table(results, before))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
