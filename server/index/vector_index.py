"""The vector index: USearch HNSW (cosine) with exact search where it matters.

Batch-first and typed: keys are the database's integer vector keys (never item ids), vectors
are float32 rows of unit norm, results are small dataclasses. Not thread-safe: one owner
(the repository's data thread) calls it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from usearch.compiled import hardware_acceleration
from usearch.index import Index, Matches, MetricKind, ScalarKind

from lookalike.export.durable import fsync_directory, fsync_file
from lookalike.server.index.settings import DtypeChoice, IndexSettings, dtype_for_cpu

__all__ = ["Hit", "VectorIndex", "SnapshotError", "dtype_for_this_cpu", "kernel"]

log = logging.getLogger(__name__)


class SnapshotError(Exception):
    """The snapshot file is missing, unreadable, or was built for other vectors."""


# Every stored and query vector has unit norm, so the inner product is the cosine, without two
# norms per distance (15% more queries/s, benchmarks/search.py). Snapshots written with "cos"
# keep it: USearch reads the metric from the file. Not for i8: USearch stores 127 * x truncated,
# and its i8 inner product is the integer dot of those (about 15,000 for a cosine of 1), where
# its i8 cosine divides by both quantized norms: a cosine again, and a better ranking
# (benchmarks/fidelity.py).
SEARCHED_AS = "ip"
I8_SEARCHED_AS = "cos"


def searched_as(dtype: str) -> str:
    return I8_SEARCHED_AS if dtype == "i8" else SEARCHED_AS


_SCALAR_KINDS = {
    "f32": ScalarKind.F32,
    "f16": ScalarKind.F16,
    "bf16": ScalarKind.BF16,
    "i8": ScalarKind.I8,
}
_METRIC_KINDS = {"ip": MetricKind.IP, "cos": MetricKind.Cos}


def kernel(dtype: str, dims: int) -> str:
    """The instruction set of the distance kernel USearch runs for `dtype` on this CPU, as
    NumKong names it: haswell (AVX2), skylake (AVX-512), icelake (AVX-512 VNNI), genoa
    (AVX-512 BF16), sapphire, neon..., or serial."""
    metric = _METRIC_KINDS[searched_as(dtype)]
    return str(hardware_acceleration(dtype=_SCALAR_KINDS[dtype], ndim=dims, metric_kind=metric))


def dtype_for_this_cpu(dims: int) -> DtypeChoice:
    return dtype_for_cpu(kernel("bf16", dims))


@dataclasses.dataclass(frozen=True)
class Hit:
    key: int
    score: float  # cosine similarity


def _hits(keys: np.ndarray, distances: np.ndarray) -> list[Hit]:
    """Cosine scores within [-1, 1], which float rounding oversteps (1.0000001)."""
    pairs = zip(keys.tolist(), distances.tolist(), strict=True)
    return [Hit(key, min(1.0, max(-1.0, 1.0 - distance))) for key, distance in pairs]


class VectorIndex:
    def __init__(self, dims: int, settings: IndexSettings, *, index: Index | None = None) -> None:
        self.dims, self.settings = dims, settings
        self._index = index or Index(
            ndim=dims,
            metric=searched_as(settings.dtype),
            dtype=settings.dtype,
            connectivity=settings.connectivity,
            expansion_add=settings.expansion_add,
            expansion_search=settings.expansion_search,
        )

    def __len__(self) -> int:
        return len(self._index)

    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)

    def set_expansion_search(self, expansion: int) -> None:
        """Candidates examined per query: higher is slower and more exact."""
        self._index.expansion_search = expansion  # type: ignore[misc]

    def keys(self) -> np.ndarray:
        return np.asarray(self._index.keys, dtype=np.uint64)

    def add(self, keys: np.ndarray, vectors: np.ndarray, *, threads: int = 0) -> None:
        """`threads=0` inserts on every core; `threads=1` builds the same graph, byte for
        byte, from the same adds in the same order (several threads race to link neighbours,
        so each build differs, and so does its recall)."""
        if len(keys):
            self._index.add(
                keys.astype(np.uint64), vectors.astype(np.float32, copy=False), threads=threads
            )

    def remove(self, keys: np.ndarray) -> None:
        if len(keys):
            self._index.remove(keys.astype(np.uint64))

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        """The stored vectors as float32 (an i8 one scaled back to unit norm)."""
        vectors = self._index.get(keys.astype(np.uint64), dtype="f32")
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(keys), self.dims)
        if self.settings.dtype == "i8":
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors

    def is_exact_for(self, candidates: int | None = None) -> bool:
        return (
            candidates if candidates is not None else len(self)
        ) < self.settings.exact_search_below

    def search(self, query: np.ndarray, count: int) -> list[Hit]:
        """The `count` nearest stored vectors; exhaustive for small collections.

        One query runs on the calling thread: USearch's default hands every call to a worker
        per core, which costs more than a single query's search (1.4x the queries/s on a
        Zen 3, 6% here).
        """
        if len(self) == 0 or count <= 0:
            return []
        count = min(count, len(self))
        matches = self._index.search(query, count, exact=self.is_exact_for(), threads=1)
        return _hits(matches.keys, matches.distances)

    def distances_computed(self, query: np.ndarray, count: int) -> int:
        """How many distances `search(query, count)` computes: the work a search does, for
        profiles (`benchmarks/search_profile.py`)."""
        count = min(count, len(self))
        found = self._index.search(query, count, exact=self.is_exact_for(), threads=1)
        return int(found.computed_distances)

    def search_batch(self, queries: np.ndarray, count: int) -> list[list[Hit]]:
        """`search` for each row of `queries` (float32[N, D]) in one call, spread over every
        core: for queries that arrive together."""
        if len(self) == 0 or count <= 0:
            return [[] for _ in queries]
        count = min(count, len(self))
        found = self._index.search(queries, count, exact=self.is_exact_for(), threads=0)
        if isinstance(found, Matches):  # USearch unwraps a batch of one
            return [_hits(found.keys, found.distances)]
        return [_hits(matches.keys, matches.distances) for matches in found]

    def search_among(self, query: np.ndarray, candidates: np.ndarray, count: int) -> list[Hit]:
        """Exact search restricted to `candidates`, which must be stored keys (e.g. the keys a
        metadata filter allows: the repository keeps the index and the database in step)."""
        if len(candidates) == 0 or count <= 0:
            return []
        scores = self.vectors(candidates) @ query.astype(np.float32)
        top = np.argsort(-scores, kind="stable")[:count]
        return [Hit(int(candidates[i]), float(scores[i])) for i in top]

    def save(self, path: Path) -> None:
        """Atomically: write a temporary file, fsync it, rename it over `path`, fsync the dir."""
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            self._index.save(str(temporary))
            fsync_file(temporary)
        except Exception as exc:
            temporary.unlink(missing_ok=True)
            raise OSError(f"could not write the index snapshot {path}: {exc}") from exc
        temporary.replace(path)
        fsync_directory(path.parent)

    @classmethod
    def load(
        cls, path: Path, dims: int, settings: IndexSettings, *, view: bool = False
    ) -> VectorIndex:
        """Read a snapshot into memory, or with `view` memory-map it read-only."""
        if not path.is_file():
            raise SnapshotError(f"no snapshot at {path}")
        try:
            index = Index.restore(
                str(path),
                view=view,
                connectivity=settings.connectivity,
                expansion_add=settings.expansion_add,
                expansion_search=settings.expansion_search,
            )
        except Exception as exc:  # USearch raises ValueError/RuntimeError on damaged files
            raise SnapshotError(f"snapshot {path} is unreadable: {exc}") from exc
        if index is None:
            raise SnapshotError(f"snapshot {path} is unreadable")
        if index.ndim != dims:
            raise SnapshotError(f"snapshot {path} holds {index.ndim}-d vectors, the model {dims}-d")
        if str(index.dtype).lower().split(".")[-1] != settings.dtype:
            raise SnapshotError(
                f"snapshot {path} stores {index.dtype}, configured {settings.dtype}"
            )
        if settings.dtype == "i8" and index.metric_kind != MetricKind.Cos:
            raise SnapshotError(
                f"snapshot {path} is an i8 index searched by integer inner product (an older "
                "Lookalike's: its scores were not cosines)"
            )
        return cls(dims, settings, index=index)
