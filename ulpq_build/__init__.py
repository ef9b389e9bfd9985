"""ulpq_build: quantize neural networks to 8/4/3/2/1 bits and emit static WebGPU bundles."""

__version__ = "0.1.0"
