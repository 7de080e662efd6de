#!/usr/bin/env bash
# Create .venv with the tested versions (constraints.txt) and this package installed in it (editable).
# Also installs the one system library nerfstudio's exporter needs (libusb-1.0, for open3d) when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ldconfig -p 2>/dev/null | grep -q "libusb-1.0.so.0"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libusb-1.0-0; }
  else
    echo "note: ns-export needs libusb-1.0 (Debian/Ubuntu: sudo apt-get install libusb-1.0-0)" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --constraint constraints.txt --editable ".[test]"
echo "installed into .venv: $(.venv/bin/python -c 'import nerfstudio, torch, diffusers; print(f"nerfstudio {nerfstudio.__version__ if hasattr(nerfstudio, "__version__") else ""} torch {torch.__version__} diffusers {diffusers.__version__}")')"
