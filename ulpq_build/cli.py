"""Command line: `python -m ulpq_build <command>`. Bad input exits 2 with one line, no traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ulpq_build import __version__
from ulpq_build.errors import UserError
from ulpq_build.formats import FORMATS
from ulpq_build.quantspec import GROUP_SIZES, QuantSpec


def _add_quant_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="int4", metavar="FORMAT",
                   help=f"weight format for the matrices (default int4): {', '.join(FORMATS)}")
    p.add_argument("--group-size", type=int, default=0, metavar="N",
                   help=f"one scale per N inputs of a row ({'|'.join(map(str, GROUP_SIZES))}); "
                        "0 = one per output channel (default), -1 = one per tensor")
    p.add_argument("--asymmetric", action="store_true", help="uniform formats: a zero point per scale group")
    p.add_argument("--scale-dtype", default="float32", choices=("float32", "float16"), help="how scales are stored")
    p.add_argument("--codebook", default="tensor", choices=("tensor", "channel"),
                   help="-optimal formats: one fitted codebook per tensor (default) or per output channel")


def _spec_from(args) -> QuantSpec:
    return QuantSpec(args.format, args.group_size, args.asymmetric, args.scale_dtype, args.codebook).validate("--format")


def cmd_bundle(args) -> int:
    from ulpq_build.bundle import build_bundle

    result = build_bundle(Path(args.model) if args.model else None, Path(args.out), _spec_from(args))
    files = sum(1 for p in result.out.rglob("*") if p.is_file())
    print(f"wrote {result.out}/ ({files} files): open it with `python -m ulpq_build serve {result.out}`")
    return 0


def cmd_serve(args) -> int:
    from ulpq_build.serve import BundleServer

    server = BundleServer(Path(args.folder), args.port, verbose=not args.quiet)
    print(f"serving {args.folder} at {server.url} (127.0.0.1 only; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ulpq_build",
                                     description="Quantize models to 8/4/3/2/1 bits and emit static WebGPU web bundles.")
    parser.add_argument("--version", action="version", version=f"ulpq_build {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("bundle", help="quantize a model and write a static web bundle",
                       description="Quantize a model and write a static web bundle (manifest, shards, shaders, runtime, demo page).")
    p.add_argument("--model", metavar="PATH",
                   help="a .safetensors file or a folder holding model.safetensors (+ config.json); "
                        "default: the built-in demo MLP")
    p.add_argument("--out", default="ulpq-bundle", metavar="DIR", help="output folder (default ./ulpq-bundle)")
    _add_quant_options(p)
    p.set_defaults(run=cmd_bundle)

    p = sub.add_parser("serve", help="serve a bundle on 127.0.0.1", description="Serve a bundle folder on 127.0.0.1.")
    p.add_argument("folder", metavar="DIR")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--quiet", action="store_true", help="do not log requests")
    p.set_defaults(run=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
