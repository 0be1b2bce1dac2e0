"""Every benchmark's --quick mode runs on the tiny model, so the scripts cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(name: str, model_dir: Path, out: Path) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / f"{name}.py"),
            "--quick",
            "--model-dir",
            str(model_dir),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (document,) = [json.loads(p.read_text()) for p in out.glob(f"{name}-*.json")]
    assert list(out.glob(f"{name}-*.png"))
    assert document["benchmark"] == name
    assert document["machine"]["logical_cores"] >= 1
    assert "onnxruntime" in document["versions"]
    return document


def test_engine_benchmark_compares_backends_against_gemm_rates(
    tiny_export: Path, tmp_path: Path
) -> None:
    document = run_benchmark("engine", tiny_export, tmp_path)
    results = document["results"]
    assert results["gemm_rates"]["fp32_matmul_gflops"] > 0
    assert results["gemm_rates"]["int8_matmulinteger_gops"] > 0
    backends = {run["backend"] for run in results["runs"]}
    assert backends == {"pytorch-eager-fp32", "onnxruntime-fp32", "onnxruntime-int8"}
    for run in results["runs"]:
        assert run["images_per_s"] > 0
        assert run["min_cosine_to_pytorch"] > 0.99
    pytorch = [r for r in results["runs"] if r["backend"] == "pytorch-eager-fp32"]
    assert all(r["speedup_vs_pytorch"] == pytest.approx(1.0) for r in pytorch)


def test_preprocess_benchmark_times_every_mode(tiny_export: Path, tmp_path: Path) -> None:
    document = run_benchmark("preprocess", tiny_export, tmp_path)
    images = {r["image"] for r in document["results"]}
    assert images == {"jpeg-640x480", "jpeg-1920x1080", "jpeg-4000x3000", "png-1920x1080"}
    for result in document["results"]:
        assert set(result["ms_per_image"]) == {
            "CLIPImageProcessor",
            "lookalike-exact",
            "lookalike-fast",
        }
        assert result["embedding_cosine_fast_vs_exact"] > 0.99
