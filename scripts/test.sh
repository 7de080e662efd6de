#!/usr/bin/env bash
# Set up .venv (scripts/install.sh) and run the test suite: offline, CPU only, a few minutes.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k distillation`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/python -m pytest "$@"
