#!/usr/bin/env bash
# For maintainers: would the newest releases break the suite? Builds a fresh environment from
# pyproject.toml's ranges alone (what a user's own `pip install` gets today), runs the whole gate
# in it (./scripts/test.sh: ruff, mypy, pytest) and lists the versions that differ from
# scripts/constraints.txt, the tested set that ./scripts/test.sh, ./scripts/demo.sh and CI install.
# With --write, a green run becomes the new scripts/constraints.txt: review the diff, commit it.
#
# Usage: ./scripts/check-latest.sh [--write] [pytest arguments, e.g. -m "not slow"]
# The environment goes to LOOKALIKE_LATEST_VENV (default .venv-latest), made anew each run.
set -euo pipefail
cd "$(dirname "$0")/.."
WRITE=0
if [[ "${1:-}" == --write ]]; then
    WRITE=1
    shift
fi
export LOOKALIKE_VENV="${LOOKALIKE_LATEST_VENV:-.venv-latest}"
export LOOKALIKE_CONSTRAINTS=""  # the ranges alone
rm -rf "$LOOKALIKE_VENV"

gate=0
./scripts/test.sh "$@" || gate=$?

candidate="$(mktemp)"
trap 'rm -f "$candidate"' EXIT
python_version="$("$LOOKALIKE_VENV/bin/python" -c 'import platform; print(platform.python_implementation(), platform.python_version(), platform.system(), platform.machine())')"
{
    echo "# The tested set: every package ./scripts/test.sh, ./scripts/demo.sh and CI install"
    echo "# (scripts/venv.sh passes this file to pip as constraints; a user's own install keeps"
    echo "# pyproject.toml's ranges). The newest releases those ranges admitted on $(date -u +%F),"
    echo "# installed on $python_version, with the whole gate green on them."
    echo "# Refresh: ./scripts/check-latest.sh --write, then review the diff and commit it."
    # Local version labels (torch's +cpu) name a build, not a release: pip's == ignores them.
    "$LOOKALIKE_VENV/bin/python" -m pip freeze --all --exclude-editable | sed 's/+[A-Za-z0-9.]*$//'
} > "$candidate"

echo "==> versions that differ from scripts/constraints.txt (< tested, > newest)"
diff <(grep -v '^#' scripts/constraints.txt 2> /dev/null) <(grep -v '^#' "$candidate") || true
if [[ "$gate" != 0 ]]; then
    echo "==> the gate FAILS on the newest releases (exit $gate): scripts/constraints.txt keeps the tested set"
    exit "$gate"
fi
if [[ "$WRITE" == 1 ]]; then
    cp "$candidate" scripts/constraints.txt
    echo "==> wrote scripts/constraints.txt: review 'git diff scripts/constraints.txt' and commit it"
else
    echo "==> the gate passes on the newest releases (--write makes them the tested set)"
fi
