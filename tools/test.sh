#!/usr/bin/env bash
# The test suite, exactly as CI runs it: set up (idempotent), lint, then every test including slow ones.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/setup.sh
.venv/bin/ruff check edgekit tests tools
status=0
# One test file per worker at a time (--dist loadfile): a file's module fixtures (the emulated device, a trained
# model) are built once, by the worker that runs it. EDGEKIT_TEST_WORKERS=0 runs everything in this process.
workers=${EDGEKIT_TEST_WORKERS:-2}
# The cores are split between the workers: PyTorch's OpenMP threads spin while they wait, so two processes with a
# thread per core each train 20-50x slower than with their share (two digits trainings at once, 2 cores: 50 s an
# epoch against 2.7 s with one thread each).
if [ "$workers" -gt 0 ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / workers > 0 ? $(nproc) / workers : 1 ))}
fi
# Files go out longest first (tests/durations.json, tests/conftest.py), not by their number of tests.
.venv/bin/python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
