"""Render WGSL compute shaders from the Jinja templates, one file per kernel variant.

A variant's parameters (kernel, format, scale dtype, zero points, activation, bias, profile) are
its key: the key is written into the shader's header comment and into the manifest, where the
JS runtime looks variants up (each layer of the manifest names its shader key per profile, so
the runtime never rebuilds a key). Which variants a bundle ships is decided in one place:
`bundle.plan_shaders`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import jinja2

from ulpq_build.formats import Format, get_format
from ulpq_build.profiles import Profile, get_profile
from ulpq_build.resources import templates_dir

ACTIVATIONS = ("none", "gelu")

# Binding slots of the linear template; a variant binds only the slots its format uses.
LINEAR_BINDINGS = {"params": 0, "x": 1, "codes": 2, "scales": 3, "zeros": 4, "codebook": 5, "bias": 6, "y": 7}


@dataclass(frozen=True)
class LinearVariant:
    format: str
    scale_dtype: str
    asymmetric: bool
    activation: str
    has_bias: bool
    profile: str

    template = "linear.wgsl.jinja"
    kernel = "linear"

    @property
    def fmt(self) -> Format:
        return get_format(self.format)

    @property
    def prof(self) -> Profile:
        return get_profile(self.profile)

    @property
    def weight_key(self) -> str:
        """The part of the key that a weight tensor decides (its format and how it is stored)."""
        if not self.fmt.quantized:
            return self.format
        return f"{self.format}.{'asym' if self.asymmetric else 'sym'}.{'f16' if self.scale_dtype == 'float16' else 'f32'}"

    @property
    def key(self) -> str:
        return f"{self.kernel}.{self.weight_key}.{self.activation}.{'bias' if self.has_bias else 'nobias'}.{self.prof.variant}"

    @property
    def file(self) -> str:
        return f"shaders/{self.key}.wgsl"

    @property
    def bindings(self) -> dict[str, int]:
        used = ["params", "x", "codes", "y"]
        if self.fmt.quantized:
            used.append("scales")
        if self.asymmetric:
            used.append("zeros")
        if self.fmt.levels == "fitted":
            used.append("codebook")
        if self.has_bias:
            used.append("bias")
        return {name: LINEAR_BINDINGS[name] for name in sorted(used, key=LINEAR_BINDINGS.get)}

    def to_manifest(self) -> dict:
        return {
            "key": self.key,
            "file": self.file,
            "template": self.template,
            "kernel": self.kernel,
            "weight_key": self.weight_key,
            "format": self.format,
            "scale_dtype": self.scale_dtype,
            "asymmetric": self.asymmetric,
            "activation": self.activation,
            "has_bias": self.has_bias,
            "profile": self.profile,
            "workgroup_size": self.prof.workgroup_size,
            "limits": self.prof.limits,
            "required_limits": self.prof.required_limits,
            "bindings": self.bindings,
        }


def _wgsl_float(value: float) -> str:
    text = repr(float(value))
    return text if ("." in text or "e" in text) else text + ".0"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["wgsl_float"] = _wgsl_float
    return env


def render(variant: LinearVariant) -> str:
    prof = variant.prof
    required = ", ".join(f"{k} >= {v}" for k, v in prof.limits.items())
    if not prof.required_limits:
        required += " (within WebGPU's defaults)"
    else:
        required += f" (request {', '.join(prof.required_limits)} in requiredLimits)"
    return _environment().get_template(variant.template).render(
        fmt=variant.fmt,
        scale_dtype=variant.scale_dtype,
        asymmetric=variant.asymmetric,
        activation=variant.activation,
        has_bias=variant.has_bias,
        profile=prof,
        key=variant.key,
        required_limits_text=required,
    )


def linear_variant(spec, activation: str, has_bias: bool, profile: str) -> LinearVariant:
    """The linear-kernel variant for a weight stored under `spec` (a QuantSpec) on `profile`."""
    if not spec.fmt.quantized:  # raw float weights: scale options do not apply, one variant serves all
        return LinearVariant(spec.format, "float32", False, activation, has_bias, profile)
    return LinearVariant(spec.format, spec.scale_dtype, spec.asymmetric, activation, has_bias, profile)
