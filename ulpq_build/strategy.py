"""How a model's tensors get their quantized form, shared by `quantize` and `bundle`: which format
each tensor gets (flags and config, or the planner under a --target-bpw / --target-size budget),
and how its codes are chosen (round to nearest, or GPTQ over calibration inputs).

`plan_and_quantize` is the one place that decides, for both commands: the same model gets the same
spec per tensor whichever command asks (tests/test_cli_reliability.py checks that quantize and
bundle agree), including the tensors its architecture's kernels read as float32."""

from __future__ import annotations

import numpy as np

from ulpq_build.architectures import describe_if_known, describe_model, float_operands, for_model_type
from ulpq_build.calibration import calibration_for, ships_calibration
from ulpq_build.config import resolve_options
from ulpq_build.errors import UserError
from ulpq_build.model_source import ModelSource
from ulpq_build.plan import FLOAT32, Plan, Rule, resolve_plan
from ulpq_build.quantize import QuantizedTensor

METHODS = ("auto", "rtn", "gptq")


def choose_method(method: str, model: dict | None, source: ModelSource, default_formats: bool) -> str:
    """"auto" (the default) is GPTQ when the tool picks the formats (no --format, --config or budget:
    the default int4) for a model whose calibration data ships with the package (text models): that
    is the most accurate 4-bit bundle at its size in docs/benchmarks.md, with nothing to install.
    Otherwise round to nearest, as asked formats always were (--method gptq for GPTQ there): the
    ViT's calibration images are a separate install (and its int4 RTN measured as accurate as GPTQ),
    and other models have no calibration at all."""
    if method != "auto":
        return method
    return "gptq" if default_formats and model is not None and ships_calibration(model, source) else "rtn"


def _refusal(source: ModelSource) -> str:
    try:
        describe_model(source)
    except UserError as err:
        return str(err)
    return "the model description failed"


def plan_and_quantize(source: ModelSource, tensors: list[tuple[str, tuple[int, ...], str]], overrides: dict, config,
                      method: str = "rtn", target_bpw: float | None = None, target_mb: float | None = None,
                      model: dict | None = None, log=print) -> tuple[Plan, dict[str, QuantizedTensor] | None]:
    """The plan for `tensors`, and (for GPTQ) the quantized tensors; None means round each tensor to
    nearest as it is written (so `precomputed is not None` says GPTQ ran, whatever `method` was asked)."""
    if method not in METHODS:
        raise UserError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    targeted = target_bpw is not None or target_mb is not None
    if model is None:  # `quantize` takes any checkpoint; where the architecture is known, plan as a bundle does
        model = describe_if_known(source)
        if model is None and method == "auto" and for_model_type(source.config.get("model_type")) is not None:
            # a family this tool knows, in a configuration it refuses: say why GPTQ is not used
            # (`--method gptq` stops with the same reason) instead of quietly rounding to nearest
            log(f"note: {_refusal(source)}; quantizing by round-to-nearest, which needs no model description")
    keep_float = float_operands(model) if model else set()
    pinned = [Rule("<float operands>", FLOAT32, "architecture (kernels read these as float32)", frozenset(keep_float))] if keep_float else []
    method = choose_method(method, model, source, not (targeted or config or "format" in overrides))
    needs_model = targeted or method == "gptq"
    if needs_model:
        model = model or describe_model(source)
        calibration = calibration_for(model, source.folder)
        names = {n for n, _, _ in tensors}
        weights = {n: np.asarray(source.weights.tensor(n), np.float32) for n in names
                   if np.issubdtype(np.dtype(source.weights.dtype(n) if source.weights.dtype(n) != "bfloat16" else "float32"), np.floating)}
    if targeted:
        if overrides or config:
            raise UserError("--target-bpw / --target-size choose every format themselves; drop --format, --group-size, "
                            "--asymmetric, --scale-dtype, --codebook and --config")
        if target_bpw is not None and target_mb is not None:
            raise UserError("give --target-bpw or --target-size, not both")
        from ulpq_build.planner import plan_for_budget

        plan = plan_for_budget(tensors, weights, calibration, target_bpw=target_bpw,
                               target_bytes=None if target_mb is None else int(target_mb * 1e6), keep_float=keep_float,
                               cache_key=_weights_identity(source), gptq=method == "gptq", log=log)
    else:
        default, rules = resolve_options(config, overrides, tensors)
        origin = str(config) if config else ("command line" if overrides else "")
        plan = resolve_plan(tensors, default, [*pinned, *rules], default_source=origin)
    if method != "gptq":
        return plan, None
    from ulpq_build.gptq import quantize_model

    specs = {e.name: e.spec for e in plan.entries if e.spec.fmt.quantized}
    return plan, quantize_model(model, weights, specs, calibration.run, log)


def _weights_identity(source: ModelSource) -> tuple:
    """Names one version of a weights file (path, size, modification time) for the planner's cache."""
    stat = source.weights.path.stat()
    return str(source.weights.path.resolve()), stat.st_size, stat.st_mtime_ns
