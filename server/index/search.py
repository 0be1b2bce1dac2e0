"""The nearest items to a query in one index, under a metadata filter: shared by every
repository.

A repository pairs a `VectorIndex` with a table that knows which item owns each vector key and
which keys a filter allows (the local SQLite store, or a built index's shard table). Matches are
items, not vectors: an item owning several vectors (its whole image and its regions) is matched
once, by its best vector. Small allowed sets are searched exactly, large ones through HNSW;
either way the search asks for more vectors until it has `count` distinct items, or has seen
every candidate, or the scores fall under `min_score`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

import numpy as np

from lookalike.server.index.repository import ScoredItem, VectorOwner
from lookalike.server.index.vector_index import Hit, VectorIndex

__all__ = ["VectorTable", "nearest", "best_per_item", "wider_search", "OVERSAMPLING"]

OVERSAMPLING = 4  # a filtered HNSW search asks for this many times k, then widens as much again


class VectorTable(Protocol):
    def keys_matching(self, pairs: Mapping[str, str]) -> np.ndarray:
        """Vector keys of the items whose metadata holds every pair."""
        ...

    def by_keys(self, keys: Sequence[int]) -> dict[int, VectorOwner]:
        """Whose each of these vector keys is."""
        ...


def nearest(
    index: VectorIndex,
    table: VectorTable,
    query: np.ndarray,
    count: int,
    *,
    filter_pairs: Mapping[str, str] | None = None,
    min_score: float | None = None,
    exclude_ids: Collection[str] = (),
) -> tuple[list[ScoredItem], bool]:
    """Up to `count` items best first, each allowed by the filter, none of them in `exclude_ids`,
    none under `min_score`; and whether the search was exhaustive."""
    search: Callable[[int], list[Hit]]
    wanted = count + len(exclude_ids)
    if filter_pairs:
        allowed = table.keys_matching(filter_pairs)
        exact, candidates = index.is_exact_for(len(allowed)), len(allowed)
        if exact:
            asked = wanted

            def search(n: int) -> list[Hit]:
                return index.search_among(query, allowed, n)

        else:
            allowed_set, asked = set(allowed.tolist()), wanted * OVERSAMPLING
            candidates = len(index)  # what the unfiltered search below goes through

            def search(n: int) -> list[Hit]:
                return [hit for hit in index.search(query, n) if hit.key in allowed_set]

    else:
        exact, candidates, asked = index.is_exact_for(), len(index), wanted

        def search(n: int) -> list[Hit]:
            return index.search(query, n)

    while True:
        hits = search(asked)
        matches = best_per_item(hits, table, exclude_ids=exclude_ids, min_score=min_score)
        floor_reached = min_score is not None and bool(hits) and hits[-1].score < min_score
        if len(matches) >= count or asked >= candidates or floor_reached:
            return matches[:count], exact
        asked *= OVERSAMPLING


class Scored(Protocol):
    @property
    def score(self) -> float: ...


def wider_search(found: int, wanted: int, hits: Sequence[Scored], size: int, floor: float) -> int:
    """How many hits a neighbours search asks for next, or 0 when it is done: it looks further
    while fewer than `wanted` neighbours were `found` among a full page of `size` hits that all
    scored at or above `floor` (regions, the filter or the item itself took their places)."""
    if found < wanted and len(hits) == size and hits[-1].score >= floor:
        return size * OVERSAMPLING
    return 0


def best_per_item(
    hits: Sequence[Hit],
    table: VectorTable,
    *,
    exclude_ids: Collection[str] = (),
    min_score: float | None = None,
) -> list[ScoredItem]:
    """Hits (best first) to items, each once with its best vector's score and region."""
    owners = table.by_keys([hit.key for hit in hits])
    matches: dict[str, ScoredItem] = {}
    for hit in hits:
        owner = owners.get(hit.key)
        if owner is None or owner.item.id in matches or owner.item.id in exclude_ids:
            continue
        if min_score is not None and hit.score < min_score:
            break
        matches[owner.item.id] = ScoredItem(owner.item, hit.score, owner.region)
    return list(matches.values())
