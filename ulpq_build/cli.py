"""Command line: `python -m ulpq_build <command>`. Bad input exits 2 with one line, no traceback."""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import threading
from pathlib import Path

from ulpq_build import __version__
from ulpq_build.errors import UserError
from ulpq_build.formats import FORMATS
from ulpq_build.quantspec import GROUP_SIZES

MODEL_NAMES = ("a .safetensors file, a model folder (config.json, model.safetensors, tokenizer files) or a built-in: "
               "builtin:minilm (all-MiniLM-L6-v2), builtin:vit (a small Fashion-MNIST ViT), builtin:mlp (a demo MLP)")


def _add_quant_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", metavar="FORMAT",
                   help=f"weight format for the matrices (default int4): {', '.join(FORMATS)}")
    p.add_argument("--group-size", type=int, metavar="N",
                   help=f"one scale per N inputs of a row ({'|'.join(map(str, GROUP_SIZES))}); "
                        "0 = one per output channel (default), -1 = one per tensor")
    p.add_argument("--asymmetric", action="store_true", default=None, help="uniform formats: a zero point per scale group")
    p.add_argument("--scale-dtype", choices=("float32", "float16"), help="how scales are stored (default float32)")
    p.add_argument("--codebook", choices=("tensor", "channel"),
                   help="-optimal formats: one fitted codebook per tensor (default) or per output channel")
    p.add_argument("--config", metavar="FILE", help="a .json or .toml quantization config (mixed precision, rules); "
                                                     "the flags above override its defaults")
    p.add_argument("--method", default="auto", choices=("auto", "rtn", "gptq"),
                   help="auto (default): gptq when the tool picks the format (no --format, --config or --target-*) "
                        "for a text model, which calibrates on text shipped with the package; rtn otherwise. rtn: round "
                        "to nearest with searched scales; gptq: error compensation over calibration inputs (BERT and "
                        "ViT models; the ViT's needs Fashion-MNIST, see the README)")
    p.add_argument("--target-bpw", type=float, metavar="B",
                   help="automatic mixed precision: the most accurate per-tensor formats within B bits per weight")
    p.add_argument("--target-size", type=float, metavar="MB", help="automatic mixed precision within MB megabytes (10^6) of weights")


def _budget(args) -> tuple[float | None, float | None]:
    """--target-bpw / --target-size, checked before minutes of work: finite and in range."""
    bpw, size = args.target_bpw, args.target_size
    if bpw is not None and not (math.isfinite(bpw) and 0 < bpw <= 32):
        raise UserError(f"--target-bpw {bpw}: give a number of bits per weight above 0 and at most 32, e.g. 4.5")
    if size is not None and not (math.isfinite(size) and size > 0):
        raise UserError(f"--target-size {size}: give a positive number of megabytes, e.g. 12.5")
    return bpw, size


def _config_path(args) -> Path | None:
    return Path(args.config) if args.config else None


def _overrides(args) -> dict:
    """The QuantSpec fields the user set explicitly on the command line."""
    given = {"format": args.format, "group_size": args.group_size, "asymmetric": args.asymmetric,
             "scale_dtype": args.scale_dtype, "codebook": args.codebook}
    return {k: v for k, v in given.items() if v is not None}


@contextlib.contextmanager
def _model_paths(*names: str | None):
    """The paths the model arguments name (model_source.resolve_model: files, folders and built-ins, the
    same for every command; None stays None), valid inside the `with` (builtin:mlp is generated)."""
    from ulpq_build.atomic import scratch_folder
    from ulpq_build.model_source import check_model_name, resolve_model

    for name in names:
        if name is not None:
            check_model_name(name)
    with scratch_folder("ulpq-model-") as scratch:
        yield tuple(None if name is None else resolve_model(name, scratch / str(i))[0] for i, name in enumerate(names))


def cmd_bundle(args) -> int:
    from ulpq_build.bundle import build_bundle

    bpw, size = _budget(args)
    result = build_bundle(args.model, Path(args.out), _overrides(args), _config_path(args),
                          method=args.method, target_bpw=bpw, target_mb=size)
    files = sum(1 for p in result.out.rglob("*") if p.is_file())
    print(f"wrote {result.out}/ ({files} files): open it with `python -m ulpq_build serve {result.out}`")
    return 0


def cmd_quantize(args) -> int:
    with _model_paths(args.model) as (path,):
        return _quantize(args, path)


def _quantize(args, path: Path) -> int:
    from ulpq_build.atomic import preflight_file
    from ulpq_build.checkpoint import Checkpoint, write_quantized
    from ulpq_build.model_source import open_model
    from ulpq_build.strategy import plan_and_quantize

    bpw, size = _budget(args)
    preflight_file(Path(args.out))
    source = open_model(path)
    if Checkpoint(source.weights.path).quantized:
        raise UserError(f"{source.weights.path}: is already a quantized checkpoint; quantize the float model "
                        f"(or `dequantize` this one first)")
    weights = source.weights
    tensors = [(n, weights.shape(n), weights.dtype(n)) for n in weights.names]
    plan, precomputed = plan_and_quantize(source, tensors, _overrides(args), _config_path(args),
                                          args.method, bpw, size)
    print(plan.table())
    write_quantized(weights, plan, Path(args.out), source_name=weights.path.name, precomputed=precomputed,
                    method="rtn" if precomputed is None else "gptq")
    print(f"wrote {args.out}")
    return 0


def cmd_dequantize(args) -> int:
    from ulpq_build.atomic import preflight_file
    from ulpq_build.checkpoint import Checkpoint, write_dequantized
    from ulpq_build.model_source import check_model_name, is_builtin

    if is_builtin(args.file):  # a built-in name is a float model: say so (or list the built-ins if it is none)
        check_model_name(args.file)
        raise UserError(f"{args.file}: is a float model, not a quantized checkpoint; make one with "
                        f"`python -m ulpq_build quantize {args.file} --out FILE.safetensors`")
    preflight_file(Path(args.out))
    checkpoint = Checkpoint(Path(args.file))
    if not checkpoint.quantized:
        raise UserError(f"{args.file}: has no ulpq metadata, so it is not a quantized checkpoint; "
                        f"make one with `python -m ulpq_build quantize`")
    write_dequantized(checkpoint, Path(args.out))
    print(f"wrote {args.out} ({len(checkpoint.tensors)} tensors)")
    return 0


def cmd_inspect(args) -> int:
    from ulpq_build.inspect_cmd import format_report, inspect_path, report_json

    with _model_paths(args.file, args.reference) as (path, reference):
        report = inspect_path(path, reference)
    print(report_json(report) if args.json else format_report(report))
    return 0


def cmd_serve(args) -> int:
    from ulpq_build.serve import BundleServer

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: ports run from 1 to 65535 (0 picks a free one); choose one in that range")
    server = BundleServer(Path(args.folder), args.port, verbose=not args.quiet, isolate=args.isolate)
    print(f"serving {args.folder} at {server.url} (127.0.0.1 only; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_bench(args) -> int:
    from ulpq_build.bench import model_folders, run_bench, write_index
    from ulpq_build.model_source import DEFAULT_MODEL

    presets = [f.strip() for f in args.formats.split(",") if f.strip()] if args.formats else None
    browsers, serve = _browser_choice(args)
    models = [m.strip() for m in (args.model or DEFAULT_MODEL).split(",") if m.strip()]
    outs = model_folders(models, Path(args.out))
    failed = []
    results = []
    for model, out in zip(models, outs):
        result = run_bench(model, presets, browsers, out, repeats=args.repeats, log=lambda message: print(message, flush=True),
                           serve=serve)
        results.append((result, out))
        if args.write_docs:
            from ulpq_build.markdown import write_section
            from ulpq_build.report import markdown_tables

            write_section(Path(args.write_docs), f"bench_{result['architecture']}", markdown_tables(result),
                          f"## Accuracy, size and speed per precision: {result['model']}")
            print(f"[bench] wrote the tables into {args.write_docs}")
        failed += [(f"{result['model']} {r['preset']}", b["browser"]) for r in result["rows"] for b in r["browsers"]
                   if not b.get("passed")]
    if len(results) > 1:
        print(f"[bench] wrote {write_index(results, Path(args.out))}")
    if failed:
        print(f"{len(failed)} browser check(s) failed: {', '.join(f'{p} in {b}' for p, b in failed)}")
    return 1 if failed else 0


def _add_browser_options(p: argparse.ArgumentParser, what: str) -> None:
    """verify's and bench's browser choice: local names, remote endpoints, where to serve for them."""
    p.add_argument("--browsers", metavar="LIST", help=f"comma-separated local browsers: chromium, firefox, webkit, node "
                   f"(default chromium,firefox,webkit; none when --remote is given{what})")
    p.add_argument("--remote", action="append", default=[], metavar="[NAME=]URL",
                   help="a browser on another machine (repeatable): NAME=ws://host:port/ connects with Playwright (NAME: "
                        "chromium, firefox or webkit; e.g. a `playwright run-server`), [NAME=]http://host:port/ speaks W3C "
                        "WebDriver (NAME: chrome, edge, firefox, safari, webkit; safaridriver, Selenium Grid 4, "
                        "WebKitWebDriver). See docs/remote-browsers.md")
    p.add_argument("--capabilities", metavar="JSON", help="extra W3C capabilities for every WebDriver --remote, e.g. "
                   "'{\"platformName\": \"mac\"}' or a grid's vendor options")
    p.add_argument("--host", default="127.0.0.1", help="address to serve the bundle on for the browsers (default "
                   "127.0.0.1; 0.0.0.0 = every interface, each remote browser is given this machine's address on "
                   "the route to it)")
    p.add_argument("--port", type=int, default=0, help="port to serve on (default 0: a free one; fix it for a firewall rule)")
    p.add_argument("--public-url", metavar="URL", help="the URL remote browsers open the served folder at, when it is "
                   "not http://HOST:PORT/ (a tunnel, a TLS reverse proxy)")


def _browser_choice(args):
    """(browser specs, serve options) from _add_browser_options' arguments, checked before any work."""
    from ulpq_build.endpoints import browser_specs
    from ulpq_build.extras import require_for_browsers
    from ulpq_build.serve import check_public_url
    from ulpq_build.verify import ServeOptions

    names = args.browsers if args.browsers is not None else ("" if args.remote else "chromium,firefox,webkit")
    specs = browser_specs([b.strip() for b in names.split(",") if b.strip()], args.remote, args.capabilities)
    require_for_browsers(specs)
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: ports run from 1 to 65535 (0 picks a free one); choose one in that range")
    return specs, ServeOptions(args.host, args.port, check_public_url(args.public_url))


def cmd_verify(args) -> int:
    from ulpq_build.verify import format_browsers, format_table, verify

    specs, serve = _browser_choice(args)
    if not specs:
        raise UserError("verify: no browser to run; give --browsers and/or --remote")
    run = verify(args.bundle, specs, serve)
    print(format_table(run.results))
    print(format_browsers(run))
    failed = [r for r in run.results if not r.passed]
    print(f"{len(run.results) - len(failed)} of {len(run.results)} passed")
    return 1 if failed else 0


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (`error: ...; see --help`), exit status 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m ulpq_build",
                                     description="Quantize models to 8/4/3/2/1 bits and emit static WebGPU web bundles.")
    parser.add_argument("--version", action="version", version=f"ulpq_build {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("bundle", help="quantize a model and write a static web bundle",
                       description="Quantize a model and write a static web bundle (manifest, shards, shaders, runtime, demo page).")
    p.add_argument("--model", metavar="MODEL", help=f"{MODEL_NAMES} (default builtin:minilm)")
    p.add_argument("--out", default="ulpq-bundle", metavar="DIR", help="output folder (default ./ulpq-bundle)")
    _add_quant_options(p)
    p.set_defaults(run=cmd_bundle)

    p = sub.add_parser("quantize", help="quantize a model into a quantized safetensors checkpoint",
                       description="Quantize a model, tensor by tensor, into a safetensors checkpoint "
                                   "(packed codes, scales, zero points and codebooks as separate tensors).")
    p.add_argument("model", metavar="MODEL", help=MODEL_NAMES)
    p.add_argument("--out", required=True, metavar="FILE.safetensors")
    _add_quant_options(p)
    p.set_defaults(run=cmd_quantize)

    p = sub.add_parser("dequantize", help="restore float tensors from a quantized checkpoint",
                       description="Restore every tensor of a quantized checkpoint with its original name, shape and dtype.")
    p.add_argument("file", metavar="FILE", help="a checkpoint written by `quantize`")
    p.add_argument("--out", required=True, metavar="FP32.safetensors")
    p.set_defaults(run=cmd_dequantize)

    p = sub.add_parser("inspect", help="list tensors, formats, sizes and bits per weight",
                       description="One row per tensor and totals, for a model, a quantized checkpoint or a bundle folder.")
    p.add_argument("file", metavar="FILE", help=f"a checkpoint, a bundle folder or a model: {MODEL_NAMES}")
    p.add_argument("--reference", metavar="MODEL", help=f"the float model to measure errors against: {MODEL_NAMES}")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=cmd_inspect)

    p = sub.add_parser("bench", help="accuracy, size and speed per precision and browser, with a report",
                       description="Build the bundle for each precision preset, measure accuracy on real data (numpy), and "
                                   "agreement, speed and memory in each browser; write results.json and report.html.")
    p.add_argument("--model", metavar="MODEL", help=f"{MODEL_NAMES} (default builtin:minilm; bench measures BERT, ViT and decoder "
                   "models); several, comma-separated, bench each into a folder of --out (with an index.html)")
    p.add_argument("--formats", metavar="LIST", help="comma-separated presets: formats (int4, ...), <format>-gptq, "
                                                    "mixed-<bits>, default (what `bundle` gives with no options); "
                                                    "default: a set per architecture")
    _add_browser_options(p, "; empty: numpy only")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per preset and browser (median reported)")
    p.add_argument("--out", default="ulpq-bench", metavar="DIR")
    p.add_argument("--write-docs", metavar="FILE", help="also write the tables into this markdown file (its "
                   "bench_<architecture> section), e.g. docs/benchmarks.md")
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("verify", help="check a bundle in real browsers against the numpy reference",
                       description="Run a bundle in each browser, local or remote, and compare its output with the numpy "
                                   "reference over the bundle's own weights; exit status 1 on any failure.")
    p.add_argument("bundle", metavar="BUNDLE", help="a bundle folder, or the http(s) URL of a deployed bundle's "
                   "manifest.json (its files are fetched and checked; the browsers open the deployed page)")
    _add_browser_options(p, "")
    p.set_defaults(run=cmd_verify)

    p = sub.add_parser("serve", help="serve a bundle on 127.0.0.1", description="Serve a bundle folder on 127.0.0.1.")
    p.add_argument("folder", metavar="DIR")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--quiet", action="store_true", help="do not log requests")
    p.add_argument("--isolate", action="store_true",
                   help="send Cross-Origin-Opener-Policy / Cross-Origin-Embedder-Policy headers, so pages are "
                        "cross-origin isolated and may use threads (SharedArrayBuffer)")
    p.set_defaults(run=cmd_serve)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP, raised where the program is, so every `finally` and atomic writer cleans up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _raise_terminated)
    try:
        return args.run(args)
    except UserError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"interrupted ({signal.Signals(signum).name}); partial output removed", file=sys.stderr)
        return 128 + signum
