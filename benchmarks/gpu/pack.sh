#!/usr/bin/env bash
# Pack what the GPU benchmarks need on a machine that has an NVIDIA GPU, Python 3.12 and
# PyTorch but no network (the lent H200 of benchmarks/README.md), in two loads of < 64 MiB:
#   .whl/           the exporter's and server's wheels the machine lacks, nvImageCodec and
#                   nvJPEG (--image-decoder nvimgcodec) included (about 56 MB)
#   .gpu/ort.tar.xz onnxruntime-gpu without its TensorRT provider and libonnxruntime.so (the
#                   Python module does not load either), its CUDA provider trimmed to sm_90
#                   code (trim_fatbin.py): 58 MiB instead of 195 MB
# Both folders are git-ignored (.git/info/exclude). Usage, from the project root:
#   benchmarks/gpu/pack.sh [ONNXRUNTIME_GPU_VERSION] [KEEP_SM]
set -euo pipefail
version=${1:-1.31.1}
keep_sm=${2:-90}
cd "$(git rev-parse --show-toplevel)"
for ignored in /.whl/ /.gpu/; do
    grep -qx "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
done
download() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$@"
}
# The versions the exporter is verified with (pyproject.toml) where the machine's differ
# (transformers 5 there; optimum-onnx needs < 4.58), and what the server needs beside them.
rm -rf .whl && download .whl transformers==4.57.6 huggingface_hub==0.36.2 tokenizers==0.22.2 \
    optimum==2.1.0 optimum-onnx==0.1.0 open_clip_torch==3.3.0 usearch==2.26.6 numkong==7.8.6 \
    grpcio==1.85.3 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 protobuf==7.36.2 \
    nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.3.2.43
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
download "$work/whl" "onnxruntime-gpu==$version"
python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$work"/whl/*.whl "$work/site"
capi="$work/site/onnxruntime/capi"
rm -f "$capi"/libonnxruntime_providers_tensorrt.so "$capi"/libonnxruntime.so.*
python3 benchmarks/gpu/trim_fatbin.py "$capi/libonnxruntime_providers_cuda.so" "$work/cuda.so" \
    --keep-sm "$keep_sm"
mv "$work/cuda.so" "$capi/libonnxruntime_providers_cuda.so"
mkdir -p .gpu && tar -C "$work/site" -cf - . | xz -T0 -9 > .gpu/ort.tar.xz
du -sh .whl .gpu/ort.tar.xz
