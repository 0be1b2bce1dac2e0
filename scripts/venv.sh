# Sourced by the other scripts: create or reuse the project's virtual environment.
# Usage: ensure_venv EXTRAS   (e.g. "cpu,export,dev")

VENV="${LOOKALIKE_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
# The CPU build of torch; an unpinned `torch` would pull a multi-GB CUDA build.
TORCH_REQUIREMENT="torch==2.13.0"
# Only its file of CLIP's BPE merges is read (random-init text towers); never its dependencies,
# which would replace the CPU torch.
OPEN_CLIP_REQUIREMENT="open_clip_torch==3.3.0"

ensure_venv() {
    local extras="$1"
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "==> creating virtual environment $VENV"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
    fi
    if [[ ",$extras," == *",export,"* ]]; then
        echo "==> installing $TORCH_REQUIREMENT (CPU build), $OPEN_CLIP_REQUIREMENT (its BPE file)"
        "$VENV/bin/python" -m pip install --quiet "$TORCH_REQUIREMENT"
        "$VENV/bin/python" -m pip install --quiet --no-deps "$OPEN_CLIP_REQUIREMENT"
    fi
    echo "==> installing lookalike[$extras]"
    "$VENV/bin/python" -m pip install --quiet --editable ".[$extras]"
}
