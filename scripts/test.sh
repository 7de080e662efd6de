#!/usr/bin/env bash
# Set up .venv (scripts/install.sh) and run the test suite: offline, CPU only, a few minutes.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k distillation`.
# Tests run in PDS_TEST_WORKERS processes (default 2, pytest-xdist), a test file to a process: most of a test's time
# is a subprocess starting nerfstudio on one core, so two files at a time keep two cores busy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/python -m pytest --numprocesses "${PDS_TEST_WORKERS:-2}" --dist loadfile "$@"
