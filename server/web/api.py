"""The HTTP/JSON transport: the JSON API and the web app, over the same core as gRPC.

Like the gRPC service it only translates: JSON (or a multipart upload) to the core's plain
types, the core's results to JSON, and its errors through `status.http_status` to a JSON error
naming the same gRPC code. No validation, batching or error of its own beyond the JSON's shape.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from lookalike.server.core import CoreSlot, ServerStats, package_version
from lookalike.server.errors import InvalidArgumentError, LookalikeError, NotFoundError
from lookalike.server.index import kernel
from lookalike.server.metrics import Metrics
from lookalike.server.regions import Region, RegionPolicy
from lookalike.server.repository import ScoredItem
from lookalike.server.request_types import (
    NEGATIVE_WEIGHT,
    AddItem,
    Example,
    NeighboursQuery,
    SearchQuery,
)
from lookalike.server.status import grpc_status, http_status
from lookalike.server.web.guard import Guard, error_json
from lookalike.server.web.schemas import (
    DeletedManyOut,
    DeletedOut,
    DeleteIn,
    DuplicatesOut,
    EmbeddingOut,
    EmbeddingsIn,
    EmbeddingsOut,
    ErrorOut,
    ExampleIn,
    ItemIn,
    ItemNeighboursOut,
    ItemOut,
    MatchOut,
    NeighbourOut,
    RegionJson,
    SearchIn,
    SearchOut,
    StatsOut,
    WrittenOut,
)

__all__ = ["HttpSettings", "body_limit", "create_api"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
DATA_URI = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.ASCII)
MULTIPART = "multipart/form-data"
ModelT = TypeVar("ModelT", bound=BaseModel)
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


def body_limit(max_message_bytes: int) -> int:
    """The largest HTTP body for gRPC's message limit: its bytes as base64, and room for the
    JSON around them."""
    return max_message_bytes * 4 // 3 + 2**16


@dataclasses.dataclass(frozen=True, kw_only=True)
class HttpSettings:
    token: str | None = dataclasses.field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = body_limit(64 * 2**20)
    duplicates_threshold: float | None = None  # calibrated for the model, if it was


def create_api(
    cores: CoreSlot,
    metrics: Metrics,
    settings: HttpSettings,
    *,
    not_serving: Callable[[], str | None],
) -> Any:
    """The ASGI app. `not_serving()` says why the server does not serve, or None when it does
    (what /healthz reports)."""
    app = FastAPI(
        title="Lookalike",
        summary="Image search by image, text, stored item or several examples",
        version=package_version(),
        docs_url=None,  # Swagger UI loads from a CDN: the server works offline
        redoc_url=None,
    )
    _add_error_handlers(app)
    _add_routes(app, cores, settings, not_serving)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    guarded = Guard(
        app, token=settings.token, max_body_bytes=settings.max_body_bytes, metrics=metrics
    )
    if not settings.cors_origins:
        return guarded
    # outside the guard: a preflight carries no token, and a refusal must be readable by the
    # page that asked
    return CORSMiddleware(
        guarded,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "PUT", "DELETE"],
        allow_headers=["authorization", "content-type"],
    )


def _add_error_handlers(app: FastAPI) -> None:
    def answer(status: int, code: str, kind: str, message: str) -> Response:
        headers = {"retry-after": "1"} if status in (429, 503) else None
        body = error_json(code, kind, message)
        return Response(body, status, headers=headers, media_type="application/json")

    async def lookalike_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LookalikeError)
        return answer(http_status(exc), grpc_status(exc).name, type(exc).__name__, str(exc))

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return answer(400, "INVALID_ARGUMENT", "InvalidArgumentError", _explain(exc.errors()))

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("HTTP %s %s failed unexpectedly", request.method, request.url.path, exc_info=exc)
        return answer(500, "INTERNAL", "InternalError", "internal error; the server logged it")

    app.add_exception_handler(LookalikeError, lookalike_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)


def _add_routes(
    app: FastAPI, cores: CoreSlot, settings: HttpSettings, not_serving: Callable[[], str | None]
) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    @app.get("/healthz", summary="SERVING, or NOT_SERVING (503); open, like gRPC health")
    async def healthz() -> JSONResponse:
        if not_serving() is not None:  # the reason is in the server's log, not for anyone
            return JSONResponse({"status": "NOT_SERVING"}, 503)
        return JSONResponse({"status": "SERVING"})

    @app.post(
        "/v1/search",
        response_model=SearchOut,
        responses=ERRORS,
        summary="The most similar items to an image, a text, a stored item, a vector, or "
        "several examples",
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
    async def search(request: Request) -> SearchOut:
        if _is_multipart(request):
            form = await request.form()
            fields = {
                "k": form.get("k", 10),
                "min_score": form.get("min_score"),
                "filter": _json_field(form.get("filter"), "filter", {}),
                "box": _box_field(form.get("box")),
            }
            body = _parsed(SearchIn, fields)
            query = _search_query(body, image=await _upload(form.get("image"), "image"))
        else:
            query = _search_query(_parsed(SearchIn, await request.body()))
        result = await cores.get().search(query)
        return SearchOut(matches=[_match(m) for m in result.matches], exact=result.exact)

    @app.post(
        "/v1/embeddings",
        response_model=EmbeddingsOut,
        responses=ERRORS,
        summary="OpenAI-compatible embeddings: texts, and images as data:image/...;base64 URIs",
    )
    async def embeddings(body: EmbeddingsIn) -> EmbeddingsOut:
        core = cores.get()
        inputs = [body.input] if isinstance(body.input, str) else body.input
        if not inputs:
            raise InvalidArgumentError("input is empty: send at least one text or image")
        if body.dimensions is not None and body.dimensions != core.model.dims:
            raise InvalidArgumentError(
                f"dimensions={body.dimensions}: this model's embeddings have {core.model.dims}"
            )
        uris = [_image_uri(text, f"input {i}") for i, text in enumerate(inputs)]
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
                EmbeddingOut(index=i, embedding=_encoded(vectors[i], body.encoding_format))
                for i in range(len(inputs))
            ],
            model=core.model.model_id,
            usage={"prompt_tokens": 0, "total_tokens": 0},  # tokens are not counted
        )

    @app.put(
        "/v1/items/{item_id:path}",
        response_model=WrittenOut,
        responses=ERRORS,
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
    async def put_item(item_id: str, request: Request) -> WrittenOut:
        if _is_multipart(request):
            form = await request.form()
            fields = {
                "metadata": _json_field(form.get("metadata"), "metadata", {}),
                "region_policy": form.get("region_policy"),
            }
            body = _parsed(ItemIn, fields)
            item = _add_item(item_id, body, image=await _upload(form.get("image"), "image"))
        else:
            item = _add_item(item_id, _parsed(ItemIn, await request.body()))
        written = await cores.get().add(item)
        return WrittenOut(id=written.id, replaced=written.replaced)

    @app.get(
        "/v1/items/{item_id:path}/thumbnail",
        responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}},
        response_class=Response,
        summary="The item's thumbnail (JPEG), made when it was added",
    )
    async def thumbnail(item_id: str) -> Response:
        jpeg = await cores.get().thumbnail(item_id)
        return Response(jpeg, media_type="image/jpeg", headers={"cache-control": "no-cache"})

    @app.get("/v1/items/{item_id:path}", response_model=ItemOut, responses=ERRORS)
    async def get_item(item_id: str, include_vector: bool = False) -> ItemOut:
        item = await cores.get().get(item_id, with_vector=include_vector)
        return ItemOut(
            id=item.id,
            metadata=item.metadata,
            regions=[_region_json(region) for region in item.regions],
            vector=None if item.vector is None else item.vector.tolist(),
        )

    @app.delete("/v1/items/{item_id:path}", response_model=DeletedOut, responses=ERRORS)
    async def delete_item(item_id: str) -> DeletedOut:
        deleted = await cores.get().delete([item_id])
        if deleted.missing:
            raise NotFoundError(f"no item with id {item_id!r}")
        return DeletedOut(deleted=deleted.deleted)

    @app.post(
        "/v1/delete",
        response_model=DeletedManyOut,
        responses=ERRORS,
        summary="Remove several items in one durable commit; ids not stored are listed",
    )
    async def delete_items(body: DeleteIn) -> DeletedManyOut:
        deleted = await cores.get().delete(body.ids)
        return DeletedManyOut(deleted=deleted.deleted, missing=deleted.missing)

    @app.get("/v1/stats", response_model=StatsOut, responses=ERRORS)
    async def stats() -> StatsOut:
        """What the server runs and holds."""
        calibrated = settings.duplicates_threshold
        return StatsOut(
            **_stats_json(await cores.get().stats()),
            duplicates_threshold=DEFAULT_DUPLICATES_THRESHOLD if calibrated is None else calibrated,
            duplicates_threshold_calibrated=calibrated is not None,
        )

    @app.get(
        "/v1/duplicates",
        response_model=DuplicatesOut,
        responses=ERRORS,
        summary="One page of near-duplicate candidates: items with neighbours at or above "
        "`threshold` (pass `next_cursor` back as `cursor` for the next page)",
    )
    async def duplicates(
        threshold: float = Query(ge=-1, le=1, description="cosine: pairs at or above it"),
        k: int = 10,
        cursor: int = 0,
        filter: Sequence[str] = Query((), description="KEY=VALUE, repeatable"),
    ) -> DuplicatesOut:
        core = cores.get()
        query = NeighboursQuery(min_score=threshold, k=k, filter=_pairs(filter))
        page = await core.neighbours_page(query, cursor)
        return DuplicatesOut(
            items=[
                ItemNeighboursOut(
                    id=item.id, neighbours=[NeighbourOut(id=i, score=s) for i, s in item.neighbours]
                )
                for item in page.items
            ],
            scanned=page.scanned,
            total=core.item_count,
            next_cursor=page.cursor,
        )


# -- JSON to the core's types ---------------------------------------------------------------


def _parsed(model: type[ModelT], data: bytes | dict[str, Any]) -> ModelT:
    """A body the route reads itself, as `model`; its shape's faults as InvalidArgumentError."""
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidArgumentError(_explain(exc.errors())) from None


def _search_query(body: SearchIn, *, image: bytes | None = None) -> SearchQuery:
    main = _example(body, "the query")
    return SearchQuery(
        image=image if image is not None else main.image,
        text=main.text,
        item_id=main.item_id,
        vector=main.vector,
        positives=[_example(e, f"positive {i}") for i, e in enumerate(body.positives)],
        negatives=[_example(e, f"negative {i}") for i, e in enumerate(body.negatives)],
        negative_weight=NEGATIVE_WEIGHT if body.negative_weight is None else body.negative_weight,
        k=body.k,
        min_score=body.min_score,
        filter=body.filter,
        exclude_self=body.exclude_self,
        box=None if body.box is None else _region(body.box, "", "box"),
    )


def _example(body: ExampleIn, name: str) -> Example:
    return Example(
        image=None if body.image is None else _base64(body.image, f"{name}'s image"),
        text=body.text,
        item_id=body.id,
        vector=body.vector,
    )


def _add_item(item_id: str, body: ItemIn, *, image: bytes | None = None) -> AddItem:
    if image is None and body.image is not None:
        image = _base64(body.image, "image")
    return AddItem(
        item_id,
        image=image,
        vector=body.vector,
        metadata=body.metadata,
        regions=[_region(r.box, r.label, f"region {i}") for i, r in enumerate(body.regions)],
        region_policy=None if body.region_policy is None else RegionPolicy(body.region_policy),
    )


def _region(box: Sequence[float], label: str, name: str) -> Region:
    if len(box) != 4:
        raise InvalidArgumentError(f"{name} is [x0, y0, x1, y1], got {len(box)} numbers")
    x0, y0, x1, y1 = box
    return Region(x0, y0, x1, y1, label)


def _base64(text: str, name: str) -> bytes:
    """Base64 (standard alphabet, padded), or a data: URI carrying it."""
    try:
        return base64.b64decode(DATA_URI.sub("", text, count=1), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgumentError(f"{name} is not valid base64 ({exc})") from None


def _image_uri(text: str, name: str) -> bytes | None:
    """An embeddings input's image, when it is a data:image/...;base64 URI."""
    if not text.startswith("data:image/"):
        return None
    if DATA_URI.match(text) is None:
        raise InvalidArgumentError(f"{name} starts like an image but is not data:image/...;base64,")
    return _base64(text, name)


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith(MULTIPART)


async def _upload(field: Any, name: str) -> bytes | None:
    if field is None:
        return None
    if not isinstance(field, UploadFile):
        raise InvalidArgumentError(f"`{name}` must be a file in the form (curl -F {name}=@FILE)")
    return await field.read()


def _json_field(value: Any, name: str, default: Any) -> Any:
    if value is None:
        return default
    try:
        return json.loads(str(value))
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"`{name}` must be JSON: {exc}") from None


def _box_field(value: Any) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(part) for part in str(value).strip("[]").split(",")]
    except ValueError:
        raise InvalidArgumentError(f"box is x0,y0,x1,y1, got {value!r}") from None


def _pairs(listed: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for pair in listed:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidArgumentError(f"filter is KEY=VALUE, got {pair!r}")
        pairs[key] = value
    return pairs


# -- the core's results to JSON -------------------------------------------------------------


def _match(match: ScoredItem) -> MatchOut:
    region = None if match.region is None else _region_json(match.region)
    return MatchOut(
        id=match.item.id, score=match.score, metadata=match.item.metadata, region=region
    )


def _region_json(region: Region) -> RegionJson:
    return RegionJson(box=[region.x0, region.y0, region.x1, region.y1], label=region.label)


def _encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()  # type: ignore[no-any-return]


def _stats_json(stats: ServerStats) -> dict[str, Any]:
    model, repository, text = stats.model, stats.repository, stats.text_model
    return {
        "items": repository.items,
        "vectors": repository.vectors,
        "dims": model.dims,
        "model_id": model.model_id,
        "random_weights": model.random_weights,
        "precision": model.precision.value,
        "providers": list(model.providers),
        "preprocess_mode": stats.preprocess_mode,
        "index": {
            **dataclasses.asdict(repository.index),
            "kernel": kernel(repository.index.dtype, model.dims),
        },
        "index_version": repository.index_version,
        "shards": [dataclasses.asdict(shard) for shard in repository.shards],
        "queue_depth": stats.batcher.queue_depth,
        "batches": stats.batcher.batches,
        "mean_batch_size": stats.batcher.mean_batch_size,
        "text_enabled": text is not None,
        "text_precision": text.precision.value if text else "",
        "uptime_seconds": stats.uptime_seconds,
        "version": stats.version,
        "model_family": model.family,
        "model_revision": model.revision or "",
        "manifest_sha256": model.manifest_sha256,
        "score_scale": None if model.scores is None else dataclasses.asdict(model.scores),
    }


# -- the schema ------------------------------------------------------------------------------


def _body_schema(model: str, form: dict[str, Any]) -> dict[str, Any]:
    """A request body taken as JSON (`model`) or as a multipart form (an image file)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}},
                MULTIPART: {"schema": {"type": "object", "properties": form}},
            },
        }
    }


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, plus the models of the bodies the routes read themselves."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        models: tuple[type[BaseModel], ...] = (SearchIn, ItemIn)
        for model in models:
            full = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(full.pop("$defs", {}))
            components[model.__name__] = full
        app.openapi_schema = schema
    return app.openapi_schema


def _explain(errors: Sequence[Any]) -> str:
    """Pydantic's errors as one sentence: where, and what is wrong."""
    parts = []
    for error in errors[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{where or 'the body'}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more
