"""Regions: parts of an image stored as vectors of their own, for object-level search.

A region is a box in coordinates normalised to the upright image (0..1, left to right, top to
bottom) and an optional label. Boxes come from the client, or from the server's policy: the
whole image only (`none`) or an overlapping grid (`grid`, chosen by
benchmarks/regions.py). Every item also keeps its whole image's vector.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Sequence

from lookalike.server.errors import InvalidArgumentError, InvalidImageError

__all__ = [
    "Region",
    "RegionPolicy",
    "GridLevel",
    "grid_regions",
    "policy_regions",
    "check_regions",
    "fitting",
    "check_fits",
    "MIN_REGION_PIXELS",
    "MAX_LABEL_BYTES",
]

MIN_REGION_PIXELS = 16  # each side of a region, in the image's pixels
MAX_LABEL_BYTES = 256


@dataclasses.dataclass(frozen=True)
class Region:
    x0: float
    y0: float
    x1: float
    y1: float
    label: str = ""

    def to_json(self) -> str:
        box = [round(v, 6) for v in (self.x0, self.y0, self.x1, self.y1)]
        return json.dumps({"box": box, "label": self.label} if self.label else {"box": box})

    @classmethod
    def from_json(cls, text: str) -> Region:
        document = json.loads(text)
        x0, y0, x1, y1 = document["box"]
        return cls(x0, y0, x1, y1, document.get("label", ""))

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) on an image of this size, rounded to whole pixels."""
        return (
            round(self.x0 * width),
            round(self.y0 * height),
            round(self.x1 * width),
            round(self.y1 * height),
        )

    def fits(self, width: int, height: int) -> bool:
        """Whether it covers at least MIN_REGION_PIXELS on each side of an image this size."""
        left, top, right, bottom = self.pixels(width, height)
        return min(right - left, bottom - top) >= MIN_REGION_PIXELS


class RegionPolicy(str, enum.Enum):
    NONE = "none"
    GRID = "grid"


@dataclasses.dataclass(frozen=True)
class GridLevel:
    """`cells` x `cells` boxes of `size` (a fraction of each side), spread evenly from edge to
    edge: they overlap when cells * size > 1."""

    cells: int
    size: float

    def regions(self) -> list[Region]:
        if self.cells == 1:
            starts = [(1 - self.size) / 2]
        else:
            starts = [i * (1 - self.size) / (self.cells - 1) for i in range(self.cells)]
        return [Region(x, y, x + self.size, y + self.size) for y in starts for x in starts]


def grid_regions(levels: Sequence[GridLevel]) -> tuple[Region, ...]:
    return tuple(region for level in levels for region in level.regions())


# The `grid` policy: 3x3 boxes of half a side, overlapping by half (9 regions), so that any part
# up to a quarter of each side lies whole in one. Measured against 2x2 halves, 3x3 thirds, 4x4
# thirds and these plus 2x2 (benchmarks/README.md, "Regions"): adding 2x2 found nothing more.
GRID = (GridLevel(3, 0.5),)


def policy_regions(policy: RegionPolicy) -> tuple[Region, ...]:
    """The regions a policy makes (before dropping those too small for an image)."""
    return grid_regions(GRID) if policy is RegionPolicy.GRID else ()


def check_regions(regions: Sequence[Region], limit: int, *, what: str = "region") -> None:
    """Each box inside the unit square and not empty, each label short enough, no more than
    `limit` of them: InvalidArgumentError otherwise."""
    if len(regions) > limit:
        raise InvalidArgumentError(
            f"{len(regions)} regions for one item; the limit is {limit} (--max-regions)"
        )
    for number, region in enumerate(regions):
        name = f"{what} {number}" if len(regions) > 1 else what
        box = (region.x0, region.y0, region.x1, region.y1)
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in box):
            raise InvalidArgumentError(
                f"{name} ({_describe(region)}) is outside the image: coordinates are "
                "fractions of its width and height, from 0 to 1"
            )
        if not (region.x0 < region.x1 and region.y0 < region.y1):
            raise InvalidArgumentError(
                f"{name} ({_describe(region)}) is empty: x0 must be below x1 and y0 below y1"
            )
        if len(region.label.encode("utf-8", "surrogatepass")) > MAX_LABEL_BYTES:
            raise InvalidArgumentError(f"{name}'s label is over {MAX_LABEL_BYTES} bytes")


def fitting(
    given: Sequence[Region], made: Sequence[Region], size: tuple[int, int]
) -> tuple[Region, ...]:
    """The regions to embed on an image of `size` (upright): every given one, which must cover
    MIN_REGION_PIXELS a side (else InvalidImageError), then the server-made ones that do."""
    for number, region in enumerate(given):
        check_fits(region, size, f"region {number}")
    return tuple(given) + tuple(region for region in made if region.fits(*size))


def check_fits(region: Region, size: tuple[int, int], name: str) -> None:
    """InvalidImageError unless the region covers MIN_REGION_PIXELS a side of this image."""
    width, height = size
    if not region.fits(width, height):
        left, top, right, bottom = region.pixels(width, height)
        raise InvalidImageError(
            f"{name} ({_describe(region)}) is {right - left}x{bottom - top} pixels of this "
            f"{width}x{height} image; the minimum is {MIN_REGION_PIXELS}x{MIN_REGION_PIXELS}"
        )


def _describe(region: Region) -> str:
    return ", ".join(f"{v:g}" for v in (region.x0, region.y0, region.x1, region.y1))
