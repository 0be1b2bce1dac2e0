#!/usr/bin/env bash
# Set up (or reuse) the environment with the CPU runtime, exporter and dev tools; lint; test.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k export -x
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv "cpu,export,dev"

echo "==> ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "==> mypy"
"$VENV/bin/mypy" export server
echo "==> pytest"
"$VENV/bin/python" -m pytest "$@"
