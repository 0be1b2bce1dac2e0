"""The gRPC servicer: maps proto messages to the core's plain types and errors to statuses.

It holds no application logic: validation, grouping and search live in `core`. Every RPC goes
through `_served`, which applies the one error table (`error_codes`), records metrics and logs one
line per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from lookalike.server.core import AddGroup, Core, CoreSlot
from lookalike.server.error_codes import error_metadata, grpc_status
from lookalike.server.errors import InvalidArgumentError, LookalikeError
from lookalike.server.index.repository import ImageFacts, ScoredItem, SearchResult
from lookalike.server.index.vector_index import kernel
from lookalike.server.metrics import Metrics
from lookalike.server.regions import Region, RegionPolicy
from lookalike.server.request_types import (
    NEGATIVE_WEIGHT,
    AddItem,
    ClustersQuery,
    Example,
    MetadataUpdate,
    NeighboursQuery,
    SearchQuery,
)
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc

__all__ = ["ImageSearchService"]

log = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Any])


@contextlib.asynccontextmanager
async def _served(
    service: ImageSearchService, method: str, context: grpc.aio.ServicerContext
) -> AsyncIterator[None]:
    """Readiness check, the error table, metrics and a debug line around one RPC."""
    started = time.perf_counter()
    code, failure, kind = grpc.StatusCode.OK, None, ""
    try:
        service._slot.get()
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
    def __init__(self, slot: CoreSlot, metrics: Metrics) -> None:
        self._slot, self._metrics = slot, metrics

    @property
    def _ready_core(self) -> Core:
        return self._slot.get()

    # -- RPCs ------------------------------------------------------------------------------

    @_rpc
    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        core = self._ready_core
        if request.images and request.texts:
            raise InvalidArgumentError("send images or texts in one Embed request, not both")
        if request.texts:
            embedded = await core.embed_texts(list(request.texts))
        else:
            embedded = await core.embed(list(request.images))
        return pb.EmbedResponse(
            embeddings=[pb.Vector(values=v) for v in embedded.vectors],
            model_id=embedded.model_id,
        )

    @_rpc
    async def Add(
        self, request: pb.AddRequest, context: grpc.aio.ServicerContext
    ) -> pb.AddResponse:
        written = await self._ready_core.add(_add_item(request))
        return pb.AddResponse(id=written.id, replaced=written.replaced)

    async def AddStream(
        self, requests: AsyncIterator[pb.AddRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AddStreamResponse]:
        async with _served(self, "AddStream", context):
            items = (_add_item(request) async for request in requests)
            async for group in self._ready_core.add_many(items):
                yield _add_stream_response(group)

    @_rpc
    async def Search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        content = request.WhichOneof("query")
        query = SearchQuery(
            image=request.image if content == "image" else None,
            vector=request.vector.values if content == "vector" else None,
            item_id=request.id if content == "id" else None,
            text=request.text if content == "text" else None,
            k=request.k,
            min_score=request.min_score if request.HasField("min_score") else None,
            filter=dict(request.filter),
            exclude_self=request.exclude_self,
            box=_region(request.box) if request.HasField("box") else None,
            positives=[_example(example) for example in request.positives],
            negatives=[_example(example) for example in request.negatives],
            negative_weight=request.negative_weight
            if request.HasField("negative_weight")
            else NEGATIVE_WEIGHT,
        )
        return _search_response(await self._ready_core.search(query))

    @_rpc
    async def Get(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        item = await self._ready_core.get(request.id, with_vector=request.include_vector)
        response = pb.GetResponse(
            id=item.id,
            metadata=item.metadata,
            regions=[_region_message(r) for r in item.regions],
            image=_image_message(item.image),
        )
        if item.vector is not None:
            response.vector.values.extend(item.vector.tolist())
        return response

    @_rpc
    async def Delete(
        self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteResponse:
        deleted = await self._ready_core.delete(list(request.ids))
        return pb.DeleteResponse(deleted=deleted.deleted, missing=deleted.missing)

    @_rpc
    async def Clusters(
        self, request: pb.ClustersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClustersResponse:
        defaults = ClustersQuery()
        query = ClustersQuery(
            count=request.count or defaults.count,
            per_cluster=request.per_cluster or defaults.per_cluster,
            sample=request.sample or defaults.sample,
        )
        found = await self._ready_core.clusters(query)
        return pb.ClustersResponse(
            clusters=[
                pb.Cluster(size=c.size, representatives=[_match(m) for m in c.representatives])
                for c in found.clusters
            ],
            sampled=found.sampled,
            total=found.total,
        )

    @_rpc
    async def UpdateMetadata(
        self, request: pb.UpdateMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateMetadataResponse:
        update = MetadataUpdate(
            ids=list(request.ids), set=dict(request.set), remove=list(request.remove)
        )
        updated = await self._ready_core.update_metadata(update)
        return pb.UpdateMetadataResponse(updated=updated.updated, missing=updated.missing)

    async def Neighbours(
        self, request: pb.NeighboursRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.NeighboursResponse]:
        async with _served(self, "Neighbours", context):
            query = NeighboursQuery(
                min_score=request.min_score, k=request.k or 10, filter=dict(request.filter)
            )
            async for page in self._ready_core.neighbours(query):
                yield pb.NeighboursResponse(
                    items=[
                        pb.ItemNeighbours(
                            id=item.id,
                            neighbours=[
                                pb.Neighbour(
                                    id=i, score=s, image=_image_message(item.images.get(i))
                                )
                                for i, s in item.neighbours
                            ],
                            image=_image_message(item.images.get(item.id)),
                        )
                        for item in page.items
                    ],
                    scanned=page.scanned,
                    total=page.total,
                )

    @_rpc
    async def Stats(
        self, request: pb.StatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatsResponse:
        stats = await self._ready_core.stats()
        model, repository, text = stats.model, stats.repository, stats.text_model
        index = repository.index
        return pb.StatsResponse(
            items=repository.items,
            dims=model.dims,
            model_id=model.model_id,
            random_weights=model.random_weights,
            precision=model.precision.value,
            providers=model.providers,
            index=pb.IndexSettings(
                metric=index.metric,
                dtype=index.dtype,
                connectivity=index.connectivity,
                expansion_add=index.expansion_add,
                expansion_search=index.expansion_search,
                exact_search_below=index.exact_search_below,
                kernel=kernel(index.dtype, model.dims),
            ),
            queue_depth=stats.batcher.queue_depth,
            uptime_seconds=stats.uptime_seconds,
            batches=stats.batcher.batches,
            mean_batch_size=stats.batcher.mean_batch_size,
            preprocess_mode=stats.preprocess_mode,
            version=stats.version,
            text_enabled=text is not None,
            text_precision=text.precision.value if text else "",
            text_queue_depth=stats.text_batcher.queue_depth if stats.text_batcher else 0,
            index_version=repository.index_version,
            vectors=repository.vectors,
            shards=[
                pb.ShardStats(
                    number=s.number, items=s.items, vectors=s.vectors, replicas=s.replicas
                )
                for s in repository.shards
            ],
            model_family=model.family,
            model_revision=model.revision or "",
            manifest_sha256=model.manifest_sha256,
            score_scale=None
            if model.scores is None
            else pb.ScoreScale(
                kind=model.scores.kind, scale=model.scores.scale, bias=model.scores.bias
            ),
            disk_bytes=repository.disk_bytes,
        )


def _add_item(request: pb.AddRequest) -> AddItem:
    content = request.WhichOneof("content")
    return AddItem(
        request.id,
        image=request.image if content == "image" else None,
        vector=request.vector.values if content == "vector" else None,
        metadata=dict(request.metadata),
        regions=[_region(region) for region in request.regions],
        region_policy=_policy(request.region_policy),
    )


_POLICIES: dict[int, RegionPolicy | None] = {
    pb.REGION_POLICY_UNSPECIFIED: None,
    pb.REGION_POLICY_NONE: RegionPolicy.NONE,
    pb.REGION_POLICY_GRID: RegionPolicy.GRID,
}


def _policy(value: int) -> RegionPolicy | None:
    if value not in _POLICIES:
        raise InvalidArgumentError(f"unknown region_policy {value}; see RegionPolicy")
    return _POLICIES[value]


def _example(message: pb.Example) -> Example:
    content = message.WhichOneof("content")
    return Example(
        image=message.image if content == "image" else None,
        text=message.text if content == "text" else None,
        item_id=message.id if content == "id" else None,
        vector=message.vector.values if content == "vector" else None,
    )


def _region(message: pb.Region) -> Region:
    return Region(message.x0, message.y0, message.x1, message.y1, message.label)


def _region_message(region: Region) -> pb.Region:
    return pb.Region(x0=region.x0, y0=region.y0, x1=region.x1, y1=region.y1, label=region.label)


def _add_stream_response(group: AddGroup) -> pb.AddStreamResponse:
    results = []
    for result in group.results:
        message = pb.AddResult(index=result.index, id=result.id, replaced=result.replaced)
        if result.error is not None:
            message.code, message.error = grpc_status(result.error).value[0], str(result.error)
        results.append(message)
    return pb.AddStreamResponse(results=results, stored=group.stored, failed=group.failed)


def _search_response(result: SearchResult) -> pb.SearchResponse:
    return pb.SearchResponse(matches=[_match(m) for m in result.matches], exact=result.exact)


def _image_message(image: ImageFacts | None) -> pb.ImageFacts | None:
    """The facts as a message; None leaves the field unset."""
    if image is None:
        return None
    return pb.ImageFacts(width=image.width, height=image.height, bytes=image.bytes)


def _match(match: ScoredItem) -> pb.Match:
    message = pb.Match(
        id=match.item.id,
        score=match.score,
        metadata=match.item.metadata,
        whole_image=match.region is None,
        image=_image_message(match.item.image),
    )
    if match.region is not None:
        message.region.CopyFrom(_region_message(match.region))
    return message
