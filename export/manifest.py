"""The model package's sidecar: `manifest.json`, read by every consumer of an export.

Pure standard library on purpose: the serving install reads manifests without torch.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "Graph",
    "Manifest",
    "ManifestError",
    "ModelIdentity",
    "ModelSource",
    "ParityFigures",
    "PixelLayout",
    "Precision",
    "PreprocessSpec",
    "ScoreScale",
    "TokenizerSpec",
    "Variant",
    "crop_start",
    "sha256_file",
]

MANIFEST_FILE = "manifest.json"
# 2: a `text` graph beside `image`, with its tokenizer; graphs name their input dtype.
# 3: the model's family (CLIP, SigLIP), its resize rule, its score scale; a tokenizer may have
# no start token.
# 4: the image graph takes uint8 pixels as decoders write them, [batch, S, S, 3] (input_dtype
# "uint8"), and rescales, normalises and transposes them itself. Packages of formats 1 to 3
# (float32 [batch, 3, S, S], normalised by the caller) are still read and served.
# 5: the centre crop's offset rule (`crop_offset`): Hugging Face's processors floor an odd
# margin, torchvision's (OpenCLIP) round it half to even.
FORMAT_VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)
CROP_OFFSETS = ("floor", "round-half-even")


class ManifestError(Exception):
    """The manifest is missing, unreadable or not one this version understands."""


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSource:
    """Where the weights came from."""

    kind: str  # "hub", "local" or "random-init"
    id: str  # hub id, local path, or random-init preset name
    revision: str | None = None  # resolved hub commit, when known
    random_weights: bool = False


@dataclasses.dataclass(frozen=True)
class ModelIdentity:
    """What makes two models' embeddings comparable: the same weights (source, id and
    revision) and dimension. The family and the sha256 of the package's manifest are recorded
    beside them but not compared: a re-export of the same weights (another Lookalike, another
    precision) writes another manifest and the same embeddings."""

    source: str
    dims: int
    family: str = dataclasses.field(default="clip", compare=False)
    manifest_sha256: str = dataclasses.field(default="", compare=False)

    @classmethod
    def of(
        cls, source: ModelSource, dims: int, *, family: str = "clip", manifest_sha256: str = ""
    ) -> ModelIdentity:
        revision = f"@{source.revision}" if source.revision else ""
        return cls(f"{source.kind}:{source.id}{revision}", dims, family, manifest_sha256)

    @classmethod
    def from_record(cls, record: dict[str, object]) -> ModelIdentity:
        """From `dataclasses.asdict` of one, as stored (records before the family have none)."""
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})  # type: ignore[arg-type]

    def describe(self) -> str:
        return f"{self.source} ({self.family}, {self.dims}-d)"


RESIZE_RULES = ("shortest_edge", "squash")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreprocessSpec:
    """The checkpoint's image preprocessing rule, as its family's processor applies it:
    `shortest_edge` (CLIP) resizes the shortest edge, keeping the aspect ratio, then crops the
    center; `squash` (SigLIP) resizes both sides to the input size, with no crop."""

    image_size: int  # square model input side
    resize_shortest_edge: int
    resample: str  # Pillow filter name, e.g. "bicubic"
    center_crop: bool
    crop_height: int
    crop_width: int
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    convert_rgb: bool = True
    resize: str = "shortest_edge"  # one of RESIZE_RULES
    crop_offset: str = "floor"  # one of CROP_OFFSETS: where an odd margin's extra pixel goes

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"resize rule {self.resize!r} is not one of {RESIZE_RULES}")
        if self.crop_offset not in CROP_OFFSETS:
            raise ValueError(f"crop offset {self.crop_offset!r} is not one of {CROP_OFFSETS}")

    def crop_start(self, margin: int) -> int:
        return crop_start(margin, self.crop_offset)


def crop_start(margin: int, offset: str) -> int:
    """Where a centre crop starts in a side `margin` pixels longer than the crop, by the
    `offset` rule (one of CROP_OFFSETS)."""
    if offset == "round-half-even":
        return round(margin / 2)  # torchvision's CenterCrop: Python's round, half to even
    return margin // 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoreScale:
    """How the family turns a cosine into its calibrated probability, where it has one:
    sigmoid(cosine * scale + bias) for SigLIP (an image and a text; not a search score)."""

    kind: str  # "sigmoid"
    scale: float  # exp(logit_scale)
    bias: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParityFigures:
    """Agreement of an ONNX variant with the PyTorch tower on the fixed parity inputs."""

    min_cosine: float  # worst image, batched and single runs
    mean_cosine: float
    max_abs_diff: float
    bar: float  # the min_cosine this precision must reach
    inputs: int  # images or texts
    batch_sizes: tuple[int, ...]
    provider: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Variant:
    precision: Precision
    file: str
    sha256: str
    bytes: int
    parity: ParityFigures
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizerSpec:
    """How text becomes the text graph's `input_ids`: the family's tokenizer, as a
    `tokenizers` file (its normalisation, pieces and special tokens), truncated and padded."""

    files: tuple[str, ...]  # copied into the package beside the graphs
    tokenizer_json: str  # the file the `tokenizers` library loads
    sha256: str  # of `tokenizer_json`
    max_length: int  # every text is truncated and padded to this many tokens (CLIP 77, SigLIP 64)
    start_token_id: int | None  # None: the family's texts start with no special token
    end_token_id: int  # kept last when a text is truncated
    pad_token_id: int
    pooling: str  # where the graph reads the text's vector: "first-end-token", "last-token"
    vocab_size: int | None = None  # None in format 2: CLIP's, whose special ids come last

    @property
    def ordinary_ids(self) -> range:
        """Ids of ordinary tokens, between the special ones at either end of the vocabulary
        (for synthetic texts: warm-up and the batch-invariance check)."""
        ids = (self.start_token_id, self.end_token_id, self.pad_token_id)
        specials = [i for i in ids if i is not None]
        size = self.vocab_size if self.vocab_size is not None else max(specials) + 1
        first = [i for i in specials if i < size // 2]
        last = [i for i in specials if i >= size // 2]
        return range(max(first, default=-1) + 1, min(last, default=size))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Graph:
    """One ONNX graph of the package, by role: `image`, and `text` beside it."""

    input: str
    input_shape: tuple[str | int, ...]
    output: str
    output_dim: int
    l2_normalized: bool
    variants: dict[Precision, Variant]
    input_dtype: str = "float32"
    tokenizer: TokenizerSpec | None = None  # the text graph's
    # reduced-precision variants that missed their parity bar at export, and why: the graph
    # ships without them (the server picks the best variant it has)
    rejected: dict[Precision, str] = dataclasses.field(default_factory=dict)


class PixelLayout(str, enum.Enum):
    """What an image graph takes, named by its input's dtype: uint8 [batch, S, S, 3] pixels as
    decoders write them, resized and cropped (format 4), or float32 [batch, 3, S, S] pixels the
    caller also rescaled and normalised (formats 1 to 3, and `--image-input float32`)."""

    UINT8_NHWC = "uint8"
    FLOAT32_NCHW = "float32"

    @classmethod
    def of(cls, graph: Graph) -> PixelLayout:
        return cls(graph.input_dtype)

    def image_shape(self, size: int) -> tuple[int, int, int]:
        """One image's pixels, without the batch axis (the dtype is the value)."""
        return (size, size, 3) if self is PixelLayout.UINT8_NHWC else (3, size, size)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Manifest:
    format_version: int
    source: ModelSource
    embedding_dim: int
    preprocess: PreprocessSpec
    opset: int
    graphs: dict[str, Graph]
    tools: dict[str, str]
    created_at: str
    family: str = "clip"  # "clip" or "siglip": whose towers, processor and tokenizer these are
    scores: ScoreScale | None = None  # the family's calibrated probability, where it has one

    def to_json(self) -> str:
        document = _to_jsonable(dataclasses.asdict(self))
        for graph in document["graphs"].values():
            if not graph["rejected"]:  # written only when some variant was: older readers
                del graph["rejected"]  # (which know no such key) read every other package
        return json.dumps(document, indent=2, sort_keys=False)

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_FILE
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            raw = json.loads(text)
            version = raw["format_version"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ManifestError(f"not a Lookalike manifest: {exc}") from exc
        if version not in READABLE_VERSIONS:
            raise ManifestError(
                f"manifest format {version} is not supported (this Lookalike reads formats "
                f"{', '.join(map(str, READABLE_VERSIONS))}); upgrade lookalike or re-export"
            )
        try:
            return cls(
                format_version=version,
                source=ModelSource(**raw["source"]),
                embedding_dim=raw["embedding_dim"],
                preprocess=_preprocess_from(raw["preprocess"]),
                opset=raw["opset"],
                graphs={name: _graph_from(graph) for name, graph in raw["graphs"].items()},
                tools=raw["tools"],
                created_at=raw["created_at"],
                family=raw.get("family", "clip"),
                scores=None if raw.get("scores") is None else ScoreScale(**raw["scores"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"malformed manifest: {exc!r}") from exc

    def describe(self, directory: Path) -> str:
        """A few lines for a person: source, weights, input rule and each variant's parity."""
        source, prep = self.source, self.preprocess
        weights = (
            "RANDOM WEIGHTS (not semantically meaningful)" if source.random_weights else "trained"
        )
        revision = f" @ {source.revision}" if source.revision else ""
        if prep.resize == "squash":
            rule = f"resize to {prep.image_size}x{prep.image_size} ({prep.resample}), no crop"
        else:
            rule = (
                f"resize shortest edge to {prep.resize_shortest_edge} ({prep.resample}), "
                f"center crop {prep.crop_height}x{prep.crop_width}"
            )
        lines = [
            f"model package  {directory}",
            f"family         {self.family}",
            f"source         {source.kind}: {source.id}{revision}",
            f"weights        {weights}",
            f"embedding dim  {self.embedding_dim}",
            f"input          {prep.image_size}px: {rule}",
        ]
        text = self.graphs.get("text")
        if text is not None and text.tokenizer is not None:
            lines.append(
                f"text           {text.tokenizer.max_length} tokens (truncated, end token kept "
                f"last), pooled at the {text.tokenizer.pooling.replace('-', ' ')}"
            )
        if self.scores is not None:
            lines.append(
                f"probability    {self.scores.kind}(cosine * {self.scores.scale:.4g} "
                f"{self.scores.bias:+.4g})"
            )
        lines.append(f"opset          {self.opset}")
        lines.append(
            f"{'graph':<7}{'variant':<8}{'file':<16}{'MB':>8}{'min cosine':>12}{'bar':>9}  provider"
        )
        for role, graph in self.graphs.items():
            for variant in graph.variants.values():
                lines.append(
                    f"{role:<7}{variant.precision.value:<8}{variant.file:<16}"
                    f"{variant.bytes / 1e6:>8.1f}{variant.parity.min_cosine:>12.6f}"
                    f"{variant.parity.bar:>9}  {variant.parity.provider}"
                )
            for precision, why in graph.rejected.items():
                lines.append(f"{role:<7}{precision.value:<8}REJECTED: {why.splitlines()[0]}")
        return "\n".join(lines)

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ManifestError(
                f"{path} not found: point at a directory written by `lookalike-export`"
            ) from exc
        return cls.from_json(text)


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {_to_jsonable(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


def _preprocess_from(raw: dict[str, Any]) -> PreprocessSpec:
    return PreprocessSpec(**{**raw, "mean": tuple(raw["mean"]), "std": tuple(raw["std"])})


def _graph_from(raw: dict[str, Any]) -> Graph:
    variants = {}
    for name, variant in raw["variants"].items():
        parity = dict(variant["parity"])
        if "images" in parity:  # format 1 named them so
            parity["inputs"] = parity.pop("images")
        variants[Precision(name)] = Variant(
            **{
                **variant,
                "precision": Precision(variant["precision"]),
                "parity": ParityFigures(**{**parity, "batch_sizes": tuple(parity["batch_sizes"])}),
            }
        )
    tokenizer = raw.get("tokenizer")
    return Graph(
        **{
            **raw,
            "input_shape": tuple(raw["input_shape"]),
            "variants": variants,
            "tokenizer": None
            if tokenizer is None
            else TokenizerSpec(**{**tokenizer, "files": tuple(tokenizer["files"])}),
            "rejected": {Precision(p): why for p, why in raw.get("rejected", {}).items()},
        }
    )
