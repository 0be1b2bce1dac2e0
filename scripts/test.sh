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
# mypy cannot see through setuptools' editable import hook, which maps these folders to
# lookalike.*: it reads the installed layout from a tree of links instead.
TREE=.mypy_cache/installed-layout
rm -rf "$TREE" && mkdir -p "$TREE/lookalike"
ln -s "$PWD/protos/lookalike/__init__.py" "$PWD/protos/lookalike/v1" "$TREE/lookalike/"
for package in server export client batch cli; do ln -s "$PWD/$package" "$TREE/lookalike/$package"; done
MYPYPATH="$TREE" "$VENV/bin/mypy" -p lookalike.server -p lookalike.export -p lookalike.client \
    -p lookalike.batch -p lookalike.cli
echo "==> pytest"
"$VENV/bin/python" -m pytest "$@"
