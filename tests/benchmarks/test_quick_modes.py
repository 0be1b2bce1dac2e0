"""Every benchmark's --quick mode runs on the tiny model, so the scripts cannot rot."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(name: str, out: Path, *arguments: str) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / f"{name}.py"),
            "--quick",
            "--out",
            str(out),
            *arguments,
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
    document = run_benchmark("engine", tmp_path, "--model-dir", str(tiny_export))
    results = document["results"]
    assert results["gemm_rates"]["fp32_matmul_gflops"] > 0
    assert results["gemm_rates"]["int8_matmulinteger_gops"] > 0
    assert results["gemm_rates"]["int8_dynamic_matmul_gops"] > 0
    breakdowns = results["op_breakdown_ms"]["backends"]
    assert set(breakdowns) == {"onnxruntime-fp32", "onnxruntime-int8"}
    assert "MatMul" in breakdowns["onnxruntime-fp32"]
    assert "QAttention" in breakdowns["onnxruntime-int8"]
    assert all(ms > 0 for breakdown in breakdowns.values() for ms in breakdown.values())
    backends = {run["backend"] for run in results["runs"]}
    assert backends == {
        "pytorch-eager-fp32",
        "onnxruntime-fp32",
        "onnxruntime-int8",
        "onnxruntime-int8-whole-batch",
        "onnxruntime-int8-sequential",
    }
    for run in results["runs"]:
        assert run["images_per_s"] > 0
        assert run["min_cosine_to_pytorch"] > 0.99
        batch_dependent = run["backend"] == "onnxruntime-int8-whole-batch"
        if run["backend"].startswith("onnxruntime") and not batch_dependent:
            assert run["max_abs_diff_batched_vs_alone"] <= 1e-6
    pytorch = [r for r in results["runs"] if r["backend"] == "pytorch-eager-fp32"]
    assert all(r["speedup_vs_pytorch"] == pytest.approx(1.0) for r in pytorch)
    texts = results["text_runs"]  # the text tower, same backends, same token ids
    assert {(r["backend"], r["batch_size"]) for r in texts} == {
        (backend, batch)
        for backend in (
            "pytorch-eager-fp32",
            "onnxruntime-fp32",
            "onnxruntime-int8",
            "onnxruntime-int8-parallel",
        )
        for batch in (1, 8)
    }
    for run in texts:
        assert run["texts_per_s"] > 0
        assert run["min_cosine_to_pytorch"] > 0.99


def test_preprocess_benchmark_times_every_mode(tiny_export: Path, tmp_path: Path) -> None:
    document = run_benchmark("preprocess", tmp_path, "--model-dir", str(tiny_export))
    images = {r["image"] for r in document["results"]}
    assert images == {"jpeg-640x480", "jpeg-1920x1080", "jpeg-4000x3000", "png-1920x1080"}
    for result in document["results"]:
        assert set(result["ms_per_image"]) == {
            "CLIPImageProcessor",
            "lookalike-exact",
            "lookalike-fast",
        }
        assert result["embedding_cosine_fast_vs_exact"] > 0.99


def test_search_benchmark_reports_recall_curves(tmp_path: Path) -> None:
    (size,) = run_benchmark("search", tmp_path)["results"]
    libraries = {run["library"]: run for run in size["runs"]}
    assert set(libraries) == {
        "numpy-brute-force",
        "lookalike-usearch-f32",
        "lookalike-usearch-f16",
        "lookalike-usearch-bf16",
        "lookalike-usearch-i8",
        "faiss-hnsw-flat-f32",
    }
    for name in ("lookalike-usearch-f32", "lookalike-usearch-bf16", "faiss-hnsw-flat-f32"):
        recalls = [point["recall_at_10"] for point in libraries[name]["curve"]]
        assert max(recalls) > 0.9  # exact ground truth, real indexes
        assert all(point["batch_qps"] > 0 for point in libraries[name]["curve"])
    assert (
        libraries["lookalike-usearch-f16"]["file_bytes"]
        < libraries["lookalike-usearch-f32"]["file_bytes"]
    )


@pytest.mark.skipif(shutil.which("cc") is None, reason="the AVX2 emulation builds a C shim")
def test_the_search_profile_splits_a_query_with_the_kernels_of_an_avx2_cpu(tmp_path: Path) -> None:
    """The emulation is real: USearch dispatches NumKong's haswell kernels and FAISS runs at AVX2
    on this newer CPU; each query's time splits into the call, the kernels and the rest."""
    document = run_benchmark("search_profile", tmp_path, "--emulate-avx2")
    assert document["settings"]["emulated_avx2"]
    assert document["settings"]["kernels"] == {
        "f32": "haswell",
        "f16": "haswell",
        "bf16": "haswell",
        "i8": "haswell",
        "faiss": "AVX2",
    }
    rows = {row["library"]: row for row in document["results"]}
    assert set(rows) == {f"lookalike-usearch-{d}" for d in ("f32", "f16", "bf16", "i8")} | {
        "faiss-hnsw-flat-f32"
    }
    for row in rows.values():
        assert row["distances"] > 10
        assert 0 < row["call_us"] < row["us_per_query"]
        assert row["kernel_ns_per_distance_in_cache"] > 0


def test_ingest_benchmark_compares_one_server_with_ray_and_the_bulk_paths(
    tiny_export: Path, tmp_path: Path
) -> None:
    result = run_benchmark("ingest", tmp_path, "--model-dir", str(tiny_export))["results"]
    server, ray_runs, bulk = result["server"], result["ray"], result["bulk"]
    assert server["summary"].startswith(f"{result['images']} stored")
    assert all(server["stage_seconds"][s] > 0 for s in ("preprocess", "inference", "commit"))
    assert [run["actors"] for run in ray_runs] == [1]
    for run in ray_runs:
        assert run["images_per_s"] > 0
        assert run["failures"] == {}
        assert run["stage_seconds"]["embed"] > 0
        actor = run["peak_rss_mb_by_worker"]["embedding actor (model loaded)"]
        assert 0 < actor["private"] <= actor["rss"]
    assert bulk["build_index"]["vectors_per_s"] > 0
    assert bulk["import"]["store_vectors_per_s"] > 0
    memory = bulk["server_memory_mb"]
    assert len(memory) == 2
    assert all(m["VmRSS"] > 0 for m in memory.values())


def test_serve_benchmark_sweeps_concurrency_against_its_ceilings(
    tiny_export: Path, tmp_path: Path
) -> None:
    result = run_benchmark("serve", tmp_path, "--model-dir", str(tiny_export))["results"]
    runs = result["runs"]
    assert [run["concurrency"] for run in runs] == [1, 4, 16, 64]
    assert all(run["errors"] == 0 and run["images_per_s"] > 0 for run in runs)
    assert all(run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"] for run in runs)
    assert runs[-1]["mean_batch_size"] > 1  # concurrent requests were batched together
    for run in runs:  # each run against the bare engine measured around it
        engine = run["engine"]
        assert engine["bare_engine_images_per_s"] > 0
        assert run["fraction_of_bare_engine"] == pytest.approx(
            run["images_per_s"] / engine["bare_engine_images_per_s"]
        )
    lone = runs[0]["engine"]
    assert lone["lone_request_bound_ms"] == pytest.approx(
        1.5 * (lone["engine_batch_1_ms"] + lone["decode_ms"])
    )
    assert runs[0]["p99_of_lone_request_bound"] == pytest.approx(
        runs[0]["p99_ms"] / lone["lone_request_bound_ms"]
    )
    (naive,) = result["naive_images_per_s"].values()
    assert naive > 0
    assert result["server_rss"]["idle_mb"] > 0
    texts = result["text_queries"]  # search by text, alone and beside image load
    assert [(r["concurrency"], r["image_load_in_flight"]) for r in texts] == [
        (1, 0),
        (16, 0),
        (1, 16),
        (16, 16),
    ]
    assert all(r["errors"] == 0 and r["texts_per_s"] > 0 for r in texts)
    assert all(r["images_per_s_beside"] > 0 for r in texts if r["image_load_in_flight"])
    grpc_run, http_run = result["transports"]  # the same search over both, side by side
    assert [(r["transport"], r["query"], r["concurrency"]) for r in (grpc_run, http_run)] == [
        ("grpc", "image", 16),
        ("http", "image", 16),
    ]
    assert all(r["errors"] == 0 and r["searches_per_s"] > 0 for r in (grpc_run, http_run))
    assert http_run["grpc_over_this"] == pytest.approx(
        grpc_run["searches_per_s"] / http_run["searches_per_s"]
    )


def test_memory_benchmark_reports_exporter_files_and_server_rss(
    tiny_export: Path, tmp_path: Path
) -> None:
    result = run_benchmark("memory", tmp_path, "--model-dir", str(tiny_export))["results"]
    assert result["exporter"]["peak_rss_mb"] > 50
    assert set(result["model_file_mb"]) == {
        "fp32",
        "fp16",
        "int8",
        "text fp32",
        "text fp16",
        "text int8",
    }
    idle = result["server_idle_rss_mb"]
    assert set(idle) == {"fp32", "int8", "int8, no text tower"}
    assert result["text_tower_rss_mb"] == pytest.approx(idle["int8"] - idle["int8, no text tower"])
    load = result["load_run"]
    assert load["errors"] == 0
    assert len(load["rss_samples"]) >= 3


def test_revisions_benchmark_alternates_servers_of_two_revisions(
    tiny_export: Path, tmp_path: Path
) -> None:
    document = run_benchmark("revisions", tmp_path, "HEAD", "--model-dir", str(tiny_export))
    result = document["results"]
    assert len(result["runs"]["baseline"]) == len(result["runs"]["current"]) == 2
    for side in ("baseline", "current"):
        assert all(run["errors"] == 0 and run["images_per_s"] > 0 for run in result["runs"][side])
    assert result["current_over_baseline"] == pytest.approx(
        result["current"]["images_per_s_mean"] / result["baseline"]["images_per_s_mean"]
    )
    assert document["settings"]["baseline_commit"] == document["settings"]["current_commit"]


def test_cluster_benchmark_compares_shards_on_serve_with_one_process(
    tiny_export: Path, tmp_path: Path
) -> None:
    result = run_benchmark("cluster", tmp_path, "--model-dir", str(tiny_export))["results"]
    assert [run["shards"] for run in result["local"]] == [2]
    assert [(run["shards"], run["replicas"]) for run in result["cluster"]] == [(2, 1)]
    for run in result["local"] + result["cluster"]:
        assert [load["in_flight"] for load in run["loads"]] == [1, 32]
        for load in run["loads"]:
            assert load["errors"] == 0
            assert load["queries_per_s"] > 0
            assert 0 < load["p50_ms"] <= load["p99_ms"]
    assert set(result["hop_ms_by_shards"]) == {"2"}  # JSON keys


def test_regions_benchmark_compares_policies_on_pasted_objects(
    tiny_export: Path, tmp_path: Path
) -> None:
    document = run_benchmark("regions", tmp_path, "--model-dir", str(tiny_export))
    runs = {run["policy"]: run for run in document["results"]["runs"]}
    assert set(runs) >= {"whole image", "3x3 halves", "server grid", "true box"}
    assert runs["whole image"]["vectors_per_item"] == 1
    # the server's grid cuts the same boxes as the client-given 3x3 halves
    assert runs["server grid"]["vectors_per_item"] == runs["3x3 halves"]["vectors_per_item"] == 10
    assert runs["whole image"]["found_through_a_region"] == 0
    assert runs["true box"]["vectors_per_item"] == 1.5  # half the scenes hold an object
    assert all(0 <= run["recall_at_10"] <= 1 for run in runs.values())
    assert document["settings"]["random_weights"] is True


def test_duplicates_benchmark_measures_grouping_and_scan_time(
    tiny_export: Path, tmp_path: Path
) -> None:
    document = run_benchmark("duplicates", tmp_path, "--model-dir", str(tiny_export))
    found, (scan,) = document["results"]["quality"], document["results"]["scan"]
    assert found["true_pairs"] == 10 * 21  # 10 photos, each with 6 copies: 7 choose 2 pairs
    for kind in ("pairs_found", "pairs_grouped"):
        assert 0 <= found[kind]["precision"] <= 1
        assert 0 < found[kind]["recall"] <= 1
    assert found["pairs_grouped"]["pairs"] >= found["pairs_found"]["pairs"]
    assert scan["items"] == 2000
    assert scan["scan_s"] > 0
    assert scan["all_pairs_numpy_s"] > 0


@pytest.mark.parametrize("name", ["gpu_engine", "gpu_serve"])
def test_gpu_benchmarks_dry_run_on_the_cpu(name: str, tiny_export: Path, tmp_path: Path) -> None:
    """The GPU benchmarks' every step, on the CPU with the tiny model: what the lent GPU
    machine runs cannot have rotted when it comes."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / f"{name}.py"),
            "--dry-run",
            "--model-dir",
            str(tiny_export),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    benchmark = name.replace("_", "-")
    (document,) = [json.loads(p.read_text()) for p in tmp_path.glob(f"{benchmark}-*.json")]
    assert document["benchmark"] == benchmark
    assert document["settings"]["dry_run"] is True
    results = document["results"]
    if name == "gpu_engine":  # the uint8 graph against PyTorch on the sample photographs
        parity = results["parity"]
        assert set(parity) == {"fp16", "fp32"}
        assert all(p["min_cosine_to_pytorch_fp32"] >= 0.999 for p in parity.values()), parity
    else:  # the server under load answered every request, with each decoder
        assert {run["decoder"] for run in results["runs"]} == {
            "threads",
            "1 processes",
            "nvimgcodec",
        }
        assert all(run["errors"] == 0 and run["images_per_s"] > 0 for run in results["runs"])
        decoded = {(d["payload"], d["kind"]) for d in results["decoding"]}
        assert ("jpeg-4000x3000", "nvimgcodec") in decoded
