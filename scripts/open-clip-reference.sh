#!/usr/bin/env bash
# The heavy reference for OpenCLIP parity: a venv with the real open_clip, torchvision and timm
# (CUDA builds of torch from PyPI; they install and run on a CPU-only machine: ~3 GB download,
# ~5 GB installed, minutes). Lookalike itself never needs it. Then:
#   LOOKALIKE_OPEN_CLIP_VENV=.venv-open-clip .venv/bin/python -m pytest tests/export/test_openclip_reference.py
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LOOKALIKE_OPEN_CLIP_VENV:-.venv-open-clip}"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" \
    "open_clip_torch==3.3.0" timm safetensors numpy pillow
echo "made $VENV: LOOKALIKE_OPEN_CLIP_VENV=$VENV .venv/bin/python -m pytest tests/export/test_openclip_reference.py"
