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
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np

from lookalike.export.manifest import ModelIdentity
from lookalike.server.errors import ReadOnlyError, ThumbnailMissingError, UnsupportedError
from lookalike.server.index.built_index import (
    KEY_BITS,
    IndexManifest,
    check_model,
    open_shards,
    read_manifest,
    shard_key,
    shard_of,
)
from lookalike.server.index.disk import bytes_on_disk
from lookalike.server.index.repository import (
    ClusterMap,
    EmbeddedItem,
    ItemNeighbours,
    MetadataChange,
    NeighbourPage,
    RepositoryStats,
    SearchResult,
    ShardStats,
    StoredItem,
    WriteOutcome,
)
from lookalike.server.index.search import wider_search
from lookalike.server.index.settings import IndexSettings
from lookalike.server.index.shard_search import (
    Query,
    ShardAnswer,
    ShardItems,
    ShardSearcher,
    merge_matches,
)

__all__ = ["BuiltIndexRepository", "ServedVersion", "ShardedRepository", "READ_ONLY"]

log = logging.getLogger(__name__)

T = TypeVar("T")
READ_ONLY = (
    "this server serves a built index read-only (--index); add images with lookalike ingest, "
    "then lookalike build-index makes a new version"
)


class ServedVersion(Protocol):
    """The shards of one version as a repository reaches them."""

    @property
    def manifest(self) -> IndexManifest: ...


Served = TypeVar("Served", bound=ServedVersion)


class BuiltIndexRepository(Generic[Served]):
    """What every repository of a built index shares: stats, read-only writes, and one
    version per answer (a call pins the version served when it starts, even if another is
    switched to meanwhile). Subclasses open the shards and fan `get` and `search` out to them
    (threads here, Serve replicas in `cluster.repository`)."""

    def __init__(self, index_dir: Path, identity: ModelIdentity, search: IndexSettings) -> None:
        """`search` gives the search-time settings (expansion_search, exact_search_below);
        the rest comes from the index's manifest."""
        self.index_dir, self.identity, self._search_settings = index_dir, identity, search
        self._served: Served | None = None

    @property
    def manifest(self) -> IndexManifest:
        return self._pin().manifest

    @property
    def item_count(self) -> int:
        return self._served.manifest.items if self._served else 0

    @property
    def vector_count(self) -> int:
        return self._served.manifest.vectors if self._served else 0

    async def stats(self) -> RepositoryStats:
        served = self._pin()
        manifest, replicas = served.manifest, self._replicas(served)
        return RepositoryStats(
            items=manifest.items,
            index=manifest.search_settings(self._search_settings),
            vectors=manifest.vectors,
            index_version=manifest.name,
            shards=tuple(
                ShardStats(e.number, e.items, e.vectors, replicas[e.number])
                for e in manifest.shards
            ),
            disk_bytes=await asyncio.to_thread(bytes_on_disk, self.index_dir),
        )

    def check_writable(self) -> None:
        raise ReadOnlyError(READ_ONLY)

    async def upsert(self, items: Sequence[EmbeddedItem]) -> list[WriteOutcome]:
        raise ReadOnlyError(READ_ONLY)

    async def delete(self, ids: Sequence[str]) -> list[str]:
        raise ReadOnlyError(READ_ONLY)

    async def update_metadata(self, ids: Sequence[str], change: MetadataChange) -> list[str]:
        raise ReadOnlyError(READ_ONLY)

    async def clusters(self, count: int, per_cluster: int, sample: int) -> ClusterMap:
        raise UnsupportedError(
            "clusters are computed for a data directory (--data-dir) only, not yet for a built "
            "index: serve its dataset imported into a data directory (lookalike import)"
        )

    async def save_snapshot(self) -> bool:
        return False  # nothing changes while serving

    async def neighbours(
        self,
        cursor: int,
        count: int,
        *,
        k: int,
        min_score: float,
        filter_pairs: Mapping[str, str] | None = None,
    ) -> NeighbourPage:
        """A page of one shard's items, each searched against every shard; the cursor is the
        vector key the page starts at (the shard's number sits above its own key numbers), so
        a scan walks the shards one after the other. Whole images against whole images."""
        served = self._pin()
        shards, shard = len(served.manifest.shards), cursor >> KEY_BITS
        if shard >= shards:  # a version with fewer shards was switched to mid-scan
            return NeighbourPage([], 0, None)
        wanted = dict(filter_pairs or {})
        page = await self._whole_images(served, shard, cursor, count, wanted)
        following: int | None = None
        if len(page.keys) == count:
            following = page.keys[-1] + 1
        elif shard + 1 < shards:
            following = shard_key(shard + 1, 0)
        if not page.keys:
            return NeighbourPage([], 0, following)
        results = await self._search_batch(served, page.vectors, k + 1)  # the item itself too
        items = []
        for item_id, vector, result in zip(page.ids, page.vectors, results, strict=True):
            close = _neighbours_in(item_id, result, min_score, wanted)
            size = k + 1
            while size := wider_search(len(close), k, result.matches, size, min_score):
                result = await self._search(served, vector, size, Query())
                close = _neighbours_in(item_id, result, min_score, wanted)
            if close:
                items.append(ItemNeighbours(item_id, close[:k]))
        return NeighbourPage(items, len(page.keys), following)

    async def get(self, item_id: str, *, with_vector: bool = False) -> StoredItem:
        return await self._get(self._pin(), item_id, with_vector)

    async def thumbnail(self, item_id: str) -> bytes:
        await self.get(item_id)  # NotFoundError for an unknown id comes first
        raise ThumbnailMissingError(
            "this server serves a built index (--index), which keeps no thumbnails: "
            "build-index stores vectors and metadata only"
        )

    async def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        filter_pairs: Mapping[str, str] | None = None,
        min_score: float | None = None,
        exclude_ids: Collection[str] = (),
    ) -> SearchResult:
        return await self._search(
            self._pin(), vector, k, Query(dict(filter_pairs or {}), min_score, tuple(exclude_ids))
        )

    async def search_by_id(
        self,
        item_id: str,
        k: int,
        *,
        filter_pairs: Mapping[str, str] | None = None,
        min_score: float | None = None,
        exclude_self: bool = True,
    ) -> SearchResult:
        served = self._pin()
        item = await self._get(served, item_id, True)
        assert item.vector is not None
        excluded = (item_id,) if exclude_self else ()
        return await self._search(
            served, item.vector, k, Query(dict(filter_pairs or {}), min_score, excluded)
        )

    # -- what a subclass provides ----------------------------------------------------------

    async def _get(self, served: Served, item_id: str, with_vector: bool) -> StoredItem:
        raise NotImplementedError

    async def _search(
        self, served: Served, vector: np.ndarray, k: int, query: Query
    ) -> SearchResult:
        raise NotImplementedError

    def _replicas(self, served: Served) -> list[int]:
        """How many replicas answer for each shard now."""
        raise NotImplementedError

    async def _whole_images(
        self,
        served: Served,
        shard: int,
        first_key: int,
        count: int,
        filter_pairs: Mapping[str, str],
    ) -> ShardItems:
        """`ShardSearcher.whole_images_from` on that shard."""
        raise NotImplementedError

    async def _search_batch(
        self, served: Served, vectors: np.ndarray, k: int
    ) -> list[SearchResult]:
        """`_search` for each row (no filter); one at a time unless a subclass batches."""
        return list(
            await asyncio.gather(*(self._search(served, vector, k, Query()) for vector in vectors))
        )

    # -- helpers ---------------------------------------------------------------------------

    def _pin(self) -> Served:
        if self._served is None:
            raise RuntimeError("repository is not open")
        return self._served

    @staticmethod
    def _shard_for(served: Served, item_id: str) -> int:
        return shard_of(item_id, len(served.manifest.shards))


@dataclasses.dataclass(frozen=True)
class _LocalShards:
    manifest: IndexManifest
    searchers: list[ShardSearcher]


class ShardedRepository(BuiltIndexRepository[_LocalShards]):
    """The `Repository` of the current version of a built index, its shards in this process."""

    def __init__(self, index_dir: Path, identity: ModelIdentity, search: IndexSettings) -> None:
        super().__init__(index_dir, identity, search)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            min(8, os.cpu_count() or 1), thread_name_prefix="shard"
        )

    async def open(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(None, self._open)

    def _open(self) -> int:
        manifest = read_manifest(self.index_dir)
        check_model(manifest, self.identity, self.index_dir)
        started = time.perf_counter()
        settings = manifest.search_settings(self._search_settings)
        shards = open_shards(self.index_dir, manifest, settings)
        self._served = _LocalShards(manifest, [ShardSearcher(shard) for shard in shards])
        log.info(
            "index %s version %s: %d shards, %d items, checked and mapped in %.1fs",
            self.index_dir,
            manifest.name,
            len(shards),
            manifest.items,
            time.perf_counter() - started,
        )
        return manifest.items

    async def close(self) -> None:
        if self._served is not None:
            for searcher in self._served.searchers:
                searcher.close()
        self._served = None
        self._pool.shutdown(wait=True)

    async def _get(self, served: _LocalShards, item_id: str, with_vector: bool) -> StoredItem:
        searcher = served.searchers[self._shard_for(served, item_id)]
        return await self._run(lambda: searcher.get(item_id, with_vector=with_vector))

    async def _search(
        self, served: _LocalShards, vector: np.ndarray, k: int, query: Query
    ) -> SearchResult:
        def on(searcher: ShardSearcher) -> Callable[[], ShardAnswer]:
            return lambda: searcher.search(vector, k, query)

        answers = await asyncio.gather(*(self._run(on(s)) for s in served.searchers))
        return merge_matches(answers, k)

    async def _whole_images(
        self,
        served: _LocalShards,
        shard: int,
        first_key: int,
        count: int,
        filter_pairs: Mapping[str, str],
    ) -> ShardItems:
        searcher = served.searchers[shard]
        return await self._run(lambda: searcher.whole_images_from(first_key, count, filter_pairs))

    async def _search_batch(
        self, served: _LocalShards, vectors: np.ndarray, k: int
    ) -> list[SearchResult]:
        """One index call per shard for every row (over every core)."""
        ks, queries = [k] * len(vectors), [Query()] * len(vectors)

        def on(searcher: ShardSearcher) -> Callable[[], list[ShardAnswer]]:
            return lambda: searcher.search_many(vectors, ks, queries)

        per_shard = await asyncio.gather(*(self._run(on(s)) for s in served.searchers))
        return [merge_matches(answers, k) for answers in zip(*per_shard, strict=True)]

    def _replicas(self, served: _LocalShards) -> list[int]:
        return [1] * len(served.searchers)

    async def _run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)


def _neighbours_in(
    item_id: str, result: SearchResult, min_score: float, wanted: Mapping[str, str]
) -> list[tuple[str, float]]:
    """The other items of `result` matched by their whole image at or above `min_score` whose
    metadata holds every wanted pair, best first (an item matched best by one of its regions
    is not a near-duplicate of the whole query image)."""
    return [
        (match.item.id, match.score)
        for match in result.matches
        if match.item.id != item_id
        and match.region is None
        and match.score >= min_score
        and wanted.items() <= match.item.metadata.items()
    ]
