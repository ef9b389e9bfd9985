"""Browser profiles: one small table. Each profile fixes the threads per workgroup its shader
variants are rendered with and the WebGPU limits a device must be created with to run them.

The JS runtime reads this table from the manifest: it matches the user agent against
`user_agent` (first match in table order wins, so Edge is tried before Chrome and Chrome before
Safari, whose token every Chromium UA also carries), then checks the adapter's real limits and
falls back to the largest variant that fits.

The `cpu` row (cpu_adapter) serves only adapters that are CPU implementations of WebGPU (the adapter
reports isFallbackAdapter, or its vendor/architecture/description names SwiftShader, llvmpipe or
lavapipe: web_runtime/variants.js, cpuAdapter), in any browser: there it is tried before the user
agent's row, so Chromium on SwiftShader and Firefox on lavapipe both run it, while on a real GPU it is
neither detected nor a fallback (the GPU profiles' variants stay exactly as they were). Its shaders
suit a CPU running a workgroup as a loop over SIMD lanes: small workgroups (idle invocations and
workgroup barriers are what cost there, not memory latency) and matrix products without workgroup
memory or barriers (kernels.py: the gemm `direct` tiles, the one-thread-per-row gemv). A profile row
rather than a kernel option, because the choice is one per device, like the workgroup size, and
every kernel (layernorm, attention, ...) wants the small workgroups too; one row rather than one per
browser, because what suits the adapter does not depend on the browser around it (both WGSL
compilers accept the same text, and the bundle ships it once).

Optional WebGPU features (FEATURES: subgroups, shader-f16) are a second, smaller table: a profile
row lists the features its bundles ship variants for (kernels.py decides which kernels they change),
and the runtime (variants.js chooseFeatures) requests those the adapter offers, as it requests
limits, using a feature variant only where the device granted the feature. A feature is not a
profile row: it changes a few kernels, not the workgroup size, and combines with any profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from ulpq_build.errors import UserError


@dataclass(frozen=True)
class Feature:
    """An optional WebGPU feature some kernels have a variant for. Negotiated like limits: the runtime
    uses a feature's variants only when the adapter offers it and the device was requested with it
    (requiredFeatures); otherwise the base variants run, rendered exactly as without this table.
    Which kernels (and weight storages) a feature changes is kernels.py's `feature_applies`."""

    name: str  # the GPUFeatureName: what adapter.features holds and requiredFeatures names
    enable: str  # the WGSL enable-extension its shaders declare
    tag: str  # its part of a variant key
    summary: str


FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature("subgroups", "subgroups", "sg",
                "cross-thread reductions by subgroup operations (subgroupAdd / subgroupMax / subgroupShuffleXor) and one "
                "small workgroup array of subgroup partials, instead of a tree of workgroup barriers; correct for any "
                "subgroup size from 4 to 128 (read from the subgroup_size builtin)"),
        Feature("shader-f16", "f16", "f16",
                "packed codes decoded two at a time into f16 pairs (exact: codes and zero points are small integers), "
                "then widened; the products, the scales and every sum stay f32 (the tolerances against numpy hold)"),
    )
}

# Where a feature's variants measured faster than the base kernels, per adapter vendor. On an adapter
# whose GPUAdapterInfo (vendor, architecture, device, description) contains `vendor`, a variant using
# `feature` runs only for these kernels over these weight formats; the others keep their base
# program there (a slower variant would cost both time and compile wait). An adapter no row names
# runs every variant the bundle ships. Rows come from measurements, each named here:
#   nvidia, subgroups: NVIDIA H200 through Dawn, 2026-11-29 (docs/benchmarks.md, "Subgroup variants
#   on the H200"): subgroup row sums made the float32 GEMV 1.04-1.18x faster and the packed GEMVs
#   0.70-0.96x as fast; the subgroup reductions of whole encoders measured no gain and multiplied
#   small models' compile wait (MiniLM: 98-190 ms -> 500-1071 ms), and decode of a 1B Llama shape
#   went float32 281 -> 357 tokens/s but int4 648 -> 572 and int2 592 -> 431.
FEATURE_POLICY: tuple[dict, ...] = (
    {"vendor": "nvidia", "feature": "subgroups", "kernels": ["gemv"], "formats": ["float32"]},
)

# WebGPU's defaults (the spec's "default" limit tier): a device gets these unless it asks for more.
DEFAULT_LIMITS = {
    "maxComputeInvocationsPerWorkgroup": 256,
    "maxComputeWorkgroupSizeX": 256,
    "maxComputeWorkgroupStorageSize": 16384,
    "maxStorageBufferBindingSize": 134217728,
    "maxStorageBuffersPerShaderStage": 8,
}


@dataclass(frozen=True)
class Profile:
    name: str
    browser: str
    workgroup_size: int
    user_agent: str  # a JS RegExp source matched against navigator.userAgent
    cpu_adapter: bool = False  # serves (only) adapters that are CPU implementations
    # the FEATURES this profile's bundles ship variants for (the runtime uses those the adapter offers)
    features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise ValueError(f"profile {self.name}: unknown features {unknown}")

    @property
    def limits(self) -> dict[str, int]:
        """Every limit this profile's variants need; the runtime checks them against the adapter."""
        return {"maxComputeInvocationsPerWorkgroup": self.workgroup_size, "maxComputeWorkgroupSizeX": self.workgroup_size}

    @property
    def required_limits(self) -> dict[str, int]:
        """The limits above WebGPU's defaults, which requestDevice must name in `requiredLimits`."""
        return {k: v for k, v in self.limits.items() if v > DEFAULT_LIMITS[k]}

    @property
    def variant(self) -> str:
        return f"{self.name}-{self.workgroup_size}"

    def to_manifest(self) -> dict:
        return {
            "name": self.name,
            "browser": self.browser,
            "workgroup_size": self.workgroup_size,
            "variant": self.variant,
            "user_agent": self.user_agent,
            "cpu_adapter": self.cpu_adapter,
            "features": list(self.features),
            "limits": self.limits,
            "required_limits": self.required_limits,
        }


# The features GPU profiles ship variants for. The cpu row has none: its GEMV has no cross-thread
# reduction to replace, and on SwiftShader / lavapipe neither feature was measured to pay.
GPU_FEATURES = tuple(FEATURES)

# Threads per workgroup on CPU adapters: SwiftShader and lavapipe run a workgroup as a loop over
# SIMD lanes (4 or 8 wide), one workgroup per CPU thread at a time, so a 256-thread workgroup where
# 18 threads have work (attention over 18 keys, a row's reductions) pays for 256.
CPU_WORKGROUP = 64

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        # any browser whose adapter is a CPU (Chromium: SwiftShader; Firefox: lavapipe)
        Profile("cpu", "any browser on a CPU adapter", CPU_WORKGROUP, r".", True),
        Profile("edge", "Microsoft Edge", 256, r"\bEdg(e|A|iOS)?/", features=GPU_FEATURES),
        Profile("firefox", "Firefox", 128, r"\bFirefox/", features=GPU_FEATURES),
        Profile("chrome", "Chrome / Chromium", 256, r"\b(Chrome|Chromium|HeadlessChrome)/", features=GPU_FEATURES),
        Profile("safari", "Safari", 512, r"\bSafari/", features=GPU_FEATURES),
    )
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UserError(f"unknown browser profile {name!r}; choose one of: {', '.join(PROFILES)}") from None
