"""`python -m ulpq_build` (and the `ulpq-build` script): the command line, with one BLAS thread unless
the environment asks for more. numpy's OpenBLAS threads the small factorizations GPTQ and the
planner do many of (384x384 to 1536x1536) and the calibration products; on this 2-core machine the
default bundle took 41 s with two threads while other jobs ran and 14 s with one, byte-identical
(docs/benchmarks.md, "The default bundle"). Set OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS) to choose."""

import os


def main() -> int:
    from ulpq_build.cli import main as cli_main

    return cli_main()


if not any(v in os.environ for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")):
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy loads: OpenBLAS reads it once

if __name__ == "__main__":
    raise SystemExit(main())
