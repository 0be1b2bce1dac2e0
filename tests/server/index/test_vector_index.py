"""The USearch layer: queries one at a time and in a batch give the same answers; scores are
cosines in every dtype."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from usearch.index import Index

from lookalike.server.index.settings import DTYPES, IndexSettings, dtype_for_cpu
from lookalike.server.index.vector_index import (
    SnapshotError,
    VectorIndex,
    dtype_for_this_cpu,
    kernel,
)

DIMS = 64


def unit_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, DIMS)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("exact_search_below", [0, 10_000], ids=["hnsw", "exact"])
def test_a_batch_of_queries_answers_as_each_query_alone(exact_search_below: int) -> None:
    index = VectorIndex(DIMS, IndexSettings(dtype="f16", exact_search_below=exact_search_below))
    index.add(np.arange(3000, dtype=np.uint64) + 7, unit_rows(3000, seed=1))
    queries = unit_rows(40, seed=2)
    batched = index.search_batch(queries, 10)
    assert len(batched) == len(queries)
    for query, hits in zip(queries, batched, strict=True):
        alone = index.search(query, 10)
        assert [h.key for h in hits] == [h.key for h in alone]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in alone], atol=1e-6)
    (single,) = index.search_batch(queries[:1], 5)  # USearch unwraps a batch of one
    assert [h.key for h in single] == [h.key for h in index.search(queries[0], 5)]


def test_an_exact_search_computes_a_distance_per_vector_and_the_graph_far_fewer() -> None:
    rows = unit_rows(3000, seed=4)
    query = unit_rows(1, seed=5)[0]
    for exact_search_below, few, many in ((10_000, 3000, 3000), (0, 10, 1500)):
        index = VectorIndex(DIMS, IndexSettings(exact_search_below=exact_search_below))
        index.add(np.arange(3000, dtype=np.uint64), rows)
        assert few <= index.distances_computed(query, 10) <= many


def test_an_empty_index_answers_every_query_with_nothing() -> None:
    index = VectorIndex(DIMS, IndexSettings())
    assert index.search(unit_rows(1, seed=3)[0], 5) == []
    assert index.search_batch(unit_rows(3, seed=3), 5) == [[], [], []]


def test_onnx_runtime_imports_after_the_index_module() -> None:
    """USearch's static libstdc++ once made a later `import onnxruntime` crash (SIGSEGV); the
    index module shares the system's first. In a fresh interpreter: USearch, then the runtime."""
    code = (
        "import lookalike.server.index.vector_index\nimport onnxruntime\n"
        "print(onnxruntime.__version__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("exact_search_below", [0, 10_000], ids=["hnsw", "exact"])
def test_an_i8_index_scores_cosines(exact_search_below: int, tmp_path: Path) -> None:
    """USearch's i8 inner product is an integer dot (about 15,000 for a cosine of 1); the index
    searches i8 by its cosine instead, so scores mean what they mean for every other dtype."""
    settings = IndexSettings(dtype="i8", exact_search_below=exact_search_below)
    index = VectorIndex(DIMS, settings)
    rows = unit_rows(500, seed=4)
    index.add(np.arange(500, dtype=np.uint64), rows)
    query = rows[0]
    hits = index.search(query, 10)
    assert hits[0].key == 0
    true = rows[[hit.key for hit in hits]] @ query
    np.testing.assert_allclose([hit.score for hit in hits], true, atol=0.03)
    among = index.search_among(query, np.array([hit.key for hit in hits[1:4]]), 3)
    np.testing.assert_allclose([hit.score for hit in among], true[1:4], atol=0.03)

    index.save(tmp_path / "i8.usearch")
    assert VectorIndex.load(tmp_path / "i8.usearch", DIMS, settings).search(query, 1)[0].key == 0
    older = Index(ndim=DIMS, metric="ip", dtype="i8")  # what Lookalike wrote before
    older.add(np.arange(500, dtype=np.uint64), rows)
    older.save(str(tmp_path / "older.usearch"))
    with pytest.raises(SnapshotError, match="integer inner product"):
        VectorIndex.load(tmp_path / "older.usearch", DIMS, settings)


@pytest.mark.parametrize(
    ("bf16_kernel", "chosen"),
    [
        ("genoa", "bf16"),  # Zen 4: AVX512-BF16
        ("sapphire", "bf16"),
        ("neonbfdot", "bf16"),
        ("haswell", "f16"),  # Zen 3 and older Intel: AVX2 only
        ("skylake", "f16"),  # AVX-512 without BF16
        ("serial", "f16"),
    ],
)
def test_a_new_built_index_stores_bf16_only_where_the_cpu_multiplies_bf16(
    bf16_kernel: str, chosen: str
) -> None:
    choice = dtype_for_cpu(bf16_kernel)
    assert choice.dtype == chosen
    assert bf16_kernel in choice.reason


def test_this_cpus_choice_follows_the_kernel_usearch_runs_here() -> None:
    assert dtype_for_this_cpu(512) == dtype_for_cpu(kernel("bf16", 512))
    assert all(kernel(dtype, DIMS) for dtype in DTYPES)
