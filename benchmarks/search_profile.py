"""Where one query's time goes: Lookalike's index (USearch) against FAISS HNSW, per dtype.

    python benchmarks/search_profile.py [--size 100000] [--emulate-avx2] [--quick]

A single query (one call, as a server answers one request) is split into:

- the call: the same search on a 3-vector index (the Python wrapper, argument conversion,
  result objects: what a call costs whatever the index holds);
- distances: how many the search computes (USearch's `computed_distances`, FAISS's
  `hnsw_stats.ndis`) times what one costs with the vectors in cache (an exhaustive search of
  2,000 vectors, per vector): the distance kernel itself;
- the rest: fetching each neighbour's vector from memory and walking the graph.

With `--emulate-avx2` the kernels are the ones an AVX2 CPU gets (benchmarks/avx2.py). Run under
`perf record -g` for the same split by function.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import avx2
from benchmarks.common import entry_point, figure_file, print_table, write_result
from benchmarks.search import DIMS, DTYPES, K, clustered
from lookalike.server.index.settings import IndexSettings
from lookalike.server.index.vector_index import VectorIndex

HOT = 2_000  # vectors searched exhaustively to time the kernel alone (in cache)
EXPANSION = 16


def per_call(run: Callable[[np.ndarray], object], queries: np.ndarray, repeat: int = 3) -> float:
    """Seconds per call, the best of `repeat` passes over `queries`."""
    for query in queries[:50]:
        run(query)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for query in queries:
            run(query)
        best = min(best, (time.perf_counter() - started) / len(queries))
    return best


def usearch_split(base: np.ndarray, queries: np.ndarray, dtype: str) -> dict:
    settings = IndexSettings(dtype=dtype, exact_search_below=0, expansion_search=EXPANSION)
    index = VectorIndex(DIMS, settings)
    index.add(np.arange(len(base), dtype=np.uint64), base)
    counts = [index.distances_computed(q, K) for q in queries]
    total = per_call(lambda q: index.search(q, K), queries)
    tiny = VectorIndex(DIMS, settings)
    tiny.add(np.arange(3, dtype=np.uint64), base[:3])
    call = per_call(lambda q: tiny.search(q, K), queries)
    hot = VectorIndex(DIMS, IndexSettings(dtype=dtype, exact_search_below=HOT + 1))
    hot.add(np.arange(HOT, dtype=np.uint64), base[:HOT])
    kernel = (per_call(lambda q: hot.search(q, K), queries[:200]) - call) / HOT
    return split(f"lookalike-usearch-{dtype}", total, call, float(np.mean(counts)), kernel)


def faiss_split(base: np.ndarray, queries: np.ndarray) -> dict:
    import faiss

    def hnsw(vectors: np.ndarray):
        index = faiss.IndexHNSWFlat(DIMS, IndexSettings().connectivity, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = IndexSettings().expansion_add
        index.add(vectors)
        index.hnsw.efSearch = EXPANSION
        return index

    index = hnsw(base)
    faiss.cvar.hnsw_stats.reset()
    for query in queries:
        index.search(query[None, :], K)
    distances = faiss.cvar.hnsw_stats.ndis / len(queries)
    total = per_call(lambda q: index.search(q[None, :], K), queries)
    tiny = hnsw(base[:3])
    call = per_call(lambda q: tiny.search(q[None, :], K), queries)
    flat = faiss.IndexFlatIP(DIMS)
    flat.add(base[:HOT])
    kernel = (per_call(lambda q: flat.search(q[None, :], K), queries[:200]) - call) / HOT
    return split("faiss-hnsw-flat-f32", total, call, distances, kernel)


def split(library: str, total: float, call: float, distances: float, kernel: float) -> dict:
    kernels = distances * kernel
    return {
        "library": library,
        "us_per_query": total * 1e6,
        "queries_per_s": 1 / total,
        "call_us": call * 1e6,
        "distances": distances,
        "kernel_ns_per_distance_in_cache": kernel * 1e9,
        "kernels_us": kernels * 1e6,
        "memory_and_walk_us": (total - call - kernels) * 1e6,
        "memory_and_walk_ns_per_distance": (total - call - kernels) / distances * 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--quick", action="store_true", help="smoke test: 5k vectors")
    parser.add_argument("--emulate-avx2", action="store_true", help="see benchmarks/avx2.py")
    args = parser.parse_args()
    emulated = os.environ.get(avx2.FLAG) == "1"
    if args.emulate_avx2 and not emulated:
        avx2.run_as_avx2(sys.argv)
    kernels = avx2.check_emulated() if emulated else avx2.kernels()
    size, count = (5_000, 200) if args.quick else (args.size, args.queries)
    base, queries = clustered(size, seed=1), clustered(count, seed=2)
    results = []
    for dtype in DTYPES:
        print(f"  lookalike/usearch {dtype} ({kernels[dtype]}) ...", flush=True)
        results.append(usearch_split(base, queries, dtype))
    print("  faiss ...", flush=True)
    results.append(faiss_split(base, queries))
    print()
    print(f"{size:,} x {DIMS}-d, ef {EXPANSION}, one query per call; kernels {kernels}")
    columns = (
        "library",
        "us_per_query",
        "call_us",
        "distances",
        "kernel_ns_per_distance_in_cache",
        "kernels_us",
        "memory_and_walk_us",
    )
    print_table(
        ("library", "us/query", "call", "distances", "ns/distance (cache)", "kernels", "rest"),
        [[row[c] for c in columns] for row in results],
    )
    path = write_result(
        "search_profile",
        args.out,
        settings={
            "size": size,
            "queries": count,
            "expansion_search": EXPANSION,
            "k": K,
            "kernels": kernels,
            "emulated_avx2": emulated,
            "quick": args.quick,
        },
        results=results,
    )
    plot(results, kernels, path.with_suffix(".png"))
    print(f"\nwrote {path}")


def plot(results: list[dict], kernels: dict[str, str], path: Path) -> None:
    with figure_file(path, size=(8, 4.5)) as (axes,):
        labels = [row["library"].replace("lookalike-usearch-", "usearch ") for row in results]
        bottom = np.zeros(len(results))
        for key, label in (
            ("call_us", "the call"),
            ("kernels_us", "distance kernels (in cache)"),
            ("memory_and_walk_us", "memory and graph walk"),
        ):
            heights = np.array([row[key] for row in results])
            axes.bar(labels, heights, bottom=bottom, label=label)
            bottom += heights
        axes.set_ylabel("µs per query (one query per call)")
        axes.set_title(f"kernels: {', '.join(f'{k} {v}' for k, v in kernels.items())}", fontsize=8)
        axes.legend(fontsize=8)


if __name__ == "__main__":
    entry_point(main)
