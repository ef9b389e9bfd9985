"""Run rendered WGSL outside a browser, through the two engines browsers ship: wgpu-native
(`wgpu`, naga, as Firefox) and Dawn (`wgpudawn`, Tint, as Chrome). Used by the kernel tests
(validation in both compilers, execution on lavapipe), the support matrix and the GPU benchmark.

Limits are always requested explicitly: a device asked for nothing gets WebGPU's defaults, as in
a browser, so a variant that needs more is rejected here exactly as it would be there.
"""

from __future__ import annotations

import contextlib
import os
import re
from functools import lru_cache

import numpy as np

from ulpq_build.profiles import DEFAULT_LIMITS
from ulpq_build.quantize import QuantizedTensor
from ulpq_build.kernels import pack_params, workgroups
from ulpq_build.kernels import render as kernel_render

ENGINES = {"wgpu": "wgpu", "dawn": "wgpudawn"}


def _kebab(name: str) -> str:
    """WebGPU's camelCase limit names as wgpu-py spells them (maxComputeWorkgroupSizeX -> max-compute-workgroup-size-x)."""
    return re.sub(r"([A-Z])", r"-\1", name).lower()


def engine_module(engine: str):
    import importlib

    return importlib.import_module(ENGINES[engine])


@contextlib.contextmanager
def _backend_env(value: str | None):
    """wgpudawn reads WGPU_BACKEND_TYPE when an adapter is requested; wgpu-native reads it too, so
    it is set only for that call."""
    old = os.environ.get("WGPU_BACKEND_TYPE")
    if value is None:
        os.environ.pop("WGPU_BACKEND_TYPE", None)
    else:
        os.environ["WGPU_BACKEND_TYPE"] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("WGPU_BACKEND_TYPE", None)
        else:
            os.environ["WGPU_BACKEND_TYPE"] = old


# wgpu-native's names for WebGPU features where they differ from the standard's
NATIVE_FEATURE_NAMES = {"wgpu": {"subgroups": "subgroup"}}


def request_device(engine: str = "wgpu", limits: dict[str, int] | None = None, *, null_backend: bool = False,
                   features: tuple[str, ...] = ()):
    """A device of `engine` with exactly `limits` (WebGPU camelCase names) above the defaults and
    exactly `features` (WebGPU names; an adapter without one raises, naming it).

    null_backend: Dawn's Null backend, which validates WGSL with Tint without any driver.
    """
    gpu = engine_module(engine).gpu
    with _backend_env("Null" if null_backend else None):
        adapter = gpu.request_adapter_sync(power_preference="high-performance")
    if adapter is None:
        raise RuntimeError(f"{engine}: no WebGPU adapter (install mesa-vulkan-drivers for lavapipe)")
    # wgpu-native hands out the adapter's limits when none are named: name the defaults too.
    required = {_kebab(k): v for k, v in {**DEFAULT_LIMITS, **(limits or {})}.items()}
    names = [NATIVE_FEATURE_NAMES.get(engine, {}).get(f, f) for f in features]
    missing = [f for f, n in zip(features, names) if n not in adapter.features]
    if missing:
        raise RuntimeError(f"{engine}: the adapter ({adapter.info.get('device', '?')}) lacks the features {missing}")
    return adapter.request_device_sync(required_limits=required, required_features=names)


def adapter_summary(device) -> str:
    info = device.adapter.info
    return f"{info.get('device', '?')} ({info.get('backend_type', '?')})"


def for_naga(code: str) -> str:
    """naga (wgpu 0.32) compiles subgroup builtins on a device with the subgroup feature but rejects
    the `enable subgroups;` directive Tint requires: the text it is given goes without that line.
    (Firefox offers no subgroups, so no browser hands such a shader to naga.)"""
    return code.replace("enable subgroups;\n", "")


def compile_shader(device, code: str, *, pipeline: bool = True):
    """Compile WGSL; with pipeline=True also create the compute pipeline. Raises on any error."""
    if not type(device).__module__.startswith("wgpudawn"):
        code = for_naga(code)
    module = device.create_shader_module(code=code)
    if not pipeline:
        return module
    return device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "main"})


class KernelRunner:
    """Executes any kernel variant on one device (pipelines cached by key): binds numpy arrays by
    name, fills the Params uniform by name, dispatches by the kernel's rule, reads outputs back."""

    def __init__(self, device):
        self.device = device
        self.wgpu = engine_module("dawn" if type(device).__module__.startswith("wgpudawn") else "wgpu")
        self._pipelines: dict[str, object] = {}

    def pipeline(self, variant):
        if variant.key not in self._pipelines:
            self._pipelines[variant.key] = compile_shader(self.device, kernel_render(variant))
        return self._pipelines[variant.key]

    def buffer(self, data: np.ndarray, *, readable: bool = False):
        raw = np.ascontiguousarray(data).tobytes()
        raw += b"\0" * (-len(raw) % 4 or (4 if not raw else 0))
        usage = self.wgpu.BufferUsage.STORAGE | self.wgpu.BufferUsage.COPY_DST
        if readable:
            usage |= self.wgpu.BufferUsage.COPY_SRC
        return self.device.create_buffer_with_data(data=raw, usage=usage)

    def run(self, variant, arrays: dict[str, np.ndarray], params: dict, outputs: dict[str, int], *,
            poison: bool = True, repeat: int = 1, timestamp=None) -> dict[str, np.ndarray]:
        """arrays: binding name -> input data; outputs: binding name -> float32 count (poisoned
        with NaN first, so an element the kernel never writes fails any comparison)."""
        wgpu = self.wgpu
        buffers = {name: self.buffer(np.asarray(a)) for name, a in arrays.items()}
        for name, count in outputs.items():
            buffers[name] = self.buffer(np.full(count, np.nan if poison else 0, np.float32), readable=True)
        buffers["params"] = self.device.create_buffer_with_data(data=pack_params(variant, params),
                                                                usage=wgpu.BufferUsage.UNIFORM)
        pipeline = self.pipeline(variant)
        missing = [n for n in variant.bindings if n not in buffers]
        if missing:
            raise ValueError(f"{variant.key}: no data for bindings {missing}")
        entries = [{"binding": slot, "resource": {"buffer": buffers[name], "offset": 0, "size": buffers[name].size}}
                   for name, slot in variant.bindings.items()]
        bind_group = self.device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=entries)
        grid = workgroups(variant, params)
        encoder = self.device.create_command_encoder()
        for _ in range(repeat):
            compute = encoder.begin_compute_pass()
            compute.set_pipeline(pipeline)
            compute.set_bind_group(0, bind_group)
            compute.dispatch_workgroups(*grid)
            compute.end()
        self.device.queue.submit([encoder.finish()])
        return {name: np.frombuffer(self.device.queue.read_buffer(buffers[name]), np.float32)[:count].copy()
                for name, count in outputs.items()}


def weight_arrays(qt: QuantizedTensor) -> dict[str, np.ndarray]:
    """A quantized tensor's parts under the kernels' binding names (w.codes, w.scales, ...), and for
    codebook formats the bundle's one decode table (manifest.codebooks), which no tensor stores."""
    arrays = {f"w.{part}": array for part, array in qt.parts.items()}
    if qt.fmt.levels == "codebook":
        from ulpq_build.vq.tensor import codebook_tables

        arrays["w.codebook"] = codebook_tables()
    return arrays


def matmul_params(qt: QuantizedTensor, m: int) -> dict:
    layout = qt.matrix_layout()
    return {"m": m, "n": layout["rows"], "k_split": layout["k"],
            **{k: layout[k] for k in ("k", "words_per_row", "groups_per_row", "group_size", "codebook_stride")}}


COMPILERS = {"naga": "wgpu-native, as Firefox", "tint": "Dawn, as Chrome"}


def validate(code: str, workgroup_size: int, compiler: str, features: tuple[str, ...] = ()) -> None:
    """Compile WGSL with naga (wgpu, a pipeline on lavapipe, limits raised for 512-thread variants)
    or Tint (Dawn's Null backend, no driver: it stops at 256 invocations, so 512-thread variants are
    validated as modules there). Raises with the compiler's message."""
    if compiler == "naga":
        compile_shader(cached_device("wgpu", max(256, workgroup_size), features=tuple(features)), code)
    elif compiler == "tint":
        compile_shader(cached_device("dawn", 256, null_backend=True, features=tuple(features)), code,
                       pipeline=workgroup_size <= 256)
    else:
        raise ValueError(f"unknown compiler {compiler!r}")


@lru_cache(maxsize=None)
def cached_device(engine: str, max_workgroup: int = 256, null_backend: bool = False, features: tuple[str, ...] = ()):
    """One device per (engine, workgroup limit, features) per process: lavapipe devices are slow to create."""
    limits = {"maxComputeInvocationsPerWorkgroup": max_workgroup, "maxComputeWorkgroupSizeX": max_workgroup} if max_workgroup > 256 else {}
    return request_device(engine, limits, null_backend=null_backend, features=tuple(features))
