#!/usr/bin/env bash
# Download the wheels of bench/gpu/wheels.txt for CPython 3.12 on manylinux x86-64 into .whl/ (ignored by git), for a
# CUDA machine without network that lacks nerfstudio and diffusers; then: python bench/gpu/run.py --out OUT --wheels .whl
# Fails if they come to more than 64 MiB (what a device call may carry).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
grep -v '^\s*#' bench/gpu/wheels.txt | grep -v '^\s*$' | while read -r spec; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$spec"
done
size=$(du -sm .whl | cut -f1)
echo "$(ls .whl/*.whl | wc -l) wheels in .whl, ${size} MiB"
[ "$size" -le 64 ] || { echo "error: more than 64 MiB of wheels" >&2; exit 1; }
