"""The `Repository` of a built index (`lookalike-server --index`): its shards searched together.

Each shard is memory-mapped read-only (USearch `view`), so the operating system's page cache
holds what is searched and several servers on one machine share it. A query searches every
shard in a thread pool (USearch releases the GIL), each shard applying the metadata filter from
its own table, and the hits are merged by score. Items are found by id in the shard their id
hashes to. Writes are refused: a new version comes from `lookalike build-index`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from lookalike.server.built_index import (
    BuiltIndexError,
    IndexManifest,
    OpenShard,
    open_shards,
    read_manifest,
    shard_of,
)
from lookalike.server.engine import ModelIdentity
from lookalike.server.errors import NotFoundError, ReadOnlyError
from lookalike.server.index import Hit, IndexSettings
from lookalike.server.items import (
    EmbeddedItem,
    RepositoryStats,
    ScoredItem,
    SearchResult,
    StoredItem,
    WriteOutcome,
)
from lookalike.server.search import nearest

__all__ = ["ShardedRepository"]

log = logging.getLogger(__name__)

T = TypeVar("T")
READ_ONLY = (
    "this server serves a built index read-only (--index); add images with lookalike ingest, "
    "then lookalike build-index makes a new version"
)


class ShardedRepository:
    """The `Repository` of the current version of a built index."""

    def __init__(self, index_dir: Path, identity: ModelIdentity, search: IndexSettings) -> None:
        """`search` gives the search-time settings (expansion_search, exact_search_below);
        the rest comes from the index's manifest."""
        self.index_dir, self.identity, self._search_settings = index_dir, identity, search
        self._pool = concurrent.futures.ThreadPoolExecutor(
            min(8, os.cpu_count() or 1), thread_name_prefix="shard"
        )
        self._shards: list[OpenShard] = []
        self._locks: list[threading.Lock] = []  # one per shard table (a SQLite connection)
        self._manifest: IndexManifest | None = None

    async def open(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(None, self._open)

    def _open(self) -> int:
        manifest = read_manifest(self.index_dir)
        if (manifest.model, manifest.dims) != (self.identity.source, self.identity.dims):
            built = ModelIdentity(manifest.model, manifest.dims)
            raise BuiltIndexError(
                f"{self.index_dir} holds embeddings of {built.describe()}, but this server runs "
                f"{self.identity.describe()}; serve it with the model it was built with"
            )
        started = time.perf_counter()
        settings = dataclasses.replace(
            manifest.settings,
            expansion_search=self._search_settings.expansion_search,
            exact_search_below=self._search_settings.exact_search_below,
        )
        self._shards = open_shards(self.index_dir, manifest, settings)
        self._locks = [threading.Lock() for _ in self._shards]
        self._manifest = manifest
        log.info(
            "index %s version %s: %d shards, %d items, checked and mapped in %.1fs",
            self.index_dir,
            manifest.name,
            len(self._shards),
            manifest.items,
            time.perf_counter() - started,
        )
        return manifest.items

    async def close(self) -> None:
        for shard in self._shards:
            shard.table.close()
        self._shards = []
        self._pool.shutdown(wait=True)

    @property
    def manifest(self) -> IndexManifest:
        if self._manifest is None:
            raise RuntimeError("repository is not open")
        return self._manifest

    @property
    def item_count(self) -> int:
        return self.manifest.items if self._manifest else 0

    async def stats(self) -> RepositoryStats:
        settings = dataclasses.replace(
            self.manifest.settings, exact_search_below=self._search_settings.exact_search_below
        )
        return RepositoryStats(items=self.item_count, index=settings)

    async def upsert(self, items: Sequence[EmbeddedItem]) -> list[WriteOutcome]:
        raise ReadOnlyError(READ_ONLY)

    async def delete(self, ids: Sequence[str]) -> list[str]:
        raise ReadOnlyError(READ_ONLY)

    async def save_snapshot(self) -> bool:
        return False  # nothing changes while serving

    async def get(self, item_id: str, *, with_vector: bool = False) -> StoredItem:
        number = self._shard_for(item_id)
        return await self._on_shard(number, lambda shard: _get(shard, item_id, with_vector))

    async def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        filter_pairs: Mapping[str, str] | None = None,
        min_score: float | None = None,
        exclude_id: str | None = None,
    ) -> SearchResult:
        excluded: dict[int, set[int]] = {}
        if exclude_id is not None:
            number = self._shard_for(exclude_id)
            keys = await self._on_shard(number, lambda s: s.table.keys_of(exclude_id))
            excluded[number] = set(keys)
        return await self._search_all(vector, k, filter_pairs, min_score, excluded)

    async def search_by_id(
        self,
        item_id: str,
        k: int,
        *,
        filter_pairs: Mapping[str, str] | None = None,
        min_score: float | None = None,
        exclude_self: bool = True,
    ) -> SearchResult:
        number = self._shard_for(item_id)
        item = await self._on_shard(number, lambda s: _get(s, item_id, with_vector=True))
        assert item.vector is not None
        keys = await self._on_shard(number, lambda s: s.table.keys_of(item_id))
        excluded = {number: set(keys)} if exclude_self else {}
        return await self._search_all(item.vector, k, filter_pairs, min_score, excluded)

    async def _search_all(
        self,
        query: np.ndarray,
        k: int,
        filter_pairs: Mapping[str, str] | None,
        min_score: float | None,
        excluded: dict[int, set[int]],
    ) -> SearchResult:
        """Every shard's best k, merged: the global top k is among them."""

        def search_shard(shard: OpenShard) -> tuple[list[ScoredItem], bool]:
            hits, exact = nearest(
                shard.index,
                shard.table,
                query,
                k,
                filter_pairs=filter_pairs,
                excluded=excluded.get(shard.entry.number, set()),
            )
            if min_score is not None:
                hits = [hit for hit in hits if hit.score >= min_score]
            return _scored(shard, hits), exact

        found = await asyncio.gather(
            *(self._on_shard(n, search_shard) for n in range(len(self._shards)))
        )
        merged = heapq.nlargest(
            k, (match for matches, _ in found for match in matches), key=lambda m: m.score
        )
        return SearchResult(merged, all(exact for _, exact in found))

    def _shard_for(self, item_id: str) -> int:
        return shard_of(item_id, len(self.manifest.shards))

    async def _on_shard(self, number: int, work: Callable[[OpenShard], T]) -> T:
        """Run `work` on the shard in the pool, holding its table's lock."""

        def locked() -> T:
            with self._locks[number]:
                return work(self._shards[number])

        return await asyncio.get_running_loop().run_in_executor(self._pool, locked)


def _get(shard: OpenShard, item_id: str, with_vector: bool) -> StoredItem:
    item = shard.table.get(item_id)
    if item is None:
        raise NotFoundError(f"no item with id {item_id!r}")
    if not with_vector:
        return item
    keys = shard.table.keys_of(item_id)
    vector = shard.index.vectors(np.array(keys[:1], dtype=np.uint64))[0]
    return StoredItem(item.id, item.metadata, vector / np.linalg.norm(vector))


def _scored(shard: OpenShard, hits: list[Hit]) -> list[ScoredItem]:
    items = shard.table.by_keys([hit.key for hit in hits])
    return [ScoredItem(items[hit.key], hit.score) for hit in hits if hit.key in items]
