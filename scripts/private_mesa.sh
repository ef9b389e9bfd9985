#!/usr/bin/env bash
# Unpack bookworm-backports' Mesa 25 lavapipe (CPU Vulkan) into a private folder (default .mesa/),
# without touching the system's packages or apt sources: Dawn (npm webgpu, Chrome's engine) refuses
# Debian 12's Mesa 22 lavapipe ("Vulkan shaderUniform*ArrayDynamicIndexing required") and accepts
# Mesa 25's. Node picks it up through ulpq_build.browsers.node_environment() (VK_ICD_FILENAMES =
# DIR/lvp_icd.json, LD_LIBRARY_PATH = DIR/lib). Only the apt registry is used.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="$(realpath -m "${1:-.mesa}")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/debs" "$tmp/root"
echo "deb http://deb.debian.org/debian bookworm-backports main" > "$tmp/sources.list"
o="-oDir::Etc::SourceList=$tmp/sources.list -oDir::Etc::SourceParts=/dev/null -oDir::State::Lists=$tmp/lists -oAPT::Architecture=amd64"
apt-get $o update -qq
# mesa-vulkan-drivers 25 needs libdrm >= 2.4.121 (backports too); its other libraries (libllvm15, libxcb...) are Debian 12's
(cd "$tmp/debs" && apt-get $o download mesa-vulkan-drivers/bookworm-backports libdrm2/bookworm-backports \
    libdrm-amdgpu1/bookworm-backports 2>/dev/null)
for f in "$tmp"/debs/*.deb; do dpkg -x "$f" "$tmp/root"; done
rm -rf "$dest" && mkdir -p "$dest/lib"
lib="$tmp/root/usr/lib/x86_64-linux-gnu"
cp -a "$lib"/libvulkan_lvp.so "$lib"/libdrm.so.2* "$lib"/libdrm_amdgpu.so.1* "$dest/lib/"
python3 - "$tmp/root/usr/share/vulkan/icd.d/lvp_icd.json" "$dest" <<'PY'
import json, sys
icd = json.load(open(sys.argv[1]))
icd["ICD"]["library_path"] = f"{sys.argv[2]}/lib/libvulkan_lvp.so"
json.dump(icd, open(f"{sys.argv[2]}/lvp_icd.json", "w"), indent=1)
PY
echo "Mesa $(dpkg-deb -f "$tmp"/debs/mesa-vulkan-drivers_*.deb Version) lavapipe in $dest"
