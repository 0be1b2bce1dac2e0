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
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from lookalike.server.built_index import (
    IndexManifest,
    check_model,
    open_shards,
    read_manifest,
    shard_of,
)
from lookalike.server.engine import ModelIdentity
from lookalike.server.errors import ReadOnlyError
from lookalike.server.index import IndexSettings
from lookalike.server.items import (
    EmbeddedItem,
    RepositoryStats,
    SearchResult,
    StoredItem,
    WriteOutcome,
)
from lookalike.server.shard_search import ShardAnswer, ShardSearcher, merge_matches

__all__ = ["BuiltIndexRepository", "ShardedRepository", "READ_ONLY"]

log = logging.getLogger(__name__)

T = TypeVar("T")
READ_ONLY = (
    "this server serves a built index read-only (--index); add images with lookalike ingest, "
    "then lookalike build-index makes a new version"
)


class BuiltIndexRepository:
    """What every repository of a built index shares: its manifest, its stats, read-only
    writes and search by id. Subclasses open the shards and fan `get` and `search` out to
    them (threads here, Serve replicas in `cluster.serving`)."""

    def __init__(self, index_dir: Path, identity: ModelIdentity, search: IndexSettings) -> None:
        """`search` gives the search-time settings (expansion_search, exact_search_below);
        the rest comes from the index's manifest."""
        self.index_dir, self.identity, self._search_settings = index_dir, identity, search
        self._manifest: IndexManifest | None = None

    @property
    def manifest(self) -> IndexManifest:
        if self._manifest is None:
            raise RuntimeError("repository is not open")
        return self._manifest

    @property
    def item_count(self) -> int:
        return self.manifest.items if self._manifest else 0

    async def stats(self) -> RepositoryStats:
        settings = self.manifest.search_settings(self._search_settings)
        return RepositoryStats(items=self.item_count, index=settings)

    async def upsert(self, items: Sequence[EmbeddedItem]) -> list[WriteOutcome]:
        raise ReadOnlyError(READ_ONLY)

    async def delete(self, ids: Sequence[str]) -> list[str]:
        raise ReadOnlyError(READ_ONLY)

    async def save_snapshot(self) -> bool:
        return False  # nothing changes while serving

    async def get(self, item_id: str, *, with_vector: bool = False) -> StoredItem:
        raise NotImplementedError

    async def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        filter_pairs: Mapping[str, str] | None = None,
        min_score: float | None = None,
        exclude_id: str | None = None,
    ) -> SearchResult:
        raise NotImplementedError

    async def search_by_id(
        self,
        item_id: str,
        k: int,
        *,
        filter_pairs: Mapping[str, str] | None = None,
        min_score: float | None = None,
        exclude_self: bool = True,
    ) -> SearchResult:
        item = await self.get(item_id, with_vector=True)
        assert item.vector is not None
        excluded = item_id if exclude_self else None
        return await self.search(
            item.vector, k, filter_pairs=filter_pairs, min_score=min_score, exclude_id=excluded
        )

    def _shard_for(self, item_id: str) -> int:
        return shard_of(item_id, len(self.manifest.shards))


class ShardedRepository(BuiltIndexRepository):
    """The `Repository` of the current version of a built index, its shards in this process."""

    def __init__(self, index_dir: Path, identity: ModelIdentity, search: IndexSettings) -> None:
        super().__init__(index_dir, identity, search)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            min(8, os.cpu_count() or 1), thread_name_prefix="shard"
        )
        self._searchers: list[ShardSearcher] = []

    async def open(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(None, self._open)

    def _open(self) -> int:
        manifest = read_manifest(self.index_dir)
        check_model(manifest, self.identity, self.index_dir)
        started = time.perf_counter()
        settings = manifest.search_settings(self._search_settings)
        shards = open_shards(self.index_dir, manifest, settings)
        self._searchers = [ShardSearcher(shard) for shard in shards]
        self._manifest = manifest
        log.info(
            "index %s version %s: %d shards, %d items, checked and mapped in %.1fs",
            self.index_dir,
            manifest.name,
            len(self._searchers),
            manifest.items,
            time.perf_counter() - started,
        )
        return manifest.items

    async def close(self) -> None:
        for searcher in self._searchers:
            searcher.close()
        self._searchers = []
        self._pool.shutdown(wait=True)

    async def get(self, item_id: str, *, with_vector: bool = False) -> StoredItem:
        searcher = self._searchers[self._shard_for(item_id)]
        return await self._run(lambda: searcher.get(item_id, with_vector=with_vector))

    async def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        filter_pairs: Mapping[str, str] | None = None,
        min_score: float | None = None,
        exclude_id: str | None = None,
    ) -> SearchResult:
        def on(searcher: ShardSearcher) -> Callable[[], ShardAnswer]:
            return lambda: searcher.search(
                vector, k, filter_pairs=filter_pairs, min_score=min_score, exclude_id=exclude_id
            )

        answers = await asyncio.gather(*(self._run(on(s)) for s in self._searchers))
        return merge_matches(answers, k)

    async def _run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)
