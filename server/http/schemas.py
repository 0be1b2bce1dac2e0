"""The JSON bodies of the HTTP API: what comes in (checked by pydantic for shape and type; the
core checks the rest, as for gRPC) and what goes out. `GET /openapi.json` is made from these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ExampleIn",
    "SearchIn",
    "RegionJson",
    "MatchOut",
    "SearchOut",
    "EmbeddingsIn",
    "EmbeddingOut",
    "EmbeddingsOut",
    "ItemIn",
    "ItemOut",
    "WrittenOut",
    "DeletedOut",
    "DeleteIn",
    "DeletedManyOut",
    "NeighbourOut",
    "ItemNeighboursOut",
    "ClusterOut",
    "ClustersOut",
    "DuplicatesOut",
    "MetadataIn",
    "UpdatedOut",
    "ImageFactsOut",
    "StatsOut",
    "ErrorBody",
    "ErrorOut",
]

Box = list[float]  # [x0, y0, x1, y1]: fractions of the image's upright width and height


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExampleIn(_Strict):
    """Exactly one of: `text`, `image` (base64, or a data: URI), a stored item's `id`, a
    `vector`."""

    text: str | None = None
    image: str | None = Field(None, description="base64 of the encoded image, or a data: URI")
    id: str | None = None
    vector: list[float] | None = None


class SearchIn(ExampleIn):
    """A search by one of `text`, `image`, `id` or `vector`, and/or by several `positives`;
    `negatives` steer away (the normalised mean of the positives minus `negative_weight`
    times the mean of the negatives)."""

    positives: list[ExampleIn] = Field(default_factory=list)
    negatives: list[ExampleIn] = Field(default_factory=list)
    negative_weight: float | None = Field(None, description="0 to 1; unset: 0.5")
    k: int = Field(10, description="matches (distinct items), 1 to 1000")
    filter: dict[str, str] = Field(default_factory=dict, description="metadata pairs to match")
    box: Box | None = Field(None, description="with `image`: search with this part of it")
    min_score: float | None = Field(None, description="lowest cosine similarity, -1 to 1")
    exclude_self: bool = Field(False, description="leave out the items named by id")


class RegionJson(_Strict):
    box: Box
    label: str = ""


class ImageFactsOut(BaseModel):
    """The item's image as the server saw it when it was added."""

    width: int = Field(description="pixels, as seen upright (EXIF orientation applied)")
    height: int
    bytes: int = Field(description="the file's size as it was sent")


IMAGE_FACTS = Field(
    default=None,
    description="null: added as a vector, or stored before the server recorded image sizes",
)


class MatchOut(BaseModel):
    id: str
    score: float = Field(description="cosine similarity, -1 to 1")
    metadata: dict[str, str]
    region: RegionJson | None = Field(description="the region that matched; null: whole image")
    image: ImageFactsOut | None = IMAGE_FACTS


class SearchOut(BaseModel):
    matches: list[MatchOut]
    exact: bool = Field(description="exhaustive search (false: the HNSW index)")


class EmbeddingsIn(BaseModel):
    """OpenAI's embeddings request: each input is a text, or an image as a data:image/...;
    base64 URI. `model` is accepted whatever it says: the answer names the server's."""

    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class EmbeddingOut(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of float32 LE")


class EmbeddingsOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingOut]
    model: str
    usage: dict[str, int]


class ItemIn(_Strict):
    """An item to store (upsert): an `image` (base64) or a `vector`, with metadata; an image may
    bring regions, and choose the region policy (`none` or `grid`; unset: the server's)."""

    image: str | None = None
    vector: list[float] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    regions: list[RegionJson] = Field(default_factory=list)
    region_policy: Literal["none", "grid"] | None = None


class ItemOut(BaseModel):
    id: str
    metadata: dict[str, str]
    regions: list[RegionJson]
    vector: list[float] | None = None
    image: ImageFactsOut | None = IMAGE_FACTS


class WrittenOut(BaseModel):
    id: str
    replaced: bool


class DeletedOut(BaseModel):
    deleted: int


class DeleteIn(_Strict):
    ids: list[str]


class DeletedManyOut(BaseModel):
    deleted: int = Field(description="how many of the ids were stored and are now removed")
    missing: list[str] = Field(description="the ids that were not stored")


class ClusterOut(BaseModel):
    size: int = Field(description="sampled whole images in the group")
    representatives: list[MatchOut] = Field(
        description="the items nearest its centre, nearest first; score: cosine to the centre"
    )


class ClustersOut(BaseModel):
    """Groups of similar items, largest first, among `sampled` of `total` whole images."""

    clusters: list[ClusterOut]
    sampled: int
    total: int


class MetadataIn(_Strict):
    """Set these pairs and remove these keys on every item named."""

    ids: list[str]
    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class UpdatedOut(BaseModel):
    updated: int = Field(description="how many of the ids were stored and now carry the change")
    missing: list[str] = Field(description="the ids that were not stored")


class NeighbourOut(BaseModel):
    id: str
    score: float
    image: ImageFactsOut | None = IMAGE_FACTS


class ItemNeighboursOut(BaseModel):
    id: str
    neighbours: list[NeighbourOut]
    image: ImageFactsOut | None = IMAGE_FACTS


class DuplicatesOut(BaseModel):
    """One page of a near-duplicate scan: the page's items that have neighbours at or above the
    threshold. Ask again with `cursor=next_cursor` until it is null."""

    items: list[ItemNeighboursOut]
    scanned: int = Field(description="items looked at in this page")
    total: int = Field(description="items in the collection")
    next_cursor: int | None


class StatsOut(BaseModel):
    """What the server runs and holds (gRPC `Stats`), and the web app's duplicates threshold."""

    items: int
    vectors: int = Field(description="whole images and regions")
    dims: int
    model_id: str
    random_weights: bool = Field(description="true: results carry no meaning")
    precision: str
    providers: list[str]
    preprocess_mode: str
    index: dict[str, Any]
    index_version: str = Field(description="a built index's version; empty for a data directory")
    shards: list[dict[str, Any]]
    queue_depth: int
    batches: int
    mean_batch_size: float
    text_enabled: bool
    text_precision: str
    uptime_seconds: float
    version: str
    model_family: str
    model_revision: str = Field(description="the hub revision; empty when not from the hub")
    manifest_sha256: str = Field(description="of the model package's manifest.json")
    score_scale: dict[str, Any] | None = Field(
        description="the family's probability, sigmoid(cosine * scale + bias); null for CLIP"
    )
    disk_bytes: int = Field(description="the data directory's, or the built index's")
    duplicates_threshold: float
    duplicates_threshold_calibrated: bool = Field(description="set by --duplicates-threshold")


class ErrorBody(BaseModel):
    code: str = Field(description="the gRPC status name, e.g. INVALID_ARGUMENT")
    type: str = Field(description="the server's error class, e.g. InvalidImageError")
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody
