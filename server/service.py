"""The gRPC servicer: validates requests, maps proto messages to plain types and back.

Below this module nothing knows about protobuf. Every RPC goes through `_rpc`, which applies
the one error table (`server/status.py`), records metrics and logs one line per call.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from importlib import metadata
from typing import Any, TypeVar

import grpc
import numpy as np

from lookalike.server.batcher import Batcher
from lookalike.server.engine import Engine
from lookalike.server.errors import (
    InvalidArgumentError,
    LimitExceededError,
    LookalikeError,
    NotReadyError,
)
from lookalike.server.metrics import Metrics
from lookalike.server.preprocess import PreprocessMode
from lookalike.server.repository import Repository
from lookalike.server.status import error_metadata, grpc_status
from lookalike.server.store import NewItem
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc

__all__ = ["ServiceLimits", "ImageSearchService"]

log = logging.getLogger(__name__)

MAX_K = 1000
MAX_ID_BYTES = 1024
MAX_METADATA_PAIRS = 64
MAX_METADATA_KEY_BYTES = 256
MAX_METADATA_VALUE_BYTES = 8192
COMMIT_GROUP = 64  # items per durable commit in AddStream
STREAM_WINDOW = 2 * COMMIT_GROUP  # one group embeds while the one before it commits

Handler = TypeVar("Handler", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceLimits:
    max_images_per_request: int = 256


@contextlib.asynccontextmanager
async def _served(
    service: ImageSearchService, method: str, context: grpc.aio.ServicerContext
) -> AsyncIterator[None]:
    """Readiness check, the error table, metrics and a debug line around one RPC."""
    started = time.perf_counter()
    code, failure, kind = grpc.StatusCode.OK, None, ""
    try:
        service._check_ready()
        yield
    except LookalikeError as exc:
        code, failure, kind = grpc_status(exc), str(exc), type(exc).__name__
    except (asyncio.CancelledError, grpc.aio.AbortError):
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception:
        code, kind = grpc.StatusCode.INTERNAL, "InternalError"
        log.exception("%s failed unexpectedly", method)
        failure = f"internal error in {method}; the server logged it"
    finally:  # recorded before the caller can see the outcome, so a scrape right after has it
        elapsed = time.perf_counter() - started
        service._metrics.requests.labels(method, code.name).inc()
        service._metrics.request_seconds.labels(method).observe(elapsed)
        log.debug("%s %s %.1fms peer=%s", method, code.name, elapsed * 1e3, context.peer())
    if failure is not None:
        await context.abort(code, failure, error_metadata(kind))


def _rpc(handler: Handler) -> Handler:
    """Serve a unary RPC inside `_served`."""

    @functools.wraps(handler)
    async def wrapper(
        self: ImageSearchService, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        async with _served(self, handler.__name__, context):
            return await handler(self, request, context)

    return wrapper  # type: ignore[return-value]


class ImageSearchService(pb_grpc.ImageSearchServicer):
    def __init__(
        self, metrics: Metrics, limits: ServiceLimits, *, preprocess_mode: PreprocessMode
    ) -> None:
        self._metrics, self._limits, self._preprocess_mode = metrics, limits, preprocess_mode
        self._engine: Engine | None = None
        self._batcher: Batcher | None = None
        self._repository: Repository | None = None
        self._started = time.monotonic()

    def attach(self, engine: Engine, batcher: Batcher, repository: Repository) -> None:
        """Start answering: until then every RPC is UNAVAILABLE."""
        self._engine, self._batcher, self._repository = engine, batcher, repository

    def detach(self) -> None:
        self._engine = self._batcher = self._repository = None

    def _check_ready(self) -> None:
        if self._engine is None or self._batcher is None or self._repository is None:
            raise NotReadyError("the server is starting or shutting down; retry shortly")

    @property
    def _parts(self) -> tuple[Engine, Batcher, Repository]:
        self._check_ready()
        return self._engine, self._batcher, self._repository  # type: ignore[return-value]

    # -- RPCs ------------------------------------------------------------------------------

    @_rpc
    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        engine, _, _ = self._parts
        images = list(request.images)
        if not images:
            raise InvalidArgumentError("no images: send at least one in `images`")
        vectors = await self._embed(images)
        return pb.EmbedResponse(
            embeddings=[pb.Vector(values=v) for v in vectors], model_id=engine.manifest.source.id
        )

    @_rpc
    async def Add(
        self, request: pb.AddRequest, context: grpc.aio.ServicerContext
    ) -> pb.AddResponse:
        _, _, repository = self._parts
        item = await self._item(request)
        (written,) = await self._timed("commit", repository.upsert([item]))
        return pb.AddResponse(id=written.id, replaced=written.replaced_key is not None)

    async def AddStream(
        self, requests: AsyncIterator[pb.AddRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AddStreamResponse]:
        async with _served(self, "AddStream", context):
            async for response in self._add_stream(requests):
                yield response

    @_rpc
    async def Search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        _, _, repository = self._parts
        k = request.k
        if not 1 <= k <= MAX_K:
            raise InvalidArgumentError(f"k must be between 1 and {MAX_K}, got {k}")
        if request.HasField("min_score") and not -1.0 <= request.min_score <= 1.0:
            raise InvalidArgumentError(
                f"min_score must be between -1 and 1, got {request.min_score}"
            )
        exclude_key = None
        query = request.WhichOneof("query")
        if query == "image":
            (vector,) = await self._embed([request.image])
        elif query == "vector":
            vector = self._vector(request.vector)
        elif query == "id":
            stored = await repository.get(request.id, with_vector=True)
            vector = stored.vector  # type: ignore[assignment]
            exclude_key = stored.key if request.exclude_self else None
        else:
            raise InvalidArgumentError("no query: set one of `image`, `vector` or `id`")
        _check_metadata(request.filter, "filter")
        result = await self._timed(
            "search",
            repository.search(
                vector,
                k,
                filter_pairs=dict(request.filter),
                exclude_key=exclude_key,
                min_score=request.min_score if request.HasField("min_score") else None,
            ),
        )
        return pb.SearchResponse(
            matches=[
                pb.Match(id=m.item.id, score=m.score, metadata=m.item.metadata)
                for m in result.matches
            ],
            exact=result.exact,
        )

    @_rpc
    async def Get(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        _, _, repository = self._parts
        _check_id(request.id)
        item = await repository.get(request.id, with_vector=request.include_vector)
        response = pb.GetResponse(id=item.id, metadata=item.metadata)
        if item.vector is not None:
            response.vector.values.extend(item.vector.tolist())
        return response

    @_rpc
    async def Delete(
        self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteResponse:
        _, _, repository = self._parts
        if not request.ids:
            raise InvalidArgumentError("no ids: send at least one in `ids`")
        for item_id in request.ids:
            _check_id(item_id)
        removed = await self._timed("commit", repository.delete(list(request.ids)))
        missing = [i for i in dict.fromkeys(request.ids) if i not in removed]
        return pb.DeleteResponse(deleted=len(removed), missing=missing)

    @_rpc
    async def Stats(
        self, request: pb.StatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatsResponse:
        engine, batcher, repository = self._parts
        stats = batcher.stats()
        settings = repository.settings
        items = await repository.count()
        self._metrics.index_items.set(items)
        return pb.StatsResponse(
            items=items,
            dims=engine.dim,
            model_id=engine.manifest.source.id,
            random_weights=engine.manifest.source.random_weights,
            precision=engine.precision.value,
            providers=engine.providers,
            index=pb.IndexSettings(
                metric=settings.metric,
                dtype=settings.dtype,
                connectivity=settings.connectivity,
                expansion_add=settings.expansion_add,
                expansion_search=settings.expansion_search,
                exact_search_below=settings.exact_search_below,
            ),
            queue_depth=stats.queue_depth,
            uptime_seconds=time.monotonic() - self._started,
            batches=stats.batches,
            mean_batch_size=stats.mean_batch_size,
            preprocess_mode=self._preprocess_mode.value,
            version=_version(),
        )

    # -- helpers ---------------------------------------------------------------------------

    async def _embed(self, images: list[bytes]) -> np.ndarray:
        _, batcher, _ = self._parts
        limit = self._limits.max_images_per_request
        if len(images) > limit:
            raise LimitExceededError(f"{len(images)} images in one request; the limit is {limit}")
        return await batcher.embed(images)

    async def _item(self, request: pb.AddRequest) -> NewItem:
        _check_id(request.id)
        _check_metadata(request.metadata, "metadata")
        content = request.WhichOneof("content")
        if content == "image":
            (vector,) = await self._embed([request.image])
        elif content == "vector":
            vector = self._vector(request.vector)
        else:
            raise InvalidArgumentError(
                f"item {request.id!r} has no content: set `image` or `vector`"
            )
        return NewItem(request.id, vector, dict(request.metadata))

    def _vector(self, message: pb.Vector) -> np.ndarray:
        engine, _, _ = self._parts
        vector = np.asarray(message.values, dtype=np.float32)
        if vector.shape != (engine.dim,):
            raise InvalidArgumentError(
                f"vector has {vector.size} values; this model's embeddings have {engine.dim}"
            )
        if not np.all(np.isfinite(vector)):
            raise InvalidArgumentError("vector contains NaN or infinity")
        norm = float(np.linalg.norm(vector))
        if norm == 0 or not math.isfinite(norm):
            raise InvalidArgumentError("vector is all zeros: it has no direction to compare")
        return vector / norm

    async def _add_stream(
        self, requests: AsyncIterator[pb.AddRequest]
    ) -> AsyncIterator[pb.AddStreamResponse]:
        """Embed as requests arrive, commit in groups, answer each group once it is durable."""
        _, batcher, repository = self._parts
        pending: collections.deque[tuple[int, str, asyncio.Future[NewItem]]] = collections.deque()
        totals = {"stored": 0, "failed": 0}
        try:
            index = 0
            async for request in requests:
                while pending and request.HasField("image") and not batcher.has_room(1):
                    # backpressure: a full queue makes the stream wait for its own work
                    yield await self._commit_group(repository, pending, totals, COMMIT_GROUP)
                pending.append((index, request.id, asyncio.ensure_future(self._item(request))))
                index += 1
                if len(pending) >= STREAM_WINDOW:
                    yield await self._commit_group(repository, pending, totals, COMMIT_GROUP)
            while pending:
                yield await self._commit_group(repository, pending, totals, COMMIT_GROUP)
        finally:  # the client went away: nothing more of its stream is embedded
            for _, _, future in pending:
                future.cancel()

    async def _commit_group(
        self,
        repository: Repository,
        pending: collections.deque[tuple[int, str, asyncio.Future[NewItem]]],
        totals: dict[str, int],
        size: int,
    ) -> pb.AddStreamResponse:
        group = [pending.popleft() for _ in range(min(size, len(pending)))]
        results: list[pb.AddResult] = []
        items: list[tuple[pb.AddResult, NewItem]] = []
        for position, item_id, future in group:
            result = pb.AddResult(index=position, id=item_id)
            try:
                items.append((result, await future))
            except LookalikeError as exc:
                result.code, result.error = grpc_status(exc).value[0], str(exc)
            results.append(result)
        if items:
            written = await self._timed("commit", repository.upsert([item for _, item in items]))
            for (result, _), stored in zip(items, written, strict=True):
                result.replaced = stored.replaced_key is not None
        totals["stored"] += len(items)
        totals["failed"] += len(results) - len(items)
        return pb.AddStreamResponse(results=results, **totals)

    async def _timed(self, stage: str, work: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            return await work
        finally:
            self._metrics.stage_seconds.labels(stage).observe(time.perf_counter() - started)


def _version() -> str:
    try:
        return metadata.version("lookalike")
    except metadata.PackageNotFoundError:
        return "unknown"


def _check_id(item_id: str) -> None:
    encoded = item_id.encode("utf-8", "surrogatepass")
    if not encoded:
        raise InvalidArgumentError("id is empty")
    if len(encoded) > MAX_ID_BYTES:
        raise InvalidArgumentError(f"id is {len(encoded)} bytes; the limit is {MAX_ID_BYTES}")
    if "\0" in item_id:
        raise InvalidArgumentError("id contains a NUL character")


def _check_metadata(pairs: Mapping[str, str], name: str) -> None:
    if len(pairs) > MAX_METADATA_PAIRS:
        raise InvalidArgumentError(
            f"{name} has {len(pairs)} keys; the limit is {MAX_METADATA_PAIRS}"
        )
    for key, value in pairs.items():
        if not key or len(key.encode()) > MAX_METADATA_KEY_BYTES:
            raise InvalidArgumentError(
                f"{name} key {key[:40]!r} must be 1 to {MAX_METADATA_KEY_BYTES} bytes"
            )
        if len(value.encode()) > MAX_METADATA_VALUE_BYTES:
            raise InvalidArgumentError(
                f"{name} value of {key!r} is {len(value.encode())} bytes; "
                f"the limit is {MAX_METADATA_VALUE_BYTES}"
            )
