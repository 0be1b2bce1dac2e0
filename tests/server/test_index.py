"""The USearch layer: queries one at a time and in a batch give the same answers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lookalike.server.index import VectorIndex
from lookalike.server.index_settings import IndexSettings

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


def test_an_empty_index_answers_every_query_with_nothing() -> None:
    index = VectorIndex(DIMS, IndexSettings())
    assert index.search(unit_rows(1, seed=3)[0], 5) == []
    assert index.search_batch(unit_rows(3, seed=3), 5) == [[], [], []]


def test_onnx_runtime_imports_after_the_index_module() -> None:
    """USearch's static libstdc++ once made a later `import onnxruntime` crash (SIGSEGV); the
    index module shares the system's first. In a fresh interpreter: USearch, then the runtime."""
    code = "import lookalike.server.index\nimport onnxruntime\nprint(onnxruntime.__version__)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
