"""Items and their vectors kept in step: SQLite (truth) + USearch (accelerator).

Every operation runs on one data thread, so the database connection and the index have a
single owner and never see concurrent mutation. Writes are durable in SQLite before the index
changes and before the caller is answered; the index is rebuilt from SQLite whenever its
snapshot is missing, damaged or behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from lookalike.export.manifest import ModelIdentity
from lookalike.server.errors import NotFoundError, ThumbnailMissingError
from lookalike.server.index.clusters import spherical_kmeans
from lookalike.server.index.disk import bytes_on_disk
from lookalike.server.index.repository import (
    Cluster,
    ClusterMap,
    EmbeddedItem,
    ImageFacts,
    ItemNeighbours,
    MetadataChange,
    NeighbourPage,
    RepositoryStats,
    ScoredItem,
    SearchResult,
    StoredItem,
    VectorOwner,
    WriteOutcome,
)
from lookalike.server.index.search import nearest, wider_search
from lookalike.server.index.settings import IndexSettings
from lookalike.server.index.store import ItemStore
from lookalike.server.index.vector_index import Hit, SnapshotError, VectorIndex

__all__ = ["LocalRepository"]

log = logging.getLogger(__name__)

DATABASE_FILE = "items.sqlite3"
SNAPSHOT_FILE = "index.usearch"
SAMPLE_SEED = 0  # the sample clustered: the same for the same collection

T = TypeVar("T")


class LocalRepository:
    """The `Repository` of one data directory on this machine."""

    def __init__(self, data_dir: Path, identity: ModelIdentity, settings: IndexSettings) -> None:
        self.data_dir, self.identity, self.settings = data_dir, identity, settings
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="data")
        self._store: ItemStore | None = None
        self._index: VectorIndex | None = None
        self._dirty = False  # the index has changed since its last snapshot
        self._items = self._vectors = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> int:
        """Open the database, load or rebuild the index, catch it up; return the item count."""
        return await self._run(self._open)

    def _open(self) -> int:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        store = ItemStore(self.data_dir / DATABASE_FILE, self.identity)
        snapshot = self.data_dir / SNAPSHOT_FILE
        try:
            index = VectorIndex.load(snapshot, self.identity.dims, self.settings)
        except SnapshotError as exc:
            if store.count():
                log.warning("%s; rebuilding the index from the database", exc)
            index = VectorIndex(self.identity.dims, self.settings)
        self._store, self._index = store, index
        self._catch_up()
        self._items, self._vectors = store.count(), store.vector_count()
        return self._items

    def _catch_up(self) -> None:
        """Make the index hold exactly the database's keys."""
        store, index = self._ready()
        in_db, in_index = store.all_keys(), index.keys()
        stale = np.setdiff1d(in_index, in_db)
        missing = np.setdiff1d(in_db, in_index)
        index.remove(stale)
        for keys, vectors in store.vectors(missing, self.identity.dims):
            index.add(keys, vectors)
        if len(stale) or len(missing):
            self._dirty = True
            log.info("index caught up: %d added, %d removed", len(missing), len(stale))

    async def save_snapshot(self) -> bool:
        """Write the index snapshot if it changed; return whether it wrote one."""
        return await self._run(self._save_snapshot)

    def _save_snapshot(self) -> bool:
        _, index = self._ready()
        if not self._dirty:
            return False
        index.save(self.data_dir / SNAPSHOT_FILE)
        self._dirty = False
        return True

    async def close(self) -> None:
        if self._store is not None:
            try:
                await self.save_snapshot()
            except OSError as exc:  # e.g. a full disk: the database has every item anyway
                log.warning("index snapshot not saved (%s); the next start rebuilds it", exc)
            await self._run(self._store.close)
            self._store = self._index = None
        self._thread.shutdown(wait=True)

    # -- operations ------------------------------------------------------------------------

    @property
    def item_count(self) -> int:
        return self._items

    @property
    def vector_count(self) -> int:
        return self._vectors

    async def stats(self) -> RepositoryStats:
        return RepositoryStats(
            items=self._items,
            index=self.settings,
            vectors=self._vectors,
            disk_bytes=await asyncio.to_thread(bytes_on_disk, self.data_dir),
        )

    def check_writable(self) -> None:
        pass  # a data directory takes writes

    async def upsert(self, items: Sequence[EmbeddedItem]) -> list[WriteOutcome]:
        return await self._run(lambda: self._upsert(items))

    def _upsert(self, items: Sequence[EmbeddedItem]) -> list[WriteOutcome]:
        store, index = self._ready()
        written = store.upsert(items)  # durable from here on
        index.remove(written.removed_keys)
        index.add(written.keys, written.vectors)
        self._items += written.new_items
        self._vectors += len(written.keys) - len(written.removed_keys)
        self._dirty = True
        return [
            WriteOutcome(item.id, replaced)
            for item, replaced in zip(items, written.replaced, strict=True)
        ]

    async def clusters(self, count: int, per_cluster: int, sample: int) -> ClusterMap:
        """The sample's vectors are read on the data thread, clustered beside it (writes go
        on meanwhile), and the representatives looked up on it again."""
        keys, vectors, total = await self._run(lambda: self._sample(sample))
        if not len(keys):
            return ClusterMap([], 0, total)
        partition = await asyncio.to_thread(spherical_kmeans, vectors, count)
        groups = []
        for cluster in range(len(partition.centres)):
            members = np.flatnonzero(partition.labels == cluster)
            nearest = members[np.argsort(-partition.similarity[members], kind="stable")]
            groups.append((len(members), nearest[:per_cluster]))
        chosen = [int(keys[i]) for _, nearest in groups for i in nearest]
        owners = await self._run(lambda: self._ready()[0].by_keys(chosen))
        clusters = [
            Cluster(
                size,
                [
                    ScoredItem(owners[int(keys[i])].item, float(partition.similarity[i]))
                    for i in nearest
                    if int(keys[i]) in owners  # deleted since it was sampled
                ],
            )
            for size, nearest in groups
            if size
        ]
        clusters.sort(
            key=lambda c: (-c.size, c.representatives[0].item.id if c.representatives else "")
        )
        return ClusterMap(clusters, len(keys), total)

    def _sample(self, sample: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Up to `sample` whole images drawn uniformly (the same ones for the same collection):
        their keys, their vectors and how many there are in all."""
        store, _ = self._ready()
        keys = store.whole_image_keys()
        total = len(keys)
        if total > sample:
            keys = np.sort(np.random.default_rng(SAMPLE_SEED).choice(keys, sample, replace=False))
        found: dict[int, np.ndarray] = {}
        for chunk_keys, chunk in store.vectors(keys, self.identity.dims):
            found.update(zip(chunk_keys.tolist(), chunk, strict=True))
        present = np.array([key for key in keys.tolist() if key in found], dtype=np.uint64)
        vectors = np.zeros((len(present), self.identity.dims), dtype=np.float32)
        for row, key in enumerate(present.tolist()):
            vectors[row] = found[key]
        return present, vectors, total

    async def update_metadata(self, ids: Sequence[str], change: MetadataChange) -> list[str]:
        return await self._run(lambda: self._ready()[0].update_metadata(ids, change))

    async def delete(self, ids: Sequence[str]) -> list[str]:
        def delete() -> list[str]:
            store, index = self._ready()
            removed = store.delete(ids)
            keys = [key for item_keys in removed.values() for key in item_keys]
            index.remove(np.asarray(keys, dtype=np.uint64))
            self._items -= len(removed)
            self._vectors -= len(keys)
            self._dirty = self._dirty or bool(removed)
            return list(removed)

        return await self._run(delete)

    async def get(self, item_id: str, *, with_vector: bool = False) -> StoredItem:
        return await self._run(lambda: self._get(item_id, with_vector=with_vector))

    async def thumbnail(self, item_id: str) -> bytes:
        def thumbnail() -> bytes:
            try:
                found = self._ready()[0].thumbnail(item_id)
            except KeyError:
                raise NotFoundError(f"no item with id {item_id!r}") from None
            if found is None:
                raise ThumbnailMissingError(
                    f"item {item_id!r} has no thumbnail: it was added as a vector, while the "
                    "server ran with --no-thumbnails, or its thumbnail could not be made (the "
                    "server's log says why)"
                )
            return found

        return await self._run(thumbnail)

    def _get(self, item_id: str, *, with_vector: bool) -> StoredItem:
        item = self._ready()[0].get(item_id, with_vector=with_vector)
        if item is None:
            raise NotFoundError(f"no item with id {item_id!r}")
        return item

    async def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        filter_pairs: Mapping[str, str] | None = None,
        min_score: float | None = None,
        exclude_ids: Collection[str] = (),
    ) -> SearchResult:
        return await self._run(
            lambda: self._search(vector, k, filter_pairs, min_score, exclude_ids)
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
        def search() -> SearchResult:  # one trip to the data thread
            vector = self._get(item_id, with_vector=True).vector
            assert vector is not None
            excluded = (item_id,) if exclude_self else ()
            return self._search(vector, k, filter_pairs, min_score, excluded)

        return await self._run(search)

    async def neighbours(
        self,
        cursor: int,
        count: int,
        *,
        k: int,
        min_score: float,
        filter_pairs: Mapping[str, str] | None = None,
    ) -> NeighbourPage:
        return await self._run(lambda: self._neighbours(cursor, count, k, min_score, filter_pairs))

    def _neighbours(
        self,
        after: int,
        count: int,
        k: int,
        min_score: float,
        filter_pairs: Mapping[str, str] | None,
    ) -> NeighbourPage:
        """The items past the item row `after` (the previous page's last). One index call for
        the page's items (over every core); only the hits at or above `min_score` are looked
        up (the filter is checked on their owners' metadata), so a scan for near-duplicates
        reads little besides them."""
        store, index = self._ready()
        rows = store.whole_images_after(after, count, filter_pairs)
        if not rows:
            return NeighbourPage([], 0, None)
        vectors_per_item = -(-self._vectors // max(1, self._items))  # regions take places too
        window = (k + 1) * vectors_per_item
        found = index.search_batch(np.stack([v for _, _, v in rows]), window)
        close = [[hit for hit in hits if hit.score >= min_score] for hits in found]
        owners = store.by_keys([hit.key for hits in close for hit in hits])
        wanted = dict(filter_pairs or {})
        items = []
        for (_, item_id, vector), hits, near in zip(rows, found, close, strict=True):
            neighbours = _whole_image_neighbours(item_id, near, owners, wanted)
            size = window
            while size := wider_search(len(neighbours), k, hits, size, min_score):
                hits = index.search(vector, size)
                near = [hit for hit in hits if hit.score >= min_score]
                neighbours = _whole_image_neighbours(
                    item_id, near, store.by_keys([hit.key for hit in near]), wanted
                )
            if neighbours:
                items.append(ItemNeighbours(item_id, neighbours[:k]))
        images = store.image_facts([i for item in items for i in (item.id, *dict(item.neighbours))])
        items = [
            ItemNeighbours(item.id, item.neighbours, _facts_of(item, images)) for item in items
        ]
        last = len(rows) < count  # a short page ends the scan
        return NeighbourPage(items, len(rows), None if last else rows[-1][0])

    def _search(
        self,
        query: np.ndarray,
        k: int,
        filter_pairs: Mapping[str, str] | None,
        min_score: float | None,
        exclude_ids: Collection[str],
    ) -> SearchResult:
        store, index = self._ready()
        matches, exact = nearest(
            index,
            store,
            query,
            k,
            filter_pairs=filter_pairs,
            min_score=min_score,
            exclude_ids=exclude_ids,
        )
        return SearchResult(matches, exact)

    # -- plumbing --------------------------------------------------------------------------

    def _ready(self) -> tuple[ItemStore, VectorIndex]:
        if self._store is None or self._index is None:
            raise RuntimeError("repository is not open")
        return self._store, self._index

    async def _run(self, function: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function)


def _facts_of(item: ItemNeighbours, images: Mapping[str, ImageFacts]) -> dict[str, ImageFacts]:
    """The image facts known of an item and its neighbours."""
    ids = (item.id, *(neighbour for neighbour, _ in item.neighbours))
    return {i: images[i] for i in ids if i in images}


def _whole_image_neighbours(
    item_id: str, hits: list[Hit], owners: Mapping[int, VectorOwner], wanted: Mapping[str, str]
) -> list[tuple[str, float]]:
    """The other items among `hits` (best first) matched by their whole image, each once, whose
    metadata holds every wanted pair: near-duplicates are whole images."""
    found: dict[str, float] = {}
    for hit in hits:
        owner = owners.get(hit.key)
        if owner is None or owner.region is not None or owner.item.id == item_id:
            continue
        if wanted.items() <= owner.item.metadata.items():
            found.setdefault(owner.item.id, hit.score)
    return list(found.items())
