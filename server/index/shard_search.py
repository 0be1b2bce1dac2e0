"""One shard of a built index, searched and read on its own, and the merge of shards' answers.

A `ShardSearcher` owns one open shard (its memory-mapped index and its table) and answers for
it alone: the k best items of this shard under a filter, or an item it holds. Whoever fans a
query out, the threads of one server (`ShardedRepository`) or the replicas of a cluster, merges
the shards' answers with `merge_matches`. Thread-safe: one lock per shard.
"""

from __future__ import annotations

import dataclasses
import heapq
import threading
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from lookalike.server.errors import NotFoundError
from lookalike.server.index.built_index import OpenShard
from lookalike.server.index.repository import ScoredItem, SearchResult, StoredItem
from lookalike.server.index.search import best_per_item, nearest

__all__ = ["ShardSearcher", "ShardAnswer", "ShardItems", "Query", "merge_matches"]


@dataclasses.dataclass(frozen=True)
class Query:
    """What narrows a search besides its vector and k (sent as is to a shard's replicas)."""

    filter_pairs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    min_score: float | None = None
    exclude_ids: tuple[str, ...] = ()  # items never to return (the query's own, exclude_self)


@dataclasses.dataclass(frozen=True)
class ShardAnswer:
    matches: list[ScoredItem]  # best first
    exact: bool


@dataclasses.dataclass(frozen=True)
class ShardItems:
    """Some of a shard's items in key order: their whole images' keys and vectors."""

    keys: list[int]
    ids: list[str]
    vectors: np.ndarray  # float32[len(keys), dims], unit length


class ShardSearcher:
    def __init__(self, shard: OpenShard) -> None:
        self.shard = shard
        self.number = shard.entry.number
        self._lock = threading.Lock()  # the table's SQLite connection has one user at a time

    def close(self) -> None:
        self.shard.table.close()

    def search(self, vector: np.ndarray, k: int, query: Query = Query()) -> ShardAnswer:
        """This shard's k best items whose metadata holds the filter (none of them
        `exclude_ids`, where this shard holds them)."""
        with self._lock:
            matches, exact = nearest(
                self.shard.index,
                self.shard.table,
                vector,
                k,
                filter_pairs=query.filter_pairs,
                min_score=query.min_score,
                exclude_ids=query.exclude_ids,
            )
        return ShardAnswer(matches, exact)

    def search_many(
        self, vectors: np.ndarray, ks: Sequence[int], queries: Sequence[Query]
    ) -> list[ShardAnswer]:
        """`search` for each row of `vectors` (queries that arrived together), in order: the
        plain ones (no filter, floor or exclusion) in one index call per k over every core,
        the others one by one, and so are those whose k vectors were not k distinct items.
        Same answers as one at a time."""
        answers: dict[int, ShardAnswer] = {}
        plain: dict[int, list[int]] = {}
        for row, (k, query) in enumerate(zip(ks, queries, strict=True)):
            if query == Query():
                plain.setdefault(k, []).append(row)
            else:
                answers[row] = self.search(vectors[row], k, query)
        index = self.shard.index
        for k, rows in plain.items():
            with self._lock:
                found = index.search_batch(vectors[rows], k)
                exact = index.is_exact_for()
                matches = [best_per_item(hits, self.shard.table) for hits in found]
            for row, items in zip(rows, matches, strict=True):
                short = len(items) < k and k < len(index)  # vectors of the same items
                answers[row] = self.search(vectors[row], k) if short else ShardAnswer(items, exact)
        return [answers[row] for row in range(len(queries))]

    def whole_images_from(
        self, first_key: int, count: int, filter_pairs: Mapping[str, str]
    ) -> ShardItems:
        """Up to `count` of this shard's items from the vector key `first_key` on, those the
        filter allows, with their whole images' vectors (a scan over the shard's items)."""
        with self._lock:
            rows = self.shard.table.whole_images_from(first_key, count, filter_pairs)
        keys = [key for key, _ in rows]
        if not keys:
            return ShardItems([], [], np.empty((0, self.shard.index.dims), dtype=np.float32))
        vectors = self.shard.index.vectors(np.array(keys, dtype=np.uint64))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return ShardItems(keys, [item_id for _, item_id in rows], vectors)

    def get(self, item_id: str, *, with_vector: bool = False) -> StoredItem:
        with self._lock:
            item = self.shard.table.get(item_id)
            if item is None:
                raise NotFoundError(f"no item with id {item_id!r}")
            if not with_vector:
                return item
            keys = self.shard.table.keys_of(item_id)
        vector = self.shard.index.vectors(np.array(keys[:1], dtype=np.uint64))[0]
        return dataclasses.replace(item, vector=vector / np.linalg.norm(vector))


def merge_matches(answers: Iterable[ShardAnswer], k: int) -> SearchResult:
    """The k best of every shard's k best: the global top k is among them."""
    answers = list(answers)
    matches = (match for answer in answers for match in answer.matches)
    best = heapq.nlargest(k, matches, key=lambda match: match.score)
    return SearchResult(best, all(answer.exact for answer in answers))
