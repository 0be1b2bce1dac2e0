# Sourced by the other scripts: create or reuse the project's virtual environment.
# Usage: ensure_venv EXTRAS   (e.g. "cpu,export,dev")
#
# Every version comes from scripts/constraints.txt (a tested set, the same on every machine), so
# a release published tomorrow changes nothing here. LOOKALIKE_CONSTRAINTS names another file,
# or "" for pyproject.toml's ranges alone (what scripts/check-latest.sh tries).

VENV="${LOOKALIKE_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
CONSTRAINTS="${LOOKALIKE_CONSTRAINTS-scripts/constraints.txt}"
# The CPU build of torch; an unpinned `torch` would pull a multi-GB CUDA build.
TORCH_REQUIREMENT="torch==2.13.0"
# Only its file of CLIP's BPE merges is read (random-init text towers); never its dependencies,
# which would replace the CPU torch.
OPEN_CLIP_REQUIREMENT="open_clip_torch==3.3.0"

ensure_venv() {
    local extras="$1"
    local pip=("$VENV/bin/python" -m pip install --quiet)
    if [[ -n "$CONSTRAINTS" ]]; then
        pip+=(--constraint "$CONSTRAINTS")
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "==> creating virtual environment $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    echo "==> installing pip and setuptools (from ${CONSTRAINTS:-the newest releases})"
    # setuptools builds lookalike itself, in this environment (no isolated build environment
    # with whatever setuptools is newest that day).
    "${pip[@]}" --upgrade pip setuptools
    if [[ ",$extras," == *",export,"* ]]; then
        echo "==> installing $TORCH_REQUIREMENT (CPU build), $OPEN_CLIP_REQUIREMENT (its BPE file)"
        "${pip[@]}" "$TORCH_REQUIREMENT"
        "${pip[@]}" --no-deps "$OPEN_CLIP_REQUIREMENT"
    fi
    echo "==> installing lookalike[$extras]"
    # open_clip_torch came without its dependencies (torchvision, timm: not needed here), which
    # pip's conflict check would report as an ERROR on every fresh install
    "${pip[@]}" --no-build-isolation --no-warn-conflicts --editable ".[$extras]"
}
