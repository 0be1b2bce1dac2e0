"""Index speed vs recall: Lookalike's USearch layer against brute force and FAISS HNSW.

    python benchmarks/search.py [--quick] [--out results] [--sizes 100000,1000000]

Vectors are 512-d and clustered like real embeddings (fixed seed). For each size and index
dtype (f32, f16, i8) it reports the add rate, memory, file size, load and memory-map time, and
queries/s against recall@10 across expansion settings, measured against exact ground truth.
The same vectors go through brute force (numpy) and FAISS IndexHNSWFlat with the same
connectivity.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import avx2
from benchmarks.common import entry_point, figure_file, print_table, write_result
from lookalike.server.index.settings import IndexSettings
from lookalike.server.index.vector_index import VectorIndex

DIMS = 512
K = 10
CLUSTERS = 1000
LATENT = 48
NOISE = 5.0  # isotropic, against a latent part of about 8 per coordinate
EXPANSIONS = (16, 32, 64, 128, 256)
DTYPES = ("f32", "f16", "bf16", "i8")


def clustered(count: int, seed: int) -> np.ndarray:
    """Unit vectors with the structure of real embeddings: clusters in a low-dimensional
    latent space (48-d) projected into 512-d, plus a little isotropic noise."""
    structure = np.random.default_rng(0)  # shared by base and queries
    centres = structure.normal(size=(CLUSTERS, LATENT)).astype(np.float32)
    projection = structure.normal(size=(LATENT, DIMS)).astype(np.float32)
    rng = np.random.default_rng(seed)
    latent = centres[rng.integers(0, CLUSTERS, count)]
    latent += 0.5 * rng.normal(size=(count, LATENT)).astype(np.float32)
    rows = latent @ projection + NOISE * rng.normal(size=(count, DIMS)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def exact_top_k(
    base: np.ndarray, queries: np.ndarray, chunk: int = 200_000
) -> tuple[np.ndarray, float]:
    """Ground truth by brute force in numpy; also its queries/s."""
    started = time.perf_counter()
    best_scores = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_keys = np.zeros((len(queries), K), dtype=np.int64)
    for start in range(0, len(base), chunk):
        scores = queries @ base[start : start + chunk].T
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        merged_keys = np.concatenate([best_keys, top + start], axis=1)
        order = np.argsort(-merged_scores, axis=1)[:, :K]
        best_scores = np.take_along_axis(merged_scores, order, 1)
        best_keys = np.take_along_axis(merged_keys, order, 1)
    return best_keys, len(queries) / (time.perf_counter() - started)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def lookalike_runs(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, dtype: str) -> dict:
    settings = IndexSettings(dtype=dtype, exact_search_below=0)
    index = VectorIndex(DIMS, settings)
    keys = np.arange(len(base), dtype=np.uint64)
    started = time.perf_counter()
    index.add(keys, base)
    add_rate = len(base) / (time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "index.usearch"
        index.save(path)
        file_bytes = path.stat().st_size
        started = time.perf_counter()
        VectorIndex.load(path, DIMS, settings)
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        VectorIndex.load(path, DIMS, settings, view=True)
        view_s = time.perf_counter() - started
    curve = []
    for expansion in EXPANSIONS:
        index.set_expansion_search(expansion)
        started = time.perf_counter()
        found = np.array([[h.key for h in index.search(q, K)] for q in queries])
        qps = len(queries) / (time.perf_counter() - started)
        started = time.perf_counter()
        index.search_batch(queries, K)
        batch_qps = len(queries) / (time.perf_counter() - started)
        curve.append(
            {
                "expansion_search": expansion,
                "qps": qps,
                "batch_qps": batch_qps,
                "recall_at_10": recall(found, truth),
            }
        )
    return {
        "library": f"lookalike-usearch-{dtype}",
        "add_per_s": add_rate,
        "memory_bytes": index.memory_bytes(),
        "bytes_per_vector": index.memory_bytes() / len(base),
        "file_bytes": file_bytes,
        "load_s": load_s,
        "memory_map_s": view_s,
        "curve": curve,
    }


def faiss_runs(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, connectivity: int) -> dict:
    import faiss

    index = faiss.IndexHNSWFlat(DIMS, connectivity, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = IndexSettings().expansion_add
    started = time.perf_counter()
    index.add(base)
    add_rate = len(base) / (time.perf_counter() - started)
    curve = []
    for expansion in EXPANSIONS:
        index.hnsw.efSearch = expansion
        started = time.perf_counter()
        found = np.concatenate([index.search(q[None, :], K)[1] for q in queries])
        qps = len(queries) / (time.perf_counter() - started)
        started = time.perf_counter()
        index.search(queries, K)
        batch_qps = len(queries) / (time.perf_counter() - started)
        curve.append(
            {
                "expansion_search": expansion,
                "qps": qps,
                "batch_qps": batch_qps,
                "recall_at_10": recall(found, truth),
            }
        )
    return {"library": "faiss-hnsw-flat-f32", "add_per_s": add_rate, "curve": curve}


def faiss_level() -> str:
    import faiss

    return str(faiss.SIMDConfig.get_level_name())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--quick", action="store_true", help="smoke test: 10k vectors, 100 queries")
    parser.add_argument(
        "--emulate-avx2",
        action="store_true",
        help="USearch's and FAISS's AVX2 kernels on a newer CPU (benchmarks/avx2.py)",
    )
    args = parser.parse_args()
    emulated = os.environ.get(avx2.FLAG) == "1"
    if args.emulate_avx2 and not emulated:
        avx2.run_as_avx2(sys.argv)
    kernels = avx2.check_emulated() if emulated else {**avx2.kernels(), "faiss": faiss_level()}
    print(f"kernels: {kernels}{' (AVX2 emulated)' if emulated else ''}", flush=True)
    sizes = [10_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    query_count = 100 if args.quick else args.queries
    settings = IndexSettings()
    results, rows = [], []
    for size in sizes:
        print(f"{size:,} vectors: generating and computing exact ground truth ...", flush=True)
        base, queries = clustered(size, seed=1), clustered(query_count, seed=2)
        truth, brute_qps = exact_top_k(base, queries)
        runs = [
            {"library": "numpy-brute-force", "curve": [{"qps": brute_qps, "recall_at_10": 1.0}]}
        ]
        for dtype in DTYPES:
            print(f"  lookalike/usearch {dtype} ...", flush=True)
            runs.append(lookalike_runs(base, queries, truth, dtype))
        print("  faiss hnsw ...", flush=True)
        runs.append(faiss_runs(base, queries, truth, settings.connectivity))
        results.append({"vectors": size, "queries": query_count, "runs": runs})
        for run in runs:
            best = max(run["curve"], key=lambda point: point["recall_at_10"])
            at_64 = next((p for p in run["curve"] if p.get("expansion_search") == 64), best)
            rows.append(
                (
                    size,
                    run["library"],
                    run.get("add_per_s", float("nan")),
                    run.get("bytes_per_vector", float("nan")),
                    at_64["qps"],
                    at_64.get("batch_qps", float("nan")),
                    at_64["recall_at_10"],
                )
            )
    print()
    print_table(
        ("vectors", "library", "adds/s", "bytes/vec", "qps@ef64", "batch qps", "recall@10"), rows
    )
    print("(qps: one query per call, as a server answers one request; batch: all in one call)")
    path = write_result(
        "search",
        args.out,
        settings={
            "dims": DIMS,
            "k": K,
            "clusters": CLUSTERS,
            "sizes": sizes,
            "queries": query_count,
            "connectivity": settings.connectivity,
            "expansion_add": settings.expansion_add,
            "expansions": EXPANSIONS,
            "quick": args.quick,
            "single_query_batches": True,
            "kernels": kernels,
            "emulated_avx2": emulated,
        },
        results=results,
    )
    plot(results, path.with_suffix(".png"))
    print(f"\nwrote {path} and {path.with_suffix('.png')}")


def plot(results: list[dict], path: Path) -> None:
    with figure_file(path, columns=len(results), size=(6 * len(results), 4.5)) as axes:
        for axis, result in zip(axes, results, strict=True):
            for run in result["runs"]:
                curve = run["curve"]
                style = "*" if len(curve) == 1 else "o-"
                axis.plot(
                    [p["recall_at_10"] for p in curve],
                    [p["qps"] for p in curve],
                    style,
                    label=run["library"],
                )
            axis.set_yscale("log")
            axis.set_xlabel("recall@10")
            axis.set_ylabel("queries / s (one query per call)")
            axis.set_title(f"{result['vectors']:,} x {DIMS}-d vectors")
            axis.legend(fontsize=8)


if __name__ == "__main__":
    entry_point(main)
