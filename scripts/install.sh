#!/usr/bin/env bash
# Create .venv with the tested versions (constraints.txt) and this package installed in it (editable).
# Also installs the system packages nerfstudio's exporter and renderer need when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: libusb-1.0 (open3d, used by ns-export), ffmpeg (ns-render), chromium (the viewer's browser test).
missing=()
ldconfig -p 2>/dev/null | grep -q "libusb-1.0.so.0" || missing+=(libusb-1.0-0)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
  else
    echo "note: install ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]}): ns-export needs libusb-1.0," \
      "ns-render ffmpeg, the browser test chromium" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --constraint constraints.txt --editable ".[test]"
.venv/bin/python -c 'import torch, diffusers; print(f"installed into .venv: torch {torch.__version__}, diffusers {diffusers.__version__}")'
