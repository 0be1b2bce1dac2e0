#!/usr/bin/env bash
# The main job on a fresh machine: set up, export a CLIP model to ONNX, describe the package.
# A second run reuses the export. Set LOOKALIKE_MODEL to export another checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv "cpu,export"

MODEL="${LOOKALIKE_MODEL:-openai/clip-vit-base-patch32}"
if "$VENV/bin/python" - "$MODEL" <<'PY' 2>/dev/null; then
import sys
from pathlib import Path
from huggingface_hub import model_info
if not Path(sys.argv[1]).is_dir():
    model_info(sys.argv[1], timeout=10)
PY
    SOURCE=(--model "$MODEL")
    OUTPUT="models/$(basename "$MODEL")"
else
    cat <<BANNER
################################################################################
#  The Hugging Face hub is unreachable, so $MODEL cannot be downloaded.
#  Exporting a CLIP ViT-B/32 with RANDOM WEIGHTS instead (--random-init vit-b-32):
#  same size and speed as the real model, but its results are NOT semantically
#  meaningful. With network access, or a local checkpoint directory in
#  LOOKALIKE_MODEL, this script exports real weights.
################################################################################
BANNER
    SOURCE=(--random-init vit-b-32)
    OUTPUT="models/random-vit-b-32"
fi

if [[ -f "$OUTPUT/manifest.json" ]]; then
    echo "==> reusing the export in $OUTPUT (delete it to export again)"
    "$VENV/bin/python" -m export.describe "$OUTPUT"
else
    echo "==> exporting to $OUTPUT"
    "$VENV/bin/lookalike-export" "${SOURCE[@]}" --output "$OUTPUT"
fi
