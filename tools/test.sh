#!/usr/bin/env bash
# The test suite, exactly as CI runs it: set up (idempotent), lint, then every test including slow ones.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/setup.sh
.venv/bin/ruff check edgekit tests tools
status=0
# One test file per worker at a time (--dist loadfile): a file's module fixtures (the emulated device, a trained
# model) are built once, by the worker that runs it. EDGEKIT_TEST_WORKERS=0 runs everything in this process.
.venv/bin/python -m pytest -n "${EDGEKIT_TEST_WORKERS:-2}" --dist loadfile "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
