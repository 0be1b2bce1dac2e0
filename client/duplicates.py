"""Near-duplicates: groups from the server's neighbour pairs, and a threshold calibrated on the
user's own images.

Grouping is transitive (union-find over the pairs above the threshold): copies of copies end in
one group. Calibration makes transformed copies of sample images (resized, cropped,
recompressed, flipped, slightly rotated, colour-shifted), embeds them through the server, and
measures how well a threshold tells a copy's score to its original from its score to the
nearest other image. Images the server cannot read are left out, each with the server's reason.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from lookalike.client.errors import InvalidRequestError

__all__ = [
    "Pair",
    "DuplicateGroup",
    "group_pairs",
    "transformed_copies",
    "TRANSFORMS",
    "ThresholdRow",
    "Calibration",
    "TooFewImagesError",
    "calibrate",
    "calibration_report",
]

TRANSFORMS = ("resize", "crop", "recompress", "flip", "rotate", "colour")
EMBED_CHUNK = 32  # images per call to `embed` (a server refuses more than its per-request limit)


@dataclasses.dataclass(frozen=True)
class Pair:
    a: str
    b: str
    score: float


@dataclasses.dataclass(frozen=True)
class DuplicateGroup:
    ids: list[str]  # sorted
    pairs: list[Pair]  # the links found inside the group, best first

    @property
    def lowest_link(self) -> float:
        return min(pair.score for pair in self.pairs)


def group_pairs(pairs: Iterable[Pair]) -> list[DuplicateGroup]:
    """Connected groups of the pairs (each pair once, whichever side found it), largest
    first, then by their best link."""
    parent: dict[str, str] = {}

    def root(item: str) -> str:
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]  # path halving
            item = parent[item]
        return item

    best: dict[tuple[str, str], float] = {}
    for pair in pairs:
        key = (min(pair.a, pair.b), max(pair.a, pair.b))
        best[key] = max(pair.score, best.get(key, -1.0))
        parent[root(pair.a)] = root(pair.b)
    members: dict[str, list[str]] = {}
    for item in parent:
        members.setdefault(root(item), []).append(item)
    links: dict[str, list[Pair]] = {}
    for (a, b), score in best.items():
        links.setdefault(root(a), []).append(Pair(a, b, score))
    groups = [
        DuplicateGroup(sorted(ids), sorted(links[top], key=lambda p: -p.score))
        for top, ids in members.items()
    ]
    return sorted(groups, key=lambda g: (-len(g.ids), -g.pairs[0].score, g.ids[0]))


def transformed_copies(image: Image.Image, seed: int = 0) -> dict[str, Image.Image]:
    """One copy of `image` per transform in TRANSFORMS, as a near-duplicate looks."""
    rng = np.random.default_rng(seed)
    image = image.convert("RGB")
    width, height = image.size
    cut = rng.uniform(0.05, 0.15)
    dx, dy = int(width * cut / 2), int(height * cut / 2)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(25, 45)))
    return {
        "resize": image.resize((max(32, width // 2), max(32, height // 2))),
        "crop": image.crop((dx, dy, width - dx, height - dy)),
        "recompress": Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"),
        "flip": ImageOps.mirror(image),
        "rotate": image.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BICUBIC),
        "colour": ImageEnhance.Color(ImageEnhance.Brightness(image).enhance(1.15)).enhance(0.7),
    }


@dataclasses.dataclass(frozen=True)
class ThresholdRow:
    threshold: float
    precision: float  # of the pairs at or above it, the share that are true copies
    recall: float  # of the copies, the share at or above it


@dataclasses.dataclass(frozen=True)
class Calibration:
    images: int  # those calibrated on (the skipped ones left out)
    copies: int
    rows: list[ThresholdRow]
    copy_scores: dict[str, list[float]]  # per transform: each copy's score to its original
    nearest_other: list[float]  # each copy's best score to another original
    skipped: dict[int, str]  # position in the images given -> why the server could not read it

    def recommend(self, precision: float) -> ThresholdRow | None:
        """The lowest threshold (the most recall) whose precision reaches `precision` while
        finding copies; None where none does (a threshold above every score finds nothing,
        and no pair is no wrong pair)."""
        passing = [row for row in self.rows if row.recall > 0 and row.precision >= precision]
        return min(passing, key=lambda row: row.threshold) if passing else None


class TooFewImagesError(ValueError):
    """Fewer than 2 images left to calibrate on; `skipped` says why each other one was left
    out (position -> reason), as in `Calibration.skipped`."""

    def __init__(self, readable: int, skipped: dict[int, str]) -> None:
        super().__init__(
            f"calibration needs at least 2 images the server can read, and it reads {readable} "
            f"of {readable + len(skipped)}"
        )
        self.skipped = skipped


def calibrate(
    images: Sequence[bytes],
    embed: Callable[[Sequence[bytes]], np.ndarray],
    *,
    thresholds: Sequence[float] | None = None,
) -> Calibration:
    """Embed `images` and their transformed copies with `embed` (unit rows; e.g.
    `Client.embed`, called with EMBED_CHUNK images at a time); score every copy against its
    original (a true pair) and against the nearest other original (the strongest false
    pair); precision and recall of each threshold over those pairs. An image `embed` refuses
    (InvalidRequestError: not an image, corrupt, too large) is skipped, with the reason;
    TooFewImagesError where fewer than 2 are left."""
    vectors, skipped = _embed_readable(images, embed)
    if len(vectors) < 2:
        raise TooFewImagesError(len(vectors), skipped)
    copy_bytes, owners, kinds = [], [], []
    for owner, number in enumerate(vectors):
        with Image.open(io.BytesIO(images[number])) as image:
            made = transformed_copies(ImageOps.exif_transpose(image), seed=number)
        for kind, copy in made.items():
            buffer = io.BytesIO()
            copy.save(buffer, "PNG")
            copy_bytes.append(buffer.getvalue())
            owners.append(owner)
            kinds.append(kind)
    copies = np.concatenate(
        [embed(copy_bytes[i : i + EMBED_CHUNK]) for i in range(0, len(copy_bytes), EMBED_CHUNK)]
    )
    scores = copies @ np.stack(list(vectors.values())).T  # [copies, originals]
    rows = np.arange(len(owners))
    true = scores[rows, owners]
    scores[rows, owners] = -np.inf
    false = scores.max(axis=1)
    lowest = np.floor(min(true.min(), false.max()) * 1000) / 1000
    candidates = thresholds or np.round(np.arange(lowest, 1.0005, 0.001), 3).tolist()
    table = []
    for threshold in candidates:
        hits, wrong = int((true >= threshold).sum()), int((false >= threshold).sum())
        precision = hits / (hits + wrong) if hits + wrong else 1.0
        table.append(ThresholdRow(float(threshold), precision, hits / len(true)))
    by_kind: dict[str, list[float]] = {kind: [] for kind in TRANSFORMS}
    for kind, score in zip(kinds, true.tolist(), strict=True):
        by_kind[kind].append(score)
    return Calibration(len(vectors), len(copy_bytes), table, by_kind, false.tolist(), skipped)


def _embed_readable(
    images: Sequence[bytes], embed: Callable[[Sequence[bytes]], np.ndarray]
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Each image's vector by position, EMBED_CHUNK images a call, and the positions `embed`
    refused with its reason: a refused chunk is embedded again image by image, so that only
    the images the server cannot read are left out."""
    vectors: dict[int, np.ndarray] = {}
    refused: dict[int, str] = {}
    for start in range(0, len(images), EMBED_CHUNK):
        chunk = range(start, min(start + EMBED_CHUNK, len(images)))
        try:
            vectors.update(zip(chunk, embed([images[i] for i in chunk]), strict=True))
        except InvalidRequestError:
            for number in chunk:
                try:
                    (vectors[number],) = embed([images[number]])
                except InvalidRequestError as error:
                    refused[number] = str(error)
    return vectors, refused


def calibration_report(
    calibration: Calibration, precision: float, model: str, random_weights: bool
) -> str:
    """The table a person reads: per threshold precision and recall (the rows where either
    changes, at most 30), what each transform scored, and the recommendation."""
    changed = [
        row
        for before, row in zip([None, *calibration.rows], calibration.rows, strict=False)
        if before is None or (before.precision, before.recall) != (row.precision, row.recall)
    ]
    shown = changed[:: max(1, -(-len(changed) // 30))]
    lines = [
        f"{calibration.copies} copies of {calibration.images} images, embedded by {model}",
        f"{'threshold':>9}  {'precision':>9}  {'recall':>6}",
        *(f"{r.threshold:>9.3f}  {r.precision:>9.3f}  {r.recall:>6.3f}" for r in shown),
        "median score to the original, by transform:",
        *(
            f"  {kind:<10} {float(np.median(scores)):.4f}"
            for kind, scores in calibration.copy_scores.items()
        ),
        "median score to the nearest other image: "
        f"{float(np.median(calibration.nearest_other)):.4f}",
    ]
    best = calibration.recommend(precision)
    if best is None:
        lines.append(
            f"no threshold reaches precision {precision:g} on these images while finding "
            "copies: on this sample, no threshold separates the copies from the other images"
        )
    else:
        lines.append(
            f"recommended: --threshold {best.threshold:.3f} (precision {best.precision:.3f}, "
            f"recall {best.recall:.3f}); for the web app's duplicates view, start the server "
            f"with --duplicates-threshold {best.threshold:.3f}"
        )
    if random_weights:
        lines.append(
            "the server runs RANDOM weights: this threshold fits how that random model scores "
            "pixels; calibrate again with the real model"
        )
    return "\n".join(lines)
