"""JSON (and multipart forms) to the core's plain types, and the core's results to JSON.

Faults in a body's shape become `InvalidArgumentError`, worded for a person: the HTTP
transport's only checks of its own; every other check is the core's."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from lookalike.server.core import ServerStats
from lookalike.server.errors import InvalidArgumentError
from lookalike.server.http.schemas import (
    ExampleIn,
    ImageFactsOut,
    ItemIn,
    ItemNeighboursOut,
    MatchOut,
    NeighbourOut,
    RegionJson,
    SearchIn,
)
from lookalike.server.index.repository import ImageFacts, ItemNeighbours, ScoredItem
from lookalike.server.index.vector_index import kernel
from lookalike.server.regions import Region, RegionPolicy
from lookalike.server.request_types import NEGATIVE_WEIGHT, AddItem, Example, SearchQuery

__all__ = [
    "JSON",
    "MULTIPART",
    "add_item",
    "box_field",
    "encoded",
    "explain",
    "image_uri",
    "is_multipart",
    "image_json",
    "json_field",
    "match_json",
    "media_type",
    "neighbours_json",
    "pairs",
    "parsed",
    "region_json",
    "search_query",
    "stats_json",
    "upload",
]

DATA_URI = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.ASCII)
JSON = "application/json"
MULTIPART = "multipart/form-data"
ModelT = TypeVar("ModelT", bound=BaseModel)


def parsed(model: type[ModelT], data: bytes | dict[str, Any]) -> ModelT:
    """A body the route reads itself, as `model`; its shape's faults as InvalidArgumentError."""
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidArgumentError(explain(exc.errors())) from None


def search_query(body: SearchIn, *, image: bytes | None = None) -> SearchQuery:
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
        image=None if body.image is None else _base64_bytes(body.image, f"{name}'s image"),
        text=body.text,
        item_id=body.id,
        vector=body.vector,
    )


def add_item(item_id: str, body: ItemIn, *, image: bytes | None = None) -> AddItem:
    if image is None and body.image is not None:
        image = _base64_bytes(body.image, "image")
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


def _base64_bytes(text: str, name: str) -> bytes:
    """Base64 (standard alphabet, padded), or a data: URI carrying it."""
    try:
        return base64.b64decode(DATA_URI.sub("", text, count=1), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgumentError(f"{name} is not valid base64 ({exc})") from None


def image_uri(text: str, name: str) -> bytes | None:
    """An embeddings input's image, when it is a data:image/...;base64 URI."""
    if not text.startswith("data:image/"):
        return None
    if DATA_URI.match(text) is None:
        raise InvalidArgumentError(f"{name} starts like an image but is not data:image/...;base64,")
    return _base64_bytes(text, name)


def media_type(request: Request) -> str:
    """The body's Content-Type without its parameters (charset, boundary), in lower case; empty
    when the request names none."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def is_multipart(request: Request) -> bool:
    return media_type(request) == MULTIPART


async def upload(field: Any, name: str) -> bytes | None:
    if field is None:
        return None
    if not isinstance(field, UploadFile):
        raise InvalidArgumentError(f"`{name}` must be a file in the form (curl -F {name}=@FILE)")
    return await field.read()


def json_field(value: Any, name: str, default: Any) -> Any:
    if value is None:
        return default
    try:
        return json.loads(str(value))
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"`{name}` must be JSON: {exc}") from None


def box_field(value: Any) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(part) for part in str(value).strip("[]").split(",")]
    except ValueError:
        raise InvalidArgumentError(f"box is x0,y0,x1,y1, got {value!r}") from None


def pairs(listed: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for pair in listed:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidArgumentError(f"filter is KEY=VALUE, got {pair!r}")
        pairs[key] = value
    return pairs


def match_json(match: ScoredItem) -> MatchOut:
    region = None if match.region is None else region_json(match.region)
    return MatchOut(
        id=match.item.id,
        score=match.score,
        metadata=match.item.metadata,
        region=region,
        image=image_json(match.item.image),
    )


def neighbours_json(item: ItemNeighbours) -> ItemNeighboursOut:
    return ItemNeighboursOut(
        id=item.id,
        neighbours=[
            NeighbourOut(id=i, score=score, image=image_json(item.images.get(i)))
            for i, score in item.neighbours
        ],
        image=image_json(item.images.get(item.id)),
    )


def image_json(image: ImageFacts | None) -> ImageFactsOut | None:
    if image is None:
        return None
    return ImageFactsOut(width=image.width, height=image.height, bytes=image.bytes)


def region_json(region: Region) -> RegionJson:
    return RegionJson(box=[region.x0, region.y0, region.x1, region.y1], label=region.label)


def encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()  # type: ignore[no-any-return]


def stats_json(stats: ServerStats) -> dict[str, Any]:
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
        "disk_bytes": repository.disk_bytes,
    }


def explain(errors: Sequence[Any]) -> str:
    """Pydantic's errors as one sentence: where, and what is wrong."""
    parts = []
    for error in errors[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{where or 'the body'}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more
