"""The HTTP API's routes, one function each, over the core that `app.state.cores` holds.

Like the gRPC service they only translate (`convert`): each finds the core through the
`CoreSlot` at the moment it needs it, so a request to a server still starting is parsed first
and refused after, as over gRPC.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.params import Depends as Dependency
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from lookalike.server.core import CoreSlot
from lookalike.server.errors import InvalidArgumentError, NotFoundError
from lookalike.server.http import convert
from lookalike.server.http.schemas import (
    ClusterOut,
    ClustersOut,
    DeletedManyOut,
    DeletedOut,
    DeleteIn,
    DuplicatesOut,
    EmbeddingOut,
    EmbeddingsIn,
    EmbeddingsOut,
    ErrorOut,
    ItemIn,
    ItemOut,
    MetadataIn,
    SearchIn,
    SearchOut,
    StatsOut,
    UpdatedOut,
    WrittenOut,
)
from lookalike.server.request_types import ClustersQuery, MetadataUpdate, NeighboursQuery

__all__ = ["BODY_MODELS", "STATIC", "router"]

STATIC = Path(__file__).parent / "static"
DEFAULT_DUPLICATES_THRESHOLD = 0.95  # clip-retrieval's dedup threshold; calibrate per model
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    for status, description in {
        400: "bad input (INVALID_ARGUMENT)",
        401: "missing or wrong token",
        404: "no such item (NOT_FOUND)",
        409: "the server's setup refuses this (FAILED_PRECONDITION)",
        413: "a size limit (RESOURCE_EXHAUSTED)",
        429: "the queue is full: retry with backoff (RESOURCE_EXHAUSTED)",
        500: "a fault in the server; it logged it (INTERNAL)",
        503: "starting, draining or failing: retry (UNAVAILABLE)",
        507: "the data directory's disk is full (RESOURCE_EXHAUSTED)",
    }.items()
}
BODY_ERRORS = {
    **ERRORS,
    415: {
        "model": ErrorOut,
        "description": "a body not sent as application/json (or as multipart/form-data, where "
        "a form is taken)",
    },
}
BODY_MODELS = (SearchIn, ItemIn)  # read by the routes themselves (JSON or a form): in the schema


def _cores(request: Request) -> CoreSlot:
    return request.app.state.cores  # type: ignore[no-any-return]


def _not_serving(request: Request) -> Callable[[], str | None]:
    return request.app.state.not_serving  # type: ignore[no-any-return]


def _calibrated_threshold(request: Request) -> float | None:
    return request.app.state.settings.duplicates_threshold  # type: ignore[no-any-return]


def _body_sent_as(*media_types: str) -> Dependency:
    """A route's check that its body comes as one of `media_types`, or a 415: a page on another
    origin may POST text/plain without a CORS preflight, so a body must say that it is JSON."""
    expected = " or ".join(media_types)

    async def check(request: Request) -> None:
        given = convert.media_type(request)
        if given not in media_types:
            sent = f"this request's is {given}" if given else "this request names none"
            raise HTTPException(415, f"Content-Type must be {expected}; {sent}")

    return Depends(check)


Cores = Annotated[CoreSlot, Depends(_cores)]
JSON_BODY = _body_sent_as(convert.JSON)
JSON_OR_FORM_BODY = _body_sent_as(convert.JSON, convert.MULTIPART)
router = APIRouter()


def _body_schema(model: str, form: dict[str, Any]) -> dict[str, Any]:
    """A request body taken as JSON (`model`) or as a multipart form (an image file)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}},
                convert.MULTIPART: {"schema": {"type": "object", "properties": form}},
            },
        }
    }


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


@router.get("/healthz", summary="SERVING, or NOT_SERVING (503); open, like gRPC health")
async def healthz(
    not_serving: Annotated[Callable[[], str | None], Depends(_not_serving)],
) -> JSONResponse:
    if not_serving() is not None:  # the reason is in the server's log, not for anyone
        return JSONResponse({"status": "NOT_SERVING"}, 503)
    return JSONResponse({"status": "SERVING"})


@router.post(
    "/v1/search",
    response_model=SearchOut,
    responses=BODY_ERRORS,
    dependencies=[JSON_OR_FORM_BODY],
    summary="The most similar items to an image, a text, a stored item, a vector, or several "
    "examples",
    openapi_extra=_body_schema(
        "SearchIn",
        {
            "image": {"type": "string", "format": "binary"},
            "k": {"type": "integer"},
            "filter": {"type": "string", "description": "a JSON object of metadata pairs"},
            "box": {"type": "string", "description": "x0,y0,x1,y1"},
            "min_score": {"type": "number"},
        },
    ),
)
async def search(request: Request, cores: Cores) -> SearchOut:
    if convert.is_multipart(request):
        form = await request.form()
        fields = {
            "k": form.get("k", 10),
            "min_score": form.get("min_score"),
            "filter": convert.json_field(form.get("filter"), "filter", {}),
            "box": convert.box_field(form.get("box")),
        }
        body = convert.parsed(SearchIn, fields)
        image = await convert.upload(form.get("image"), "image")
        query = convert.search_query(body, image=image)
    else:
        query = convert.search_query(convert.parsed(SearchIn, await request.body()))
    result = await cores.get().search(query)
    return SearchOut(matches=[convert.match_json(m) for m in result.matches], exact=result.exact)


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingsOut,
    responses=BODY_ERRORS,
    dependencies=[JSON_BODY],
    summary="OpenAI-compatible embeddings: texts, and images as data:image/...;base64 URIs",
)
async def embeddings(body: EmbeddingsIn, cores: Cores) -> EmbeddingsOut:
    core = cores.get()
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs:
        raise InvalidArgumentError("input is empty: send at least one text or image")
    if body.dimensions is not None and body.dimensions != core.model.dims:
        raise InvalidArgumentError(
            f"dimensions={body.dimensions}: this model's embeddings have {core.model.dims}"
        )
    uris = [convert.image_uri(text, f"input {i}") for i, text in enumerate(inputs)]
    images = [(i, image) for i, image in enumerate(uris) if image is not None]
    texts = [(i, text) for i, text in enumerate(inputs) if uris[i] is None]
    vectors: dict[int, np.ndarray] = {}
    if images:
        embedded = await core.embed([image for _, image in images])
        vectors.update(zip((i for i, _ in images), embedded.vectors, strict=True))
    if texts:
        embedded = await core.embed_texts([text for _, text in texts])
        vectors.update(zip((i for i, _ in texts), embedded.vectors, strict=True))
    return EmbeddingsOut(
        data=[
            EmbeddingOut(index=i, embedding=convert.encoded(vectors[i], body.encoding_format))
            for i in range(len(inputs))
        ],
        model=core.model.model_id,
        usage={"prompt_tokens": 0, "total_tokens": 0},  # tokens are not counted
    )


@router.put(
    "/v1/items/{item_id:path}",
    response_model=WrittenOut,
    responses=BODY_ERRORS,
    dependencies=[JSON_OR_FORM_BODY],
    summary="Store an item (upsert): an image or a vector, with metadata",
    openapi_extra=_body_schema(
        "ItemIn",
        {
            "image": {"type": "string", "format": "binary"},
            "metadata": {"type": "string", "description": "a JSON object"},
            "region_policy": {"type": "string", "enum": ["none", "grid"]},
        },
    ),
)
async def put_item(item_id: str, request: Request, cores: Cores) -> WrittenOut:
    if convert.is_multipart(request):
        form = await request.form()
        fields = {
            "metadata": convert.json_field(form.get("metadata"), "metadata", {}),
            "region_policy": form.get("region_policy"),
        }
        body = convert.parsed(ItemIn, fields)
        image = await convert.upload(form.get("image"), "image")
        item = convert.add_item(item_id, body, image=image)
    else:
        item = convert.add_item(item_id, convert.parsed(ItemIn, await request.body()))
    written = await cores.get().add(item)
    return WrittenOut(id=written.id, replaced=written.replaced)


@router.get(
    "/v1/items/{item_id:path}/thumbnail",
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}},
    response_class=Response,
    summary="The item's thumbnail (JPEG), made when it was added",
)
async def thumbnail(item_id: str, cores: Cores) -> Response:
    jpeg = await cores.get().thumbnail(item_id)
    return Response(jpeg, media_type="image/jpeg", headers={"cache-control": "no-cache"})


@router.get("/v1/items/{item_id:path}", response_model=ItemOut, responses=ERRORS)
async def get_item(item_id: str, cores: Cores, include_vector: bool = False) -> ItemOut:
    item = await cores.get().get(item_id, with_vector=include_vector)
    return ItemOut(
        id=item.id,
        metadata=item.metadata,
        regions=[convert.region_json(region) for region in item.regions],
        vector=None if item.vector is None else item.vector.tolist(),
        image=convert.image_json(item.image),
    )


@router.delete("/v1/items/{item_id:path}", response_model=DeletedOut, responses=ERRORS)
async def delete_item(item_id: str, cores: Cores) -> DeletedOut:
    deleted = await cores.get().delete([item_id])
    if deleted.missing:
        raise NotFoundError(f"no item with id {item_id!r}")
    return DeletedOut(deleted=deleted.deleted)


@router.post(
    "/v1/delete",
    response_model=DeletedManyOut,
    responses=BODY_ERRORS,
    dependencies=[JSON_BODY],
    summary="Remove several items in one durable commit; ids not stored are listed",
)
async def delete_items(body: DeleteIn, cores: Cores) -> DeletedManyOut:
    deleted = await cores.get().delete(body.ids)
    return DeletedManyOut(deleted=deleted.deleted, missing=deleted.missing)


@router.get(
    "/v1/clusters",
    response_model=ClustersOut,
    responses=ERRORS,
    summary="Groups of similar items without a query, largest first, each with the items "
    "nearest its centre; at most `sample` whole images are clustered",
)
async def clusters(
    cores: Cores,
    count: int = Query(ClustersQuery().count, description="groups, 1 to 100"),
    per_cluster: int = Query(ClustersQuery().per_cluster, description="items shown per group"),
    sample: int = Query(ClustersQuery().sample, description="whole images clustered at most"),
) -> ClustersOut:
    query = ClustersQuery(count=count, per_cluster=per_cluster, sample=sample)
    found = await cores.get().clusters(query)
    return ClustersOut(
        clusters=[
            ClusterOut(
                size=cluster.size,
                representatives=[convert.match_json(m) for m in cluster.representatives],
            )
            for cluster in found.clusters
        ],
        sampled=found.sampled,
        total=found.total,
    )


@router.post(
    "/v1/metadata",
    response_model=UpdatedOut,
    responses=BODY_ERRORS,
    dependencies=[JSON_BODY],
    summary="Set pairs and remove keys on several items' metadata (tag them), in one durable "
    "commit; ids not stored are listed",
)
async def update_metadata(body: MetadataIn, cores: Cores) -> UpdatedOut:
    update = MetadataUpdate(ids=body.ids, set=body.set, remove=body.remove)
    updated = await cores.get().update_metadata(update)
    return UpdatedOut(updated=updated.updated, missing=updated.missing)


@router.get("/v1/stats", response_model=StatsOut, responses=ERRORS)
async def stats(
    cores: Cores, calibrated: Annotated[float | None, Depends(_calibrated_threshold)]
) -> StatsOut:
    """What the server runs and holds."""
    return StatsOut(
        **convert.stats_json(await cores.get().stats()),
        duplicates_threshold=DEFAULT_DUPLICATES_THRESHOLD if calibrated is None else calibrated,
        duplicates_threshold_calibrated=calibrated is not None,
    )


@router.get(
    "/v1/duplicates",
    response_model=DuplicatesOut,
    responses=ERRORS,
    summary="One page of near-duplicate candidates: items with neighbours at or above "
    "`threshold` (pass `next_cursor` back as `cursor` for the next page)",
)
async def duplicates(
    cores: Cores,
    threshold: float = Query(ge=-1, le=1, description="cosine: pairs at or above it"),
    k: int = 10,
    cursor: int = 0,
    filter: Sequence[str] = Query((), description="KEY=VALUE, repeatable"),
) -> DuplicatesOut:
    core = cores.get()
    query = NeighboursQuery(min_score=threshold, k=k, filter=convert.pairs(filter))
    page = await core.neighbours_page(query, cursor)
    return DuplicatesOut(
        items=[convert.neighbours_json(item) for item in page.items],
        scanned=page.scanned,
        total=core.item_count,
        next_cursor=page.cursor,
    )
