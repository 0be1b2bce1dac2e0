"""What the core stores and finds, and the repository interface it stores them through.

Plain values, no transport and no storage detail: vector keys (the index's integers) stay
inside a repository, callers speak of item ids only. A sharded repository (several indexes,
several machines) satisfies the same `Repository` protocol without the core changing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

import numpy as np

from lookalike.server.index.settings import IndexSettings
from lookalike.server.regions import Region

__all__ = [
    "Cluster",
    "ClusterMap",
    "ImageFacts",
    "MetadataChange",
    "EmbeddedItem",
    "RegionVector",
    "VectorOwner",
    "StoredItem",
    "ScoredItem",
    "SearchResult",
    "WriteOutcome",
    "RepositoryStats",
    "ItemNeighbours",
    "NeighbourPage",
    "ShardStats",
    "Repository",
]


@dataclasses.dataclass(frozen=True)
class ImageFacts:
    """What the server saw of an item's image when it was added: its size in pixels as seen
    upright, and the size of the file as sent. Items added as vectors, and items stored
    before Lookalike recorded this, have none."""

    width: int
    height: int
    bytes: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @classmethod
    def from_columns(
        cls, width: int | None, height: int | None, size: int | None
    ) -> ImageFacts | None:
        """From a table row's three columns, each NULL when the item has none."""
        if width is None or height is None or size is None:
            return None
        return cls(int(width), int(height), int(size))


@dataclasses.dataclass(frozen=True)
class MetadataChange:
    """Pairs to set and keys to remove on stored items' metadata; `check` vets each item's
    metadata as it would become (the caller's limits), before anything is written."""

    set: Mapping[str, str]
    remove: Collection[str]
    check: Callable[[Mapping[str, str]], None]

    def applied(self, metadata: Mapping[str, str]) -> dict[str, str]:
        changed = {k: v for k, v in {**metadata, **self.set}.items() if k not in self.remove}
        self.check(changed)
        return changed


@dataclasses.dataclass(frozen=True)
class RegionVector:
    region: Region
    vector: np.ndarray  # float32[D], unit norm


@dataclasses.dataclass(frozen=True)
class EmbeddedItem:
    """An item ready to store: its id, its whole image's unit vector, its metadata, and the
    vectors of its regions."""

    id: str
    vector: np.ndarray  # float32[D], unit norm
    metadata: Mapping[str, str]
    regions: tuple[RegionVector, ...] = ()
    thumbnail: bytes | None = None  # a small JPEG of the image (`thumbnails`), if one was made
    image: ImageFacts | None = None  # None for an item added as a vector


@dataclasses.dataclass(frozen=True)
class StoredItem:
    """A stored item; `vector` (the whole image's) only when asked for."""

    id: str
    metadata: dict[str, str]
    vector: np.ndarray | None = None
    regions: tuple[Region, ...] = ()
    image: ImageFacts | None = None


@dataclasses.dataclass(frozen=True)
class VectorOwner:
    """Whose a stored vector is: an item's whole image (`region` None), or one of its regions."""

    item: StoredItem
    region: Region | None

    @classmethod
    def from_row(
        cls, item_id: str, metadata: str, region: str | None, image: ImageFacts | None = None
    ) -> VectorOwner:
        """From a table row: the item's id, its metadata JSON, the region JSON or NULL."""
        return cls(
            StoredItem(item_id, json.loads(metadata), image=image),
            Region.from_json(region) if region is not None else None,
        )


@dataclasses.dataclass(frozen=True)
class ScoredItem:
    item: StoredItem
    score: float  # cosine similarity to the query, of the item's best vector
    region: Region | None = None  # the region that scored it; None: the whole image


@dataclasses.dataclass(frozen=True)
class Cluster:
    size: int  # the sampled whole images in it
    representatives: list[ScoredItem]  # nearest its centre first; score: cosine to the centre


@dataclasses.dataclass(frozen=True)
class ClusterMap:
    """Groups of similar items, largest first, found among `sampled` of `total` items."""

    clusters: list[Cluster]
    sampled: int
    total: int


@dataclasses.dataclass(frozen=True)
class SearchResult:
    matches: list[ScoredItem]  # best first
    exact: bool  # exhaustive search (not approximate)


@dataclasses.dataclass(frozen=True)
class WriteOutcome:
    id: str
    replaced: bool  # an item with this id was stored before and is now replaced


@dataclasses.dataclass(frozen=True)
class ItemNeighbours:
    """An item and the other items whose whole image scores at least the threshold against
    its whole image, best first."""

    id: str
    neighbours: list[tuple[str, float]]  # (id, score)
    images: Mapping[str, ImageFacts] = dataclasses.field(default_factory=dict)  # where known


@dataclasses.dataclass(frozen=True)
class NeighbourPage:
    items: list[ItemNeighbours]  # those of the page with at least one neighbour
    scanned: int  # items looked at in this page
    cursor: int | None  # where the next page starts; None: the scan is done


@dataclasses.dataclass(frozen=True)
class ShardStats:
    """One shard of a built index, and how many replicas answer for it now."""

    number: int
    items: int
    vectors: int
    replicas: int


@dataclasses.dataclass(frozen=True)
class RepositoryStats:
    items: int
    index: IndexSettings
    vectors: int  # the items' whole images and regions
    index_version: str = ""  # a built index's version; "" for a data directory
    shards: tuple[ShardStats, ...] = ()
    disk_bytes: int = 0  # the data directory's, or the built index's (all its versions)


class Repository(Protocol):
    """Durable items and the search over their vectors. Writes are durable when they return."""

    async def open(self) -> int:
        """Open (migrating stored data if needed) and return the number of items."""
        ...

    async def close(self) -> None: ...

    @property
    def item_count(self) -> int:
        """Items stored, as of the last completed write."""
        ...

    @property
    def vector_count(self) -> int:
        """Vectors stored (whole images and regions), as of the last completed write."""
        ...

    def check_writable(self) -> None:
        """Raise ReadOnlyError if this repository takes no writes (a built index): checked
        before a write's images are decoded or embedded."""
        ...

    async def upsert(self, items: Sequence[EmbeddedItem]) -> list[WriteOutcome]:
        """Store all items as one durable commit; a later item with the same id wins."""
        ...

    async def delete(self, ids: Sequence[str]) -> list[str]:
        """Remove the items that are stored; return their ids."""
        ...

    async def update_metadata(self, ids: Sequence[str], change: MetadataChange) -> list[str]:
        """Change the stored items' metadata in one durable commit; return their ids."""
        ...

    async def clusters(self, count: int, per_cluster: int, sample: int) -> ClusterMap:
        """`count` groups of similar items among at most `sample` whole images (drawn
        uniformly), each with its `per_cluster` items nearest its centre."""
        ...

    async def get(self, item_id: str, *, with_vector: bool = False) -> StoredItem:
        """The stored item; NotFoundError if there is none."""
        ...

    async def thumbnail(self, item_id: str) -> bytes:
        """The item's thumbnail (JPEG); NotFoundError if there is no such item, or
        ThumbnailMissingError if it has none (added as a vector, or thumbnails off)."""
        ...

    async def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        filter_pairs: Mapping[str, str] | None = None,
        min_score: float | None = None,
        exclude_ids: Collection[str] = (),
    ) -> SearchResult:
        """The k items nearest `vector` whose metadata holds every filter pair, none of them
        one of `exclude_ids`."""
        ...

    async def search_by_id(
        self,
        item_id: str,
        k: int,
        *,
        filter_pairs: Mapping[str, str] | None = None,
        min_score: float | None = None,
        exclude_self: bool = True,
    ) -> SearchResult:
        """Like `search`, from the stored item's vector; NotFoundError if there is none."""
        ...

    async def neighbours(
        self,
        cursor: int,
        count: int,
        *,
        k: int,
        min_score: float,
        filter_pairs: Mapping[str, str] | None = None,
    ) -> NeighbourPage:
        """The next `count` items from `cursor` (0: the start; then the previous page's),
        those the filter allows, each with up to `k` other items the filter allows scoring at
        least `min_score`, whole image against whole image."""
        ...

    async def stats(self) -> RepositoryStats: ...

    async def save_snapshot(self) -> bool:
        """Persist the search index if it changed since the last time; return whether it did."""
        ...
