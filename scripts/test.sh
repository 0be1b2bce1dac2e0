#!/usr/bin/env bash
# Set up (or reuse) the environment with the CPU runtime, exporter and dev tools, and the Node
# client test's npm packages; lint; test. Extra arguments go to pytest, e.g.
# ./scripts/test.sh -k export -x. LOOKALIKE_REQUIRE_ALL=1 (what .ci/run sets) makes a skipped test
# a failure: run it so to see what CI sees.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv "cpu,export,dev"

# The Node client test's packages, exactly as package-lock.json names them (hashes included);
# installed again only when the lock file changes. Without npm (or the registry), that test is
# skipped saying why (a failure under LOOKALIKE_REQUIRE_ALL=1).
NODE_PROJECT=tests/client/node
if ! cmp -s "$NODE_PROJECT/package-lock.json" "$NODE_PROJECT/node_modules/.lookalike-lock"; then
    if command -v npm > /dev/null; then
        echo "==> npm ci in $NODE_PROJECT (@grpc/grpc-js, @grpc/proto-loader)"
        if npm ci --ignore-scripts --no-audit --no-fund --prefix "$NODE_PROJECT"; then
            cp "$NODE_PROJECT/package-lock.json" "$NODE_PROJECT/node_modules/.lookalike-lock"
        else
            echo "npm ci failed: the Node client test will say so"
        fi
    else
        echo "==> no npm: the Node client test will be skipped (apt install nodejs npm)"
    fi
fi

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
echo "==> pytest${LOOKALIKE_REQUIRE_ALL:+ (LOOKALIKE_REQUIRE_ALL=$LOOKALIKE_REQUIRE_ALL: a skip is a failure)}"
"$VENV/bin/python" -m pytest "$@"
