"""`Client`: a typed, synchronous Python client for a Lookalike server.

Results are small dataclasses and numpy arrays; no protobuf type reaches the caller. Every call
has a deadline; idempotent calls are retried on UNAVAILABLE with exponential backoff by gRPC's
own retry policy.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from lookalike.client.errors import from_rpc_error
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc

__all__ = [
    "Client",
    "Match",
    "Item",
    "ImageFacts",
    "Region",
    "Example",
    "AddOutcome",
    "Deleted",
    "Updated",
    "Cluster",
    "ClusterMap",
    "Stats",
    "NewItem",
    "NeighboursPage",
    "ImageLike",
    "REGION_POLICIES",
]

ImageLike = bytes | str | Path  # encoded bytes, or a path to read
DEFAULT_TIMEOUT = 30.0
RETRIED_METHODS = ("Embed", "Add", "Search", "Get", "Delete", "Stats")  # all idempotent
REGION_POLICIES = {  # what `region_policy=` takes; None: the server's --regions
    "none": pb.REGION_POLICY_NONE,
    "grid": pb.REGION_POLICY_GRID,
}


@dataclasses.dataclass(frozen=True)
class Region:
    """A box on an image, as fractions of its upright width and height (0 to 1)."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str = ""

    @classmethod
    def parse(cls, text: str) -> Region:
        """From `x0,y0,x1,y1` (as the CLI's --box takes it)."""
        parts = text.split(",")
        if len(parts) != 4:
            raise ValueError(f"a box is x0,y0,x1,y1 (fractions of the image), got {text!r}")
        x0, y0, x1, y1 = (float(part) for part in parts)
        return cls(x0, y0, x1, y1)

    def _message(self) -> pb.Region:
        return pb.Region(x0=self.x0, y0=self.y0, x1=self.x1, y1=self.y1, label=self.label)

    @classmethod
    def _of(cls, message: pb.Region) -> Region:
        return cls(message.x0, message.y0, message.x1, message.y1, message.label)


@dataclasses.dataclass(frozen=True)
class Example:
    """One example for a search with several (`Client.search(positives=, negatives=)`): exactly
    one of an image (bytes or path), a text, a stored item's id, or a vector."""

    image: ImageLike | None = None
    text: str | None = None
    id: str | None = None
    vector: Sequence[float] | np.ndarray | None = None

    def _message(self) -> pb.Example:
        if sum(part is not None for part in (self.image, self.text, self.id, self.vector)) != 1:
            raise ValueError("an Example is exactly one of image=, text=, id= or vector=")
        if self.image is not None:
            return pb.Example(image=_read(self.image))
        if self.text is not None:
            return pb.Example(text=self.text)
        if self.id is not None:
            return pb.Example(id=self.id)
        return pb.Example(vector=pb.Vector(values=np.asarray(self.vector, np.float32).tolist()))


@dataclasses.dataclass(frozen=True)
class ImageFacts:
    """What the server recorded of an item's image when it was added: its size in pixels as
    seen upright, and the file's size in bytes."""

    width: int
    height: int
    bytes: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @classmethod
    def _of(cls, owner: Any) -> ImageFacts | None:
        """From a message with an `image` field; None where it is unset."""
        if not owner.HasField("image"):
            return None
        return cls(owner.image.width, owner.image.height, owner.image.bytes)


@dataclasses.dataclass(frozen=True)
class Match:
    id: str
    score: float
    metadata: dict[str, str]
    region: Region | None = None  # the item's region that matched; None: its whole image
    image: ImageFacts | None = None  # None: added as a vector, or before this was recorded


@dataclasses.dataclass(frozen=True)
class Item:
    id: str
    metadata: dict[str, str]
    vector: np.ndarray | None = None
    regions: list[Region] = dataclasses.field(default_factory=list)
    image: ImageFacts | None = None


@dataclasses.dataclass(frozen=True)
class NewItem:
    """One item for `add_many`: an image (bytes or path) or a vector, with metadata; an image
    may bring regions to store as vectors of their own, and choose the server's region
    policy ("none" or "grid"; None: the server's --regions)."""

    id: str
    image: ImageLike | None = None
    vector: Sequence[float] | np.ndarray | None = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    regions: Sequence[Region] = ()
    region_policy: str | None = None


@dataclasses.dataclass(frozen=True)
class AddOutcome:
    index: int
    id: str
    ok: bool
    error: str = ""
    code: grpc.StatusCode = grpc.StatusCode.OK
    replaced: bool = False


@dataclasses.dataclass(frozen=True)
class NeighboursPage:
    """A page of a neighbours scan: items with their close neighbours, and the progress."""

    neighbours: dict[str, list[tuple[str, float]]]  # id -> [(other id, score)], best first
    scanned: int
    total: int
    images: dict[str, ImageFacts] = dataclasses.field(default_factory=dict)  # where recorded


@dataclasses.dataclass(frozen=True)
class Deleted:
    deleted: int
    missing: list[str]


@dataclasses.dataclass(frozen=True)
class Cluster:
    size: int  # sampled whole images in the group
    representatives: list[Match]  # nearest its centre first; score: cosine to the centre


@dataclasses.dataclass(frozen=True)
class ClusterMap:
    clusters: list[Cluster]  # largest first
    sampled: int
    total: int


@dataclasses.dataclass(frozen=True)
class Updated:
    updated: int
    missing: list[str]


@dataclasses.dataclass(frozen=True)
class Stats:
    items: int
    vectors: int  # whole images and regions
    dims: int
    model_id: str
    random_weights: bool
    precision: str
    providers: list[str]
    preprocess_mode: str
    index: dict[str, Any]
    queue_depth: int
    uptime_seconds: float
    batches: int
    mean_batch_size: float
    version: str
    text_enabled: bool  # search and embed by text work
    text_precision: str  # the text tower's variant; empty without one
    text_queue_depth: int
    index_version: str = ""  # a built index's version; "" for a data directory
    # a built index's shards: number, items, vectors, replicas answering now
    shards: list[dict[str, int]] = dataclasses.field(default_factory=list)
    # the model's identity beside model_id and dims: what the collection records
    model_family: str = ""
    model_revision: str = ""
    manifest_sha256: str = ""
    # the family's calibrated probability, sigmoid(cosine * scale + bias), where it has one
    score_scale: dict[str, Any] | None = None
    disk_bytes: int = 0  # the data directory's, or the built index's


def _match(message: pb.Match) -> Match:
    region = None if message.whole_image else Region._of(message.region)
    return Match(message.id, message.score, dict(message.metadata), region, ImageFacts._of(message))


def _retry_service_config(attempts: int) -> str:
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [
                        {"service": "lookalike.v1.ImageSearch", "method": m}
                        for m in RETRIED_METHODS
                    ],
                    "retryPolicy": {
                        "maxAttempts": attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


class Client:
    """`Client("127.0.0.1:50051", token=..., tls=...)`; also a context manager."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = 4,
        max_message_bytes: int = 64 * 2**20,
    ) -> None:
        self.target, self.timeout = target, timeout
        options = [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _retry_service_config(attempts)),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if tls or root_certificates:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = pb_grpc.ImageSearchStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    # -- calls -----------------------------------------------------------------------------

    def embed(
        self, images: Sequence[ImageLike] | None = None, *, texts: Sequence[str] | None = None
    ) -> np.ndarray:
        """float32[N, D] unit-norm embeddings of images, or of texts (one kind per call), in
        order. Text embeddings share the images' space: search images with them."""
        if (images is None) == (texts is None):
            raise ValueError("give images or texts=")
        if texts is not None:
            request = pb.EmbedRequest(texts=list(texts))
        else:
            request = pb.EmbedRequest(images=[_read(i) for i in images or ()])
        response = self._call(self._stub.Embed, request)
        return np.array([e.values for e in response.embeddings], dtype=np.float32)

    def add(
        self,
        id: str,
        *,
        image: ImageLike | None = None,
        vector: Sequence[float] | np.ndarray | None = None,
        metadata: Mapping[str, str] | None = None,
        regions: Sequence[Region] = (),
        region_policy: str | None = None,
    ) -> bool:
        """Store (upsert) one item; durable on return. True when it replaced one."""
        item = NewItem(id, image, vector, metadata or {}, regions, region_policy)
        request = _add_request(item)
        return self._call(self._stub.Add, request).replaced

    def add_many(
        self, items: Iterable[NewItem], *, timeout: float | None = None
    ) -> Iterator[AddOutcome]:
        """Stream items; yields one outcome per item as soon as it is durable (or failed)."""
        requests = (_add_request(item) for item in items)
        try:
            for response in self._stub.AddStream(
                requests, timeout=timeout, metadata=self._metadata
            ):
                for result in response.results:
                    yield AddOutcome(
                        index=result.index,
                        id=result.id,
                        ok=result.code == 0,
                        error=result.error,
                        code=_status(result.code),
                        replaced=result.replaced,
                    )
        except grpc.RpcError as error:
            raise from_rpc_error(error, self.target) from None

    def search(
        self,
        *,
        image: ImageLike | None = None,
        vector: Sequence[float] | np.ndarray | None = None,
        id: str | None = None,
        text: str | None = None,
        k: int = 10,
        min_score: float | None = None,
        filter: Mapping[str, str] | None = None,
        exclude_self: bool = False,
        box: Region | None = None,
        positives: Sequence[Example] = (),
        negatives: Sequence[Example] = (),
        negative_weight: float | None = None,
    ) -> list[Match]:
        """The k most similar items, best first. Give one of image (with `box`: only that part
        of it), vector, id (a stored item) or text (a description, through CLIP's text tower),
        and/or several `positives`; `negatives` steer away from what they show (the server
        searches with the normalised mean of the positives minus `negative_weight`, 0.5 by
        default, times the mean of the negatives). `exclude_self` leaves out every item the
        query names by id."""
        if sum(q is not None for q in (image, vector, id, text)) > 1:
            raise ValueError("give one of image=, vector=, id= or text=, not several")
        if not positives and all(q is None for q in (image, vector, id, text)):
            raise ValueError("give one of image=, vector=, id= or text=, or positives=")
        request = pb.SearchRequest(
            k=k,
            filter=dict(filter or {}),
            exclude_self=exclude_self,
            positives=[example._message() for example in positives],
            negatives=[example._message() for example in negatives],
        )
        if negative_weight is not None:
            request.negative_weight = negative_weight
        if min_score is not None:
            request.min_score = min_score
        if box is not None:
            request.box.CopyFrom(box._message())
        if image is not None:
            request.image = _read(image)
        elif vector is not None:
            request.vector.values.extend(np.asarray(vector, dtype=np.float32).tolist())
        elif text is not None:
            request.text = text
        elif id is not None:
            request.id = str(id)
        response = self._call(self._stub.Search, request)
        return [_match(m) for m in response.matches]

    def neighbours(
        self,
        min_score: float,
        *,
        k: int = 10,
        filter: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Iterator[NeighboursPage]:
        """Scan the collection: each item with up to k other items whose whole image scores at
        least `min_score` against its own (near-duplicate candidates), page by page."""
        request = pb.NeighboursRequest(min_score=min_score, k=k, filter=dict(filter or {}))
        try:
            for page in self._stub.Neighbours(request, timeout=timeout, metadata=self._metadata):
                owners = [owner for item in page.items for owner in (item, *item.neighbours)]
                yield NeighboursPage(
                    {i.id: [(n.id, n.score) for n in i.neighbours] for i in page.items},
                    page.scanned,
                    page.total,
                    {o.id: image for o in owners if (image := ImageFacts._of(o)) is not None},
                )
        except grpc.RpcError as error:
            raise from_rpc_error(error, self.target) from None

    def get(self, id: str, *, include_vector: bool = False) -> Item:
        response = self._call(self._stub.Get, pb.GetRequest(id=id, include_vector=include_vector))
        vector = np.array(response.vector.values, dtype=np.float32) if include_vector else None
        regions = [Region._of(region) for region in response.regions]
        return Item(response.id, dict(response.metadata), vector, regions, ImageFacts._of(response))

    def delete(self, ids: Sequence[str]) -> Deleted:
        response = self._call(self._stub.Delete, pb.DeleteRequest(ids=list(ids)))
        return Deleted(response.deleted, list(response.missing))

    def clusters(
        self, count: int = 12, *, per_cluster: int = 4, sample: int = 10_000
    ) -> ClusterMap:
        """Groups of similar items without a query, largest first, each with the items nearest
        its centre, from at most `sample` whole images."""
        request = pb.ClustersRequest(count=count, per_cluster=per_cluster, sample=sample)
        response = self._call(self._stub.Clusters, request)
        return ClusterMap(
            [Cluster(c.size, [_match(m) for m in c.representatives]) for c in response.clusters],
            response.sampled,
            response.total,
        )

    def update_metadata(
        self,
        ids: Sequence[str],
        *,
        set: Mapping[str, str] | None = None,
        remove: Sequence[str] = (),
    ) -> Updated:
        """Set pairs and remove keys on the stored items' metadata (tag them), in one durable
        commit; their vectors stay."""
        request = pb.UpdateMetadataRequest(ids=list(ids), set=dict(set or {}), remove=list(remove))
        response = self._call(self._stub.UpdateMetadata, request)
        return Updated(response.updated, list(response.missing))

    def stats(self) -> Stats:
        r = self._call(self._stub.Stats, pb.StatsRequest())
        index = r.index
        return Stats(
            items=r.items,
            vectors=r.vectors,
            dims=r.dims,
            model_id=r.model_id,
            random_weights=r.random_weights,
            precision=r.precision,
            providers=list(r.providers),
            preprocess_mode=r.preprocess_mode,
            index={
                "metric": index.metric,
                "dtype": index.dtype,
                "connectivity": index.connectivity,
                "expansion_add": index.expansion_add,
                "expansion_search": index.expansion_search,
                "exact_search_below": index.exact_search_below,
                "kernel": index.kernel,
            },
            queue_depth=r.queue_depth,
            uptime_seconds=r.uptime_seconds,
            batches=r.batches,
            mean_batch_size=r.mean_batch_size,
            version=r.version,
            text_enabled=r.text_enabled,
            text_precision=r.text_precision,
            index_version=r.index_version,
            shards=[
                {"number": s.number, "items": s.items, "vectors": s.vectors, "replicas": s.replicas}
                for s in r.shards
            ],
            text_queue_depth=r.text_queue_depth,
            model_family=r.model_family,
            model_revision=r.model_revision,
            manifest_sha256=r.manifest_sha256,
            score_scale={
                "kind": r.score_scale.kind,
                "scale": r.score_scale.scale,
                "bias": r.score_scale.bias,
            }
            if r.HasField("score_scale")
            else None,
            disk_bytes=r.disk_bytes,
        )

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error, self.target) from None


def _read(image: ImageLike) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


def _add_request(item: NewItem) -> pb.AddRequest:
    request = pb.AddRequest(
        id=item.id,
        metadata=dict(item.metadata),
        regions=[region._message() for region in item.regions],
    )
    if item.region_policy is not None:
        if item.region_policy not in REGION_POLICIES:
            raise ValueError(f"region_policy is one of {sorted(REGION_POLICIES)}")
        request.region_policy = REGION_POLICIES[item.region_policy]
    if item.image is not None:
        request.image = _read(item.image)
    elif item.vector is not None:
        request.vector.values.extend(np.asarray(item.vector, dtype=np.float32).tolist())
    return request


def _status(code: int) -> grpc.StatusCode:
    return next((s for s in grpc.StatusCode if s.value[0] == code), grpc.StatusCode.UNKNOWN)
