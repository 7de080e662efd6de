#!/usr/bin/env bash
# Set up .venv (scripts/install.sh) and run the test suite: offline, CPU only (about 19 minutes on 2 cores).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k distillation`.
# Tests run in PDS_TEST_WORKERS processes (default 2, pytest-xdist), a test file to a process: most of a test's time
# is a subprocess starting nerfstudio on one core, so two files at a time keep two cores busy.
# Each worker and the processes it starts (ns-train, its data-loading process) get the cores divided by the workers as
# their torch/OpenMP threads (OMP_NUM_THREADS; one each on 2 cores): with 2 threads each, 2 workers' processes wait on
# each other's spinning threads, and e2e/test_resume.py and e2e/test_refine.py together took 314 s instead of 163 s.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
workers="${PDS_TEST_WORKERS:-2}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / workers > 0 ? $(nproc) / workers : 1 ))}"
# --no-loadscope-reorder: files go to the workers longest first, as tests/conftest.py orders them
.venv/bin/python -m pytest --numprocesses "$workers" --dist loadfile --no-loadscope-reorder "$@"
