#!/usr/bin/env bash
# The main job on a fresh machine: set up, export a CLIP model to ONNX, start the server,
# index sample images, search with one of them, with a transformed copy, and with a sentence,
# write an HTML page, stop the server, and say how to browse the images in the web app. A second
# run reuses the export and the index.
#
# Settings (environment): LOOKALIKE_MODEL (hub id or local checkpoint directory, default
# openai/clip-vit-base-patch32), LOOKALIKE_RANDOM_INIT (a --random-init preset instead),
# LOOKALIKE_DEMO_DIR (default data/demo), LOOKALIKE_MODELS_DIR (default models),
# LOOKALIKE_SKIP_INSTALL=1 (use the environment as it is).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
[[ "${LOOKALIKE_SKIP_INSTALL:-}" == 1 ]] || ensure_venv "cpu,export"

MODEL="${LOOKALIKE_MODEL:-openai/clip-vit-base-patch32}"
MODELS="${LOOKALIKE_MODELS_DIR:-models}"
DEMO="${LOOKALIKE_DEMO_DIR:-data/demo}"
WEB_APP_PORT=8080  # in the closing instruction: how to browse the demo's images
mkdir -p "$DEMO"

banner() {  # $1: why the weights are random; $2: what this run does with them
    cat <<BANNER
################################################################################
#  $1
#  $2:
#  same size and speed as the real model, but search results are NOT
#  semantically meaningful. With network access, or a local checkpoint
#  directory in LOOKALIKE_MODEL, this script exports real weights.
################################################################################
BANNER
}

hub_reachable() {
    "$VENV/bin/python" - "$MODEL" <<'PY' 2>/dev/null
import sys
from pathlib import Path
from huggingface_hub import model_info
if not Path(sys.argv[1]).is_dir():
    model_info(sys.argv[1], timeout=10)
PY
}

RANDOM_REASON=""  # why the weights are random, if they are
if [[ -n "${LOOKALIKE_RANDOM_INIT:-}" ]]; then
    RANDOM_REASON="LOOKALIKE_RANDOM_INIT=$LOOKALIKE_RANDOM_INIT asks for random weights."
    PRESET="$LOOKALIKE_RANDOM_INIT"
elif ! hub_reachable; then
    RANDOM_REASON="The Hugging Face hub is unreachable: $MODEL cannot be downloaded."
    PRESET=vit-b-32
fi
if [[ -n "$RANDOM_REASON" ]]; then
    SOURCE=(--random-init "$PRESET")
    MODEL_DIR="$MODELS/random-$PRESET"
else
    SOURCE=(--model "$MODEL")
    MODEL_DIR="$MODELS/$(basename "$MODEL")"
fi

has_text_tower() {
    "$VENV/bin/python" - "$MODEL_DIR" <<'PY' 2>/dev/null
import sys
from pathlib import Path
from lookalike.export.manifest import Manifest
sys.exit(0 if "text" in Manifest.load(Path(sys.argv[1])).graphs else 1)
PY
}

if [[ -f "$MODEL_DIR/manifest.json" ]] && has_text_tower; then
    [[ -z "$RANDOM_REASON" ]] ||
        banner "$RANDOM_REASON" "Reusing the CLIP image tower with RANDOM WEIGHTS exported before"
    echo "==> 1/5 model: $MODEL_DIR (exported by an earlier run)"
    "$VENV/bin/python" -m lookalike.export.describe "$MODEL_DIR"
else
    [[ -z "$RANDOM_REASON" ]] ||
        banner "$RANDOM_REASON" "Exporting a CLIP image tower with RANDOM WEIGHTS (--random-init $PRESET)"
    echo "==> 1/5 model: exporting to $MODEL_DIR"
    [[ -f "$MODEL_DIR/manifest.json" ]] && echo "(exported before search by text: exporting again)"
    "$VENV/bin/lookalike-export" "${SOURCE[@]}" --output "$MODEL_DIR" --overwrite
fi

echo "==> 2/5 sample images: $DEMO/samples"
if [[ ! -d "$DEMO/samples" ]]; then
    "$VENV/bin/python" scripts/make_samples.py "$DEMO/samples" --copy-of 5 --copy-to "$DEMO/query-transformed.jpg"
fi

echo "==> 3/5 starting the server (log: $DEMO/server.log)"
"$VENV/bin/lookalike-server" --model-dir "$MODEL_DIR" --data-dir "$DEMO/index" --port 0 \
    2> "$DEMO/server.log" &
SERVER_PID=$!
trap 'kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true' EXIT
PORT=""
for _ in $(seq 1200); do
    PORT=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$DEMO/server.log" | head -n 1)
    [[ -n "$PORT" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DEMO/server.log"; exit 1; }
    sleep 0.1
done
[[ -n "$PORT" ]] || { echo "the server did not start"; cat "$DEMO/server.log"; exit 1; }
export LOOKALIKE_SERVER="127.0.0.1:$PORT"
for _ in $(seq 600); do  # UNAVAILABLE until the model is warm and the index loaded
    "$VENV/bin/lookalike" stats > /dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DEMO/server.log"; exit 1; }
    sleep 0.2
done
"$VENV/bin/lookalike" stats

echo "==> 4/5 indexing $DEMO/samples"
"$VENV/bin/lookalike" index "$DEMO/samples" --metadata set=demo

QUERY="$DEMO/samples/shapes-005.jpg"  # sample 5: the one make_samples.py copied
echo "==> 5/5 searching with $QUERY, then with a resized, cropped, recompressed copy of it,"
echo "    then with a sentence (CLIP's text tower)"
"$VENV/bin/lookalike" search "$QUERY" -k 5
"$VENV/bin/lookalike" search "$DEMO/query-transformed.jpg" -k 5 --html "$DEMO/results.html"
"$VENV/bin/lookalike" search --text "a red circle on a white background" -k 5 \
    --html "$DEMO/text-results.html"
echo "open $DEMO/results.html and $DEMO/text-results.html to see the queries and their matches"
echo "the commands used here live in $VENV/bin: 'source $VENV/bin/activate' puts lookalike,"
echo "lookalike-server and lookalike-export on your PATH (README: Quick start on your own folder)"
echo "to browse these images in the web app, start the server over them with --http-port:"
printf '  %q --model-dir %q --data-dir %q --http-port %s\n' \
    "$VENV/bin/lookalike-server" "$MODEL_DIR" "$DEMO/index" "$WEB_APP_PORT"
echo "then open http://127.0.0.1:$WEB_APP_PORT/ (Ctrl-C stops the server)"
