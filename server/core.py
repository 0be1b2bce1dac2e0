"""The application: embed, add, search (by image, vector, stored item or text), get, delete and
stats, with no transport.

An added image may carry regions (given boxes, and/or the server's region policy): each is
cropped from the decoded image and embedded in the same queue as the whole image, and the item
is stored with all its vectors at once.

Plain dataclasses in and out (`request_types` for what comes in); failures are
`LookalikeError`s. The gRPC service, the HTTP routes and the tests call it alike (with shards
on Ray, the front process runs it over a `ClusterRepository`). It validates a whole request
before any image is decoded, groups bulk adds into durable commits, and pushes back on a bulk
stream when the batch queue is full.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from importlib import metadata

import numpy as np

from lookalike.server.embed.batcher import BatcherStats
from lookalike.server.embed.embedders import Embedder, TextSide
from lookalike.server.embed.engine import ModelInfo
from lookalike.server.embed.preprocess import (
    Crop,
    ImageInput,
    ImageLimits,
    SourceImage,
    upright_size,
    with_regions,
)
from lookalike.server.embed.thumbnails import make_thumbnail
from lookalike.server.errors import (
    InvalidArgumentError,
    LookalikeError,
    NotFoundError,
    NotReadyError,
    TextUnavailableError,
)
from lookalike.server.index.repository import (
    ClusterMap,
    EmbeddedItem,
    ImageFacts,
    ItemNeighbours,
    MetadataChange,
    NeighbourPage,
    RegionVector,
    Repository,
    RepositoryStats,
    SearchResult,
    StoredItem,
    WriteOutcome,
)
from lookalike.server.item_ids import lookup_ids, normalize_id
from lookalike.server.metrics import Metrics
from lookalike.server.regions import Region, RegionPolicy, check_regions, policy_regions
from lookalike.server.request_types import (
    AddItem,
    ClustersQuery,
    Example,
    MetadataUpdate,
    NeighboursQuery,
    RequestLimits,
    SearchQuery,
    check_image_count,
    check_metadata,
    check_texts,
    unit_vector,
)

__all__ = [
    "Core",
    "CoreSlot",
    "Embedded",
    "AddResult",
    "AddGroup",
    "Deleted",
    "Updated",
    "NeighboursProgress",
    "ServerStats",
    "COMMIT_GROUP",
    "package_version",
    "STREAM_WINDOW",
]

COMMIT_GROUP = 64  # items per durable commit in a bulk add
NEIGHBOUR_PAGE = 256  # items per data-thread trip of a Neighbours scan (writes go between)
STREAM_WINDOW = 2 * COMMIT_GROUP  # one group embeds while the one before it commits

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray  # float32[N, D], unit rows, in the order of the images
    model_id: str


@dataclasses.dataclass(frozen=True)
class AddResult:
    """One item of a bulk add: stored (`error` is None) or refused with its reason."""

    index: int  # position in the caller's stream
    id: str  # as the caller sent it (stored in its normal form: `normalize_id`)
    replaced: bool = False
    error: LookalikeError | None = None


@dataclasses.dataclass(frozen=True)
class AddGroup:
    """The results of one durable commit, and the stream's running totals."""

    results: list[AddResult]
    stored: int
    failed: int


@dataclasses.dataclass(frozen=True)
class NeighboursProgress:
    """One page of a Neighbours scan, and how far the scan has got."""

    items: list[ItemNeighbours]
    scanned: int
    total: int  # items when the scan started


@dataclasses.dataclass(frozen=True)
class Deleted:
    deleted: int
    missing: list[str]  # asked for but not stored, in the caller's order, once each


@dataclasses.dataclass(frozen=True)
class Updated:
    updated: int
    missing: list[str]  # asked for but not stored, in the caller's order, once each


@dataclasses.dataclass(frozen=True)
class ServerStats:
    repository: RepositoryStats
    model: ModelInfo
    batcher: BatcherStats
    uptime_seconds: float
    preprocess_mode: str
    version: str
    text_model: ModelInfo | None = None  # None without a text tower
    text_batcher: BatcherStats | None = None


class Core:
    def __init__(
        self,
        model: ModelInfo,
        embedder: Embedder[ImageInput],
        repository: Repository,
        metrics: Metrics,
        *,
        limits: RequestLimits,
        preprocess_mode: str,
        image_limits: ImageLimits | None = None,
        regions: RegionPolicy = RegionPolicy.NONE,
        text: TextSide | None = None,
        no_text_reason: str = "this server has no text tower",
        thumbnails: bool = True,
        started: float | None = None,  # time.monotonic() when the server started
    ) -> None:
        """`no_text_reason` is what a text request is told when `text` is None; `regions` is
        the region policy of an added image that names none; `thumbnails`: keep a small JPEG
        of each added image."""
        self._thumbnails = thumbnails
        self._text, self._no_text_reason = text, no_text_reason
        self._image_limits, self._region_policy = image_limits or ImageLimits(), regions
        self.model, self._embedder, self._repository = model, embedder, repository
        self._metrics, self._limits, self._preprocess_mode = metrics, limits, preprocess_mode
        self._started = time.monotonic() if started is None else started
        self._count_stored()

    async def embed(self, images: Sequence[bytes]) -> Embedded:
        check_image_count(len(images), self._limits)
        return Embedded(await self._embedder.embed(images), self.model.model_id)

    async def embed_texts(self, texts: Sequence[str]) -> Embedded:
        """Texts into the images' embedding space, through the text tower."""
        check_texts(texts, self._limits)
        return Embedded(await self._text_side().embedder.embed(texts), self.model.model_id)

    async def add(self, item: AddItem) -> WriteOutcome:
        self._repository.check_writable()  # a read-only index refuses before any decoding
        (written,) = await self._store([await self._start(item).embedded()])
        return written

    async def add_many(self, items: AsyncIterable[AddItem]) -> AsyncIterator[AddGroup]:
        """Embed items as they arrive and commit them in groups of COMMIT_GROUP; yield each
        group once it is durable. A bad item fails alone; a full queue makes the stream wait
        for its own work instead of being refused."""
        self._repository.check_writable()  # before the first item is read
        pending: collections.deque[_Pending] = collections.deque()
        totals = {"stored": 0, "failed": 0}
        try:
            index = 0
            async for item in items:
                # admission is synchronous (`_start`), so the room seen here is still there
                rows = self._rows_at_most(item)
                while pending and rows and not self._embedder.has_room(rows):
                    yield await self._commit_group(pending, totals)
                try:
                    pending.append(_Pending(index, item, self._start(item)))
                except LookalikeError as exc:
                    pending.append(_Pending(index, item, exc))
                index += 1
                if len(pending) >= STREAM_WINDOW:
                    yield await self._commit_group(pending, totals)
            while pending:
                yield await self._commit_group(pending, totals)
        finally:  # the caller went away: nothing more of its stream is embedded
            for entry in pending:
                if isinstance(entry.started, _Started):
                    entry.started.cancel()

    async def search(self, query: SearchQuery) -> SearchResult:
        query.check(self._limits)
        filter_pairs, k, min_score = dict(query.filter), query.k, query.min_score
        if query.item_id is not None and not query.has_examples:
            item_id = await self._stored_id(query.item_id)
            with self._metrics.stage("search"):
                return await self._repository.search_by_id(
                    item_id,
                    k,
                    filter_pairs=filter_pairs,
                    min_score=min_score,
                    exclude_self=query.exclude_self,
                )
        vector = await self._query_vector(query)
        excluded = [await self._stored_id(i) for i in query.named_ids] if query.exclude_self else []
        with self._metrics.stage("search"):
            return await self._repository.search(
                vector, k, filter_pairs=filter_pairs, min_score=min_score, exclude_ids=excluded
            )

    async def neighbours(self, query: NeighboursQuery) -> AsyncIterator[NeighboursProgress]:
        """Scan every item (those the filter allows) for its near neighbours, a page at a
        time (other calls run between pages); the query is checked before the first page."""
        query.check()
        total, scanned = self.item_count, 0
        cursor: int | None = 0
        while cursor is not None:
            page = await self.neighbours_page(query, cursor)
            scanned, cursor = scanned + page.scanned, page.cursor
            yield NeighboursProgress(page.items, scanned, max(total, scanned))

    async def neighbours_page(self, query: NeighboursQuery, cursor: int = 0) -> NeighbourPage:
        """One page of that scan, from `cursor` (0: the start; then the previous page's)."""
        query.check()
        if cursor < 0:
            raise InvalidArgumentError(f"cursor must be 0 or one a page gave, got {cursor}")
        with self._metrics.stage("search"):
            return await self._repository.neighbours(
                cursor,
                NEIGHBOUR_PAGE,
                k=query.k,
                min_score=query.min_score,
                filter_pairs=dict(query.filter),
            )

    @property
    def item_count(self) -> int:
        """Items stored now."""
        return self._repository.item_count

    async def get(self, item_id: str, *, with_vector: bool = False) -> StoredItem:
        return await self._repository.get(await self._stored_id(item_id), with_vector=with_vector)

    async def thumbnail(self, item_id: str) -> bytes:
        """The item's thumbnail (JPEG); ThumbnailMissingError if it has none."""
        return await self._repository.thumbnail(await self._stored_id(item_id))

    async def delete(self, ids: Sequence[str]) -> Deleted:
        if not ids:
            raise InvalidArgumentError("no ids: send at least one in `ids`")
        deleted, missing = await self._write_stored(ids, self._repository.delete)
        self._count_stored()
        return Deleted(deleted=deleted, missing=missing)

    async def update_metadata(self, update: MetadataUpdate) -> Updated:
        """Change stored items' metadata (e.g. tag them), in one durable commit."""
        update.check()
        change = MetadataChange(update.set, frozenset(update.remove), update.check_result)
        updated, missing = await self._write_stored(
            update.ids, lambda ids: self._repository.update_metadata(ids, change)
        )
        return Updated(updated=updated, missing=missing)

    async def clusters(self, query: ClustersQuery) -> ClusterMap:
        """Groups of similar items without a query, from a bounded sample of the collection."""
        query.check()
        with self._metrics.stage("search"):
            return await self._repository.clusters(query.count, query.per_cluster, query.sample)

    async def stats(self) -> ServerStats:
        repository = await self._repository.stats()
        self._count_stored()
        return ServerStats(
            repository=repository,
            model=self.model,
            batcher=self._embedder.stats(),
            uptime_seconds=time.monotonic() - self._started,
            preprocess_mode=self._preprocess_mode,
            version=package_version(),
            text_model=self._text.model if self._text else None,
            text_batcher=self._text.embedder.stats() if self._text else None,
        )

    # -- helpers ---------------------------------------------------------------------------

    def _count_stored(self) -> None:
        self._metrics.index_items.set(self._repository.item_count)
        self._metrics.index_vectors.set(self._repository.vector_count)

    async def _stored_id(self, item_id: str) -> str:
        """The id of the stored item that `item_id` names, by `lookup_ids`' rule: the first of
        its forms that is stored (the id as given, then its NFC form), else the last; a read
        only for an id not in NFC."""
        *earlier, last = lookup_ids(item_id)
        for candidate in earlier:
            try:
                await self._repository.get(candidate)
            except NotFoundError:
                continue
            return candidate
        return last

    async def _write_stored(
        self, ids: Sequence[str], write: Callable[[list[str]], Awaitable[list[str]]]
    ) -> tuple[int, list[str]]:
        """`write` the stored items that `ids` name (`_stored_id`) in one durable commit;
        return how many it wrote, and the caller's ids of the items not stored (in the
        caller's order, once each)."""
        stored = {item_id: await self._stored_id(item_id) for item_id in ids}
        with self._metrics.stage("commit"):
            written = set(await write(list(dict.fromkeys(stored.values()))))
        return len(written), [given for given, found in stored.items() if found not in written]

    def _text_side(self) -> TextSide:
        if self._text is None:
            raise TextUnavailableError(self._no_text_reason)
        return self._text

    async def _query_vector(self, query: SearchQuery) -> np.ndarray:
        """The unit vector of a checked query: its own, or its examples' combined as
        normalise(mean(positives) - negative_weight * mean(negatives)); the main query (with
        its box) is the first positive."""
        positives, negatives = query.all_positives, query.negatives
        vectors = await self._example_vectors([*positives, *negatives], box=query.box)
        if not query.has_examples:
            return vectors[0]
        combined = np.mean(vectors[: len(positives)], axis=0)
        if negatives:
            combined -= query.negative_weight * np.mean(vectors[len(positives) :], axis=0)
        norm = float(np.linalg.norm(combined))
        if norm < 1e-6:
            raise InvalidArgumentError(
                "the positives and negatives cancel out: give other examples, or a lower "
                "negative_weight"
            )
        return (combined / norm).astype(np.float32)

    async def _example_vectors(
        self, examples: Sequence[Example], *, box: Region | None = None
    ) -> list[np.ndarray]:
        """Each checked example's unit vector, in order. Stored items are looked up first (an
        unknown id fails before any embedding); then images go in one batch and texts in
        another, at once. `box` crops the first example, an image."""
        vectors: dict[int, np.ndarray] = {}
        for position, example in enumerate(examples):
            if example.item_id is not None:
                stored = await self.get(example.item_id, with_vector=True)
                assert stored.vector is not None  # asked for
                vectors[position] = stored.vector
            elif example.vector is not None:
                vectors[position] = unit_vector(example.vector, self.model.dims)
        images: list[tuple[int, ImageInput]] = [
            (i, Crop(SourceImage(e.image), box) if i == 0 and box is not None else e.image)
            for i, e in enumerate(examples)
            if e.image is not None
        ]
        texts = [(i, e.text) for i, e in enumerate(examples) if e.text is not None]

        async def image_vectors() -> Sequence[np.ndarray]:
            if not images:
                return []
            return list(await self._embedder.embed([image for _, image in images]))

        async def text_vectors() -> Sequence[np.ndarray]:
            if not texts:
                return []
            return list(await self._text_side().embedder.embed([text for _, text in texts]))

        found_images, found_texts = await asyncio.gather(image_vectors(), text_vectors())
        vectors.update(zip((i for i, _ in images), found_images, strict=True))
        vectors.update(zip((i for i, _ in texts), found_texts, strict=True))
        return [vectors[position] for position in range(len(examples))]

    def _made_regions(self, item: AddItem) -> tuple[Region, ...]:
        """The regions the item's policy (or the server's) makes, before fitting its image."""
        return policy_regions(item.region_policy or self._region_policy)

    def _rows_at_most(self, item: AddItem) -> int:
        """How many inputs the item may put in the image queue (0: it brings its vector)."""
        if item.image is None:
            return 0
        return 1 + len(item.regions) + len(self._made_regions(item))

    def _start(self, item: AddItem) -> _Started:
        """Check the whole item, then start embedding its image and regions (or take its
        vector) under its id's normal form. Raises at once if the item is malformed or the
        queue is full."""
        item = dataclasses.replace(item, id=normalize_id(item.id))
        check_metadata(item.metadata, "metadata")
        if item.image is None and item.vector is None:
            raise InvalidArgumentError(f"item {item.id!r} has no content: set `image` or `vector`")
        if item.image is not None and item.vector is not None:
            raise InvalidArgumentError(f"item {item.id!r} has an image and a vector: set one")
        limit = self._limits.max_regions_per_item
        check_regions(item.regions, limit)
        if item.image is None:
            if item.regions:
                raise InvalidArgumentError(
                    f"item {item.id!r} has regions but no image to cut them from: send `image`"
                )
            future = asyncio.get_running_loop().create_future()
            future.set_result([unit_vector(item.vector, self.model.dims)])  # type: ignore[arg-type]
            return _Started(item, (), future)
        regions, inputs = with_regions(
            item.image, item.regions, self._made_regions(item), self._image_limits, limit=limit
        )
        vectors = asyncio.gather(*self._embedder.submit(inputs))
        described = asyncio.get_running_loop().run_in_executor(
            None, _describe, item.id, item.image, self._image_limits, self._thumbnails
        )
        return _Started(item, regions, vectors, described)

    async def _store(self, items: list[EmbeddedItem]) -> list[WriteOutcome]:
        with self._metrics.stage("commit"):
            written = await self._repository.upsert(items)
        self._count_stored()
        return written

    async def _commit_group(
        self, pending: collections.deque[_Pending], totals: dict[str, int]
    ) -> AddGroup:
        group = [pending.popleft() for _ in range(min(COMMIT_GROUP, len(pending)))]
        ready: list[tuple[_Pending, EmbeddedItem]] = []
        failures: list[AddResult] = []
        for entry in group:
            try:
                if isinstance(entry.started, LookalikeError):
                    raise entry.started
                embedded = await entry.started.embedded()
            except LookalikeError as exc:
                failures.append(AddResult(entry.index, entry.item.id, error=exc))
                continue
            ready.append((entry, embedded))
        written = await self._store([item for _, item in ready]) if ready else []
        stored = [
            AddResult(entry.index, entry.item.id, replaced=outcome.replaced)
            for (entry, _), outcome in zip(ready, written, strict=True)
        ]
        totals["stored"] += len(stored)
        totals["failed"] += len(failures)
        results = sorted(stored + failures, key=lambda result: result.index)
        return AddGroup(results, **totals)


class CoreSlot:
    """Where every transport (gRPC, HTTP) finds the core: filled once the server has loaded,
    emptied when it drains; until then every call is refused as not ready."""

    def __init__(self) -> None:
        self._core: Core | None = None

    def attach(self, core: Core) -> None:
        self._core = core

    def detach(self) -> None:
        self._core = None

    def get(self) -> Core:
        if self._core is None:
            raise NotReadyError("the server is starting or shutting down; retry shortly")
        return self._core


@dataclasses.dataclass(frozen=True)
class _Started:
    """An admitted item whose vectors are on their way."""

    item: AddItem
    regions: tuple[Region, ...]  # given and made, fitted to its image, in storing order
    vectors: asyncio.Future[list[np.ndarray]]  # the whole image's, then each region's
    described: asyncio.Future[_Described] | None = None  # being made, for an image

    async def embedded(self) -> EmbeddedItem:
        if self.described is None:
            (whole, *parts), described = await self.vectors, _Described(None, None)
        else:
            (whole, *parts), described = await asyncio.gather(self.vectors, self.described)
        return EmbeddedItem(
            self.item.id,
            whole,
            dict(self.item.metadata),
            tuple(map(RegionVector, self.regions, parts)),
            described.thumbnail,
            described.image,
        )

    def cancel(self) -> None:
        for future in (self.vectors, self.described):
            if future is not None:
                future.cancel()


@dataclasses.dataclass(frozen=True)
class _Pending:
    """An item of a bulk add between admission and commit."""

    index: int
    item: AddItem
    started: _Started | LookalikeError  # on its way, or why it was refused


@dataclasses.dataclass(frozen=True)
class _Described:
    """What an item keeps of its image beside its vectors."""

    image: ImageFacts | None
    thumbnail: bytes | None


def _describe(item_id: str, image: bytes, limits: ImageLimits, thumbnail: bool) -> _Described:
    """The image's facts and, if kept, its thumbnail. An image that cannot be read gets
    neither, silently: its embedding refuses the item and says why. A fault here costs the
    item only what failed, never the item."""
    try:
        facts = ImageFacts(*upright_size(image, limits), bytes=len(image))
    except LookalikeError:
        return _Described(None, None)
    except Exception:
        log.warning("item %r is stored without its image's size", item_id, exc_info=True)
        return _Described(None, None)
    if not thumbnail:
        return _Described(facts, None)
    try:
        return _Described(facts, make_thumbnail(image, limits))
    except LookalikeError:
        return _Described(facts, None)
    except Exception:
        log.warning("item %r is stored without a thumbnail", item_id, exc_info=True)
        return _Described(facts, None)


def package_version() -> str:
    """The installed Lookalike's version."""
    try:
        return metadata.version("lookalike")
    except metadata.PackageNotFoundError:
        return "unknown"
