#!/usr/bin/env bash
# The test suite, exactly as CI runs it: set up (idempotent), lint, then every test including slow ones.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/setup.sh
.venv/bin/ruff check edgekit tests tools
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
