"""What callers ask of the core, and the checks every request passes before any work is done.

Plain dataclasses, filled by any transport (the gRPC service, the HTTP routes, a test).
Each check raises `InvalidArgumentError` (or `LimitExceededError`) with a message for a person.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from lookalike.server.errors import InvalidArgumentError, LimitExceededError, TextTooLongError
from lookalike.server.item_ids import check_id
from lookalike.server.regions import Region, RegionPolicy, check_regions

__all__ = [
    "AddItem",
    "Example",
    "SearchQuery",
    "NeighboursQuery",
    "MetadataUpdate",
    "ClustersQuery",
    "RequestLimits",
    "MAX_K",
    "MAX_EXAMPLES",
    "NEGATIVE_WEIGHT",
    "check_metadata",
    "check_image_count",
    "check_texts",
    "unit_vector",
]

MAX_K = 1000
MAX_EXAMPLES = 64  # positives and negatives of one search, together
NEGATIVE_WEIGHT = 0.5  # how far a search moves away from the mean of its negatives
MAX_NEIGHBOURS = 100
MAX_METADATA_PAIRS = 64
MAX_METADATA_KEY_BYTES = 256
MAX_METADATA_VALUE_BYTES = 8192
MAX_IDS_PER_UPDATE = 10_000  # items whose metadata one call changes
MAX_CLUSTERS = 100
MAX_PER_CLUSTER = 32
MAX_CLUSTER_SAMPLE = 100_000  # whole images clustered by one call (about 10 s on 2 cores)

Values = Sequence[float] | np.ndarray


@dataclasses.dataclass(frozen=True, kw_only=True)
class RequestLimits:
    max_images_per_request: int = 256  # images, or texts, in one Embed request
    max_text_bytes: int = 2048  # UTF-8 bytes per text, checked before tokenising
    max_regions_per_item: int = 64  # given and server-made together

    def __post_init__(self) -> None:
        for name in ("max_images_per_request", "max_text_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1")
        if self.max_regions_per_item < 0:
            raise ValueError("max-regions must not be negative")


@dataclasses.dataclass(frozen=True)
class AddItem:
    """An item to store: its content is an image to embed, or a vector already made. An image
    may come with regions to embed as well, and a region policy (None: the server's)."""

    id: str
    image: bytes | None = None
    vector: Values | None = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    regions: Sequence[Region] = ()
    region_policy: RegionPolicy | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Example:
    """One example of what to find (or, as a negative, of what not to): exactly one of an
    image, a text, a stored item's id or a vector."""

    image: bytes | None = None
    text: str | None = None
    item_id: str | None = None
    vector: Values | None = None

    @property
    def is_set(self) -> bool:
        return any(part is not None for part in (self.image, self.text, self.item_id, self.vector))

    def check(self, limits: RequestLimits, name: str) -> None:
        parts = (self.image, self.vector, self.item_id, self.text)
        if sum(part is not None for part in parts) != 1:
            raise InvalidArgumentError(
                f"{name}: set exactly one of `image`, `text`, `id`, `vector`"
            )
        if self.item_id is not None:
            check_id(self.item_id)
        if self.text is not None:
            check_texts([self.text], limits)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchQuery:
    """Find the k nearest stored items to one of: an image, a vector, a stored item's id, a
    text; or to several examples of what to find (`positives`, the query above among them)
    and away from examples of what not to (`negatives`): the query vector is then the
    normalised mean of the positives' unit vectors minus `negative_weight` times the mean of
    the negatives'."""

    image: bytes | None = None
    vector: Values | None = None
    item_id: str | None = None
    text: str | None = None
    positives: Sequence[Example] = ()
    negatives: Sequence[Example] = ()
    negative_weight: float = NEGATIVE_WEIGHT
    k: int = 10
    min_score: float | None = None  # cosine similarity, -1 to 1
    filter: Mapping[str, str] = dataclasses.field(default_factory=dict)  # every pair must hold
    exclude_self: bool = False  # leave the items the query names by id out of the matches
    box: Region | None = None  # with `image`: search with this part of it

    @property
    def main(self) -> Example:
        """The query set in `image`, `vector`, `id` or `text` (unset when there is none)."""
        return Example(image=self.image, text=self.text, item_id=self.item_id, vector=self.vector)

    @property
    def has_examples(self) -> bool:
        return bool(self.positives or self.negatives)

    @property
    def all_positives(self) -> list[Example]:
        return [self.main, *self.positives] if self.main.is_set else list(self.positives)

    @property
    def named_ids(self) -> tuple[str, ...]:
        """The stored items the query names by id, positives and negatives."""
        examples = (*self.all_positives, *self.negatives)
        return tuple(dict.fromkeys(e.item_id for e in examples if e.item_id is not None))

    def check(self, limits: RequestLimits) -> None:
        """Everything but a vector's length and an image's bytes (the core and the decoder
        check those)."""
        if not 1 <= self.k <= MAX_K:
            raise InvalidArgumentError(f"k must be between 1 and {MAX_K}, got {self.k}")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise InvalidArgumentError(f"min_score must be between -1 and 1, got {self.min_score}")
        check_metadata(self.filter, "filter")
        main = (self.image, self.vector, self.item_id, self.text)
        if sum(part is not None for part in main) > 1:
            raise InvalidArgumentError("set one of `image`, `vector`, `id` or `text`, not several")
        if not self.all_positives:
            raise InvalidArgumentError(
                "no query: set one of `image`, `vector`, `id` or `text`, or give `positives`"
                + (" (negatives alone say only what not to find)" if self.negatives else "")
            )
        if self.main.is_set:
            self.main.check(limits, "the query")
        examples = (*self.all_positives, *self.negatives)
        if len(examples) > MAX_EXAMPLES:
            raise LimitExceededError(
                f"{len(examples)} examples in one search; the limit is {MAX_EXAMPLES}"
            )
        for kind, group in (("positive", self.positives), ("negative", self.negatives)):
            for position, example in enumerate(group):
                example.check(limits, f"{kind} {position}")
        for kind in ("image", "text"):  # each kind is one batch, under the Embed limit
            count = sum(getattr(example, kind) is not None for example in examples)
            if count > limits.max_images_per_request:
                raise LimitExceededError(
                    f"{count} example {kind}s in one search; the limit is "
                    f"{limits.max_images_per_request} (--max-images-per-request)"
                )
        if not 0.0 <= self.negative_weight <= 1.0:
            raise InvalidArgumentError(
                f"negative_weight must be between 0 and 1, got {self.negative_weight}"
            )
        if self.box is not None:
            if self.image is None:
                raise InvalidArgumentError("a box goes with a query by image: set `image`")
            check_regions([self.box], 1, what="the box")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NeighboursQuery:
    """Every item with the other items scoring at least `min_score` against it (up to `k`)."""

    min_score: float
    k: int = 10
    filter: Mapping[str, str] = dataclasses.field(default_factory=dict)  # both sides of a pair

    def check(self) -> None:
        if not 1 <= self.k <= MAX_NEIGHBOURS:
            raise InvalidArgumentError(f"k must be between 1 and {MAX_NEIGHBOURS}, got {self.k}")
        if not -1.0 <= self.min_score <= 1.0:
            raise InvalidArgumentError(f"min_score must be between -1 and 1, got {self.min_score}")
        check_metadata(self.filter, "filter")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetadataUpdate:
    """Set `set`'s pairs and remove `remove`'s keys on every item of `ids`."""

    ids: Sequence[str]
    set: Mapping[str, str] = dataclasses.field(default_factory=dict)
    remove: Sequence[str] = ()

    def check(self) -> None:
        if not self.ids:
            raise InvalidArgumentError("no ids: send at least one in `ids`")
        if len(self.ids) > MAX_IDS_PER_UPDATE:
            raise LimitExceededError(
                f"{len(self.ids)} ids in one update; the limit is {MAX_IDS_PER_UPDATE}"
            )
        for item_id in self.ids:
            check_id(item_id)
        if not self.set and not self.remove:
            raise InvalidArgumentError("nothing to change: give pairs in `set` or keys in `remove`")
        check_metadata(self.set, "set")
        both = sorted(set(self.set) & set(self.remove))
        if both:
            raise InvalidArgumentError(f"{both[0]!r} is both set and removed: give it once")

    @staticmethod
    def check_result(metadata: Mapping[str, str]) -> None:
        """An item's metadata as the update leaves it keeps within the limits."""
        check_metadata(metadata, "the item's metadata after the update")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClustersQuery:
    """`count` groups of similar items among at most `sample` of them, `per_cluster` shown."""

    count: int = 12
    per_cluster: int = 4
    sample: int = 10_000

    def check(self) -> None:
        for name, low, high in (
            ("count", 1, MAX_CLUSTERS),
            ("per_cluster", 1, MAX_PER_CLUSTER),
            ("sample", 1, MAX_CLUSTER_SAMPLE),
        ):
            value = getattr(self, name)
            if not low <= value <= high:
                raise InvalidArgumentError(f"{name} must be between {low} and {high}, got {value}")


def check_metadata(pairs: Mapping[str, str], name: str) -> None:
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


def check_image_count(count: int, limits: RequestLimits) -> None:
    if not count:
        raise InvalidArgumentError("no images: send at least one in `images`")
    if count > limits.max_images_per_request:
        raise LimitExceededError(
            f"{count} images in one request; the limit is {limits.max_images_per_request}"
        )


def check_texts(texts: Sequence[str], limits: RequestLimits) -> None:
    if not texts:
        raise InvalidArgumentError("no texts: send at least one in `texts`")
    if len(texts) > limits.max_images_per_request:
        raise LimitExceededError(
            f"{len(texts)} texts in one request; the limit is {limits.max_images_per_request}"
        )
    for position, text in enumerate(texts):
        name = f"text {position}" if len(texts) > 1 else "the text"
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limits.max_text_bytes:
            raise TextTooLongError(
                f"{name} is {size:,} bytes; the limit is {limits.max_text_bytes:,} "
                "(CLIP reads 77 tokens, about 300 characters of English, and drops the rest)"
            )
        if not text.strip():
            raise InvalidArgumentError(f"{name} is empty or only whitespace")


def unit_vector(values: Values, dims: int) -> np.ndarray:
    """The caller's vector, checked and scaled to unit norm (float32[dims])."""
    vector = np.asarray(values, dtype=np.float32)
    if vector.shape != (dims,):
        raise InvalidArgumentError(
            f"vector has {vector.size} values; this model's embeddings have {dims}"
        )
    if not np.all(np.isfinite(vector)):
        raise InvalidArgumentError("vector contains NaN or infinity")
    norm = float(np.linalg.norm(vector))
    if norm == 0 or not math.isfinite(norm):
        raise InvalidArgumentError("vector is all zeros: it has no direction to compare")
    return vector / norm
