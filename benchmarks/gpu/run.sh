#!/usr/bin/env bash
# The GPU benchmarks (gpu_engine.py, gpu_serve.py) on a machine with an NVIDIA GPU, Python 3.12
# and PyTorch but no network, from what benchmarks/gpu/pack.sh packed (.whl/, .gpu/ort.tar.xz).
#
#   benchmarks/gpu/run.sh export    install the wheels; export the full-size random-weight
#                                   ViT-B/32 (fp16, fp32) with the machine's CPU onnxruntime
#   benchmarks/gpu/run.sh measure   install the wheels and onnxruntime-gpu in place of the CPU
#                                   build; check that CUDA loads; run both benchmarks
#   benchmarks/gpu/run.sh dry-run   here, with no GPU: both benchmarks on the CPU (tiny model)
#
# export and measure may run as two calls on the same machine (each load under 64 MiB).
# Results go to $OUT (default results/); each step's log beside them. A failing step does not
# stop the next one.
set -uo pipefail
cd "$(dirname "$0")/../.."
stage=${1:?usage: run.sh export|measure|dry-run}
out=${OUT:-results}
model=models/gpu-vit-b-32
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

use_carried_packages() {  # from .whl/, or as an earlier call on this machine installed them
    [[ -d .whl ]] || [[ ! -d /tmp/site ]] || ls .whl/*.whl > /dev/null 2>&1 || SKIP_WHEELS=1
    [[ ${SKIP_WHEELS:-} ]] || "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || return 1
    rm -rf /tmp/layout && mkdir -p /tmp/layout/lookalike
    ln -s "$PWD/protos/lookalike/__init__.py" "$PWD/protos/lookalike/v1" /tmp/layout/lookalike/
    for package in server export client; do ln -s "$PWD/$package" /tmp/layout/lookalike/; done
    export PYTHONPATH="/tmp/layout:/tmp/site:$PWD"
}

cuda_session='
import onnxruntime as o
from pathlib import Path
from lookalike.export.manifest import Manifest, Precision
o.preload_dlls()
variant = Manifest.load(Path("models/gpu-vit-b-32")).graphs["image"].variants[Precision.FP16]
session = o.InferenceSession("models/gpu-vit-b-32/" + variant.file, providers=["CUDAExecutionProvider"])
print(session.get_providers()[0])
'

install_onnxruntime_gpu() {  # into $site, the interpreter's own site-packages
    "$python" -m pip uninstall -q -y onnxruntime 2>/dev/null || true
    rm -rf "$site"/onnxruntime
    xz -d < .gpu/ort.tar.xz | tar -x -C "$site"  # beside the NVIDIA libraries preload_dlls finds
}

step() {  # step NAME TIMEOUT_S COMMAND...: run, log, never stop the script
    local name=$1 limit=$2
    shift 2
    echo "==> $name ($(date +%T))"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local status=${PIPESTATUS[0]}
    echo "==> $name: exit $status ($(date +%T))"
    return "$status"
}

case "$stage" in
export)
    use_carried_packages || exit 1
    step machine 60 bash -c 'nvidia-smi; '"$python"' -m pip list 2>/dev/null | grep -iE "^(torch|onnx|onnxruntime|transformers|numpy|pillow|protobuf|grpcio) "; nproc; grep -m1 "model name" /proc/cpuinfo'
    step export 300 "$python" -m lookalike.export --random-init vit-b-32 --precision fp16 \
        --precision fp32 --output "$model" --overwrite
    ;;
measure)
    use_carried_packages || exit 1
    site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    install_onnxruntime_gpu
    step providers 120 "$python" -c 'import onnxruntime as o; o.preload_dlls(); print(o.__version__, o.get_available_providers())'
    # Does a session get CUDA with only preload_dlls (as the engine does)? If not, say so and
    # put NVIDIA's library folders on the loader's path, so the measurements still run.
    if ! step cuda-session 120 "$python" -c "$cuda_session" || \
        ! grep -q "^CUDAExecutionProvider" "$out/cuda-session.log"; then
        echo "preload_dlls was not enough: adding NVIDIA's lib folders to LD_LIBRARY_PATH"
        LD_LIBRARY_PATH=$(find "$site/nvidia" -maxdepth 3 -type d -name lib | paste -sd:)
        export LD_LIBRARY_PATH
    fi
    step gpu-engine 300 "$python" benchmarks/gpu_engine.py --model-dir "$model" --out "$out"
    step gpu-serve 360 "$python" benchmarks/gpu_serve.py --model-dir "$model" --out "$out"
    # GPU-decoded vectors against Pillow-decoded ones (cos drift, top-k agreement)
    step fidelity 180 "$python" benchmarks/fidelity.py --quick --precision fp16 \
        --precision fp32 --decoder-on-gpu --model-dir "$model" --out "$out"
    ;;
dry-run)
    python=${PYTHON:-.venv/bin/python}
    model=models/tiny
    [[ -f $model/manifest.json ]] || "$python" -m lookalike.export --random-init tiny \
        --precision fp16 --precision fp32 --output "$model" --quiet
    step gpu-engine 300 "$python" benchmarks/gpu_engine.py --dry-run --model-dir "$model" --out "$out"
    step gpu-serve 300 "$python" benchmarks/gpu_serve.py --dry-run --model-dir "$model" --out "$out"
    ;;
*)
    echo "unknown stage $stage (export, measure or dry-run)" >&2
    exit 2
    ;;
esac
