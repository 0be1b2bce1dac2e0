"""Nearest vectors in one index, under a metadata filter: shared by every repository.

A repository pairs a `VectorIndex` with a table that knows which vector keys a filter allows
(the local SQLite store, or a built index's shard table). Small allowed sets are searched
exactly; large ones through HNSW, asking for more until enough allowed keys come back.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol

import numpy as np

from lookalike.server.index import Hit, VectorIndex

__all__ = ["KeyFilter", "nearest", "OVERSAMPLING"]

OVERSAMPLING = 4  # filtered HNSW search asks for this many times k, then widens


class KeyFilter(Protocol):
    def keys_matching(self, pairs: Mapping[str, str]) -> np.ndarray:
        """Vector keys of the items whose metadata holds every pair."""
        ...


def nearest(
    index: VectorIndex,
    table: KeyFilter,
    query: np.ndarray,
    count: int,
    *,
    filter_pairs: Mapping[str, str] | None = None,
    excluded: Collection[int] = (),
) -> tuple[list[Hit], bool]:
    """Up to `count` hits best first, none of them `excluded`, each allowed by the filter;
    and whether the search was exhaustive."""
    wanted = count + len(excluded)
    if filter_pairs:
        allowed = table.keys_matching(filter_pairs)
        if index.is_exact_for(len(allowed)):
            hits, exact = index.search_among(query, allowed, wanted), True
        else:
            hits, exact = _filtered(index, query, wanted, set(allowed.tolist()))
    else:
        hits, exact = index.search(query, wanted), index.is_exact_for()
    return [hit for hit in hits if hit.key not in excluded][:count], exact


def _filtered(
    index: VectorIndex, query: np.ndarray, wanted: int, allowed: set[int]
) -> tuple[list[Hit], bool]:
    count = wanted * OVERSAMPLING
    while True:
        hits = [hit for hit in index.search(query, count) if hit.key in allowed]
        if len(hits) >= wanted or count >= len(index):
            return hits[:wanted], index.is_exact_for()
        count *= OVERSAMPLING
