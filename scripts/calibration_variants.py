"""Compare calibration texts for GPTQ on all-MiniLM-L6-v2 (int4 per output channel): each variant
quantizes the model and is scored on the Lee corpus as `bench` scores it (Pearson with the human
scores, as % of float32's, and mean cosine to float32's embeddings). docs/benchmarks.md ("The
default bundle") holds the figures; the default is the `passages` variant.

    python scripts/calibration_variants.py [lee-background] [sentences] [passages] [both]

`lee-background` (the first 64 Lee background documents, gensim's test data) is for comparison
only: it comes from the evaluation set's news source, and the package never calibrates on it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ulpq_build import calibration as cal  # noqa: E402
from ulpq_build import evaluation as ev  # noqa: E402
from ulpq_build.architectures import describe_model, float_operands, model_tensors  # noqa: E402
from ulpq_build.bench import Evaluator  # noqa: E402
from ulpq_build.gptq import quantize_model  # noqa: E402
from ulpq_build.model_source import open_model, resolve_model  # noqa: E402
from ulpq_build.quantize import dequantize  # noqa: E402
from ulpq_build.quantspec import QuantSpec  # noqa: E402


def texts(variant: str) -> list[str]:
    lines = [line for path in cal.CALIBRATION_TEXTS for line in cal.calibration_lines(path)]
    if variant == "lee-background":
        return (ev._gensim_data() / "lee_background.cor").read_text(encoding="latin-1").splitlines()[:64]
    if variant == "sentences":
        return lines
    if variant == "passages":
        return cal.calibration_text()
    if variant == "both":
        return lines + cal.calibration_text()
    raise SystemExit(f"unknown variant {variant!r}; choose lee-background, sentences, passages, both")


def main(variants: list[str]) -> None:
    folder, _ = resolve_model("builtin:minilm", Path("."))
    source = open_model(folder)
    model = describe_model(source)
    weights = {n: np.asarray(source.weights.tensor(n), np.float32) for n in model_tensors(model)}
    keep = float_operands(model)
    specs = {n: QuantSpec(format="int4") for n, w in weights.items() if w.ndim == 2 and n not in keep}
    score = Evaluator(model, folder, weights)
    for variant in variants or ["lee-background", "sentences", "passages", "both"]:
        start = time.time()
        calibration = cal.calibration_for(model, folder, texts(variant))
        quantized = quantize_model(model, weights, specs, calibration.run)
        result = score({**weights, **{n: dequantize(q) for n, q in quantized.items()}})
        print(f"{variant}: Lee Pearson {result['ratio']}% of float32, mean cosine {result['mean_cosine_to_float32']} "
              f"({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
