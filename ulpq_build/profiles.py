"""Browser profiles: one small table. Each profile fixes the threads per workgroup its shader
variants are rendered with and the WebGPU limits a device must be created with to run them.

The JS runtime reads this table from the manifest: it matches the user agent against
`user_agent` (first match in table order wins, so Edge is tried before Chrome and Chrome before
Safari, whose token every Chromium UA also carries), then checks the adapter's real limits and
falls back to the largest variant that fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from ulpq_build.errors import UserError

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
            "limits": self.limits,
            "required_limits": self.required_limits,
        }


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("edge", "Microsoft Edge", 256, r"\bEdg(e|A|iOS)?/"),
        Profile("firefox", "Firefox", 128, r"\bFirefox/"),
        Profile("chrome", "Chrome / Chromium", 256, r"\b(Chrome|Chromium|HeadlessChrome)/"),
        Profile("safari", "Safari", 512, r"\bSafari/"),
    )
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UserError(f"unknown browser profile {name!r}; choose one of: {', '.join(PROFILES)}") from None
