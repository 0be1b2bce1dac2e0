"""Image bytes -> the pixels the exported image graph takes (`PixelLayout`): uint8[H, W, 3],
resized and cropped (the graph rescales and normalises them), or, for packages exported before
format 4, float32[3, H, W] normalised here.

Pure functions, parameterised by the manifest's `PreprocessSpec`; safe to call from threads
(Pillow releases the GIL while decoding and resizing).

Two modes:
- `exact` reproduces the family's processor (`CLIPImageProcessor`: full decode, bicubic resize
  of the shortest edge, center crop, rescale, normalise; `SiglipImageProcessor`: the same
  with both sides resized to the input size and no crop) to within 1e-4.
- `fast` decodes JPEGs at a reduced DCT scale no smaller than needed ("draft" mode) and resizes
  only the center-crop region, once, with a reducing gap; it stays uint8 (until the final
  normalisation, for a float32 graph).

A region of an image (`Crop`) is cut from the fully decoded image, which every region of that
image shares (`SourceImage` decodes once), and preprocessed like a whole image in `exact` mode.

Both modes apply the EXIF orientation, so a phone photo is seen upright. That, and reading
16-bit images as 8-bit by their high byte (the reference clips them), are the intended
differences from `CLIPImageProcessor`.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import math
import threading
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lookalike.export.manifest import Manifest, PixelLayout, PreprocessSpec
from lookalike.server.errors import ImageTooLargeError, InvalidImageError
from lookalike.server.regions import Region, check_fits, fitting

__all__ = [
    "ImageLimits",
    "PreprocessMode",
    "Preprocessor",
    "SourceImage",
    "Crop",
    "ImageInput",
    "decode",
    "read_header",
    "header_upright_size",
    "upright_size",
    "with_regions",
]


class PreprocessMode(str, enum.Enum):
    EXACT = "exact"
    FAST = "fast"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageLimits:
    """What an image may be before any pixel is decoded (decompression-bomb guard)."""

    max_pixels: int = 64_000_000
    max_aspect_ratio: float = 100.0


RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
PIXEL_LIMIT_FLAG = "the server's --max-pixels"
REDUCING_GAP = 3.0  # Pillow: first reduce by an integer factor, then resample the last <=3x
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # rotated a quarter turn: width and height swap


class SourceImage:
    """One image's bytes, decoded once for all the regions cut from it (by whichever
    preprocessing thread gets there first). Pickles as its bytes alone."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._decoded: Image.Image | None = None
        self._lock = threading.Lock()

    def decoded(self, decoder: Callable[[bytes], Image.Image]) -> Image.Image:
        with self._lock:
            if self._decoded is None:
                self._decoded = decoder(self.data)
            return self._decoded

    def __reduce__(self) -> tuple[type[SourceImage], tuple[bytes]]:
        return SourceImage, (self.data,)


@dataclasses.dataclass(frozen=True)
class Crop:
    """A region of an image, to embed on its own."""

    source: SourceImage
    region: Region


ImageInput = bytes | Crop  # what the image queue embeds: a whole image, or a region of one


def with_regions(
    data: bytes,
    given: Sequence[Region],
    made: Sequence[Region],
    limits: ImageLimits,
    *,
    limit: int | None = None,
) -> tuple[tuple[Region, ...], list[ImageInput]]:
    """What embeds an image and its regions, on every path (server, Ray ingest), so that an
    image gets the same vectors whichever embedded it: the regions kept (each given one,
    checked to fit, then the made ones that fit this image; at most `limit`) and the inputs,
    the whole image first, then each region cut from one decode of the image."""
    if not given and not made:
        return (), [data]
    regions = fitting(given, made, upright_size(data, limits))[:limit]
    source = SourceImage(data)
    return regions, [data, *(Crop(source, region) for region in regions)]


def decode(data: bytes, limits: ImageLimits, *, draft_short_edge: int | None = None) -> Image.Image:
    """Decode to an upright RGB image; refuse non-images and oversized images before decoding.

    With `draft_short_edge`, JPEGs are decoded at the smallest DCT scale whose short edge is
    still at least that many pixels.
    """
    image = read_header(data, limits)
    width, height = image.size
    if draft_short_edge is not None and image.format == "JPEG":
        scale = draft_short_edge / min(width, height)
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(f"corrupt or truncated {image.format} image: {exc}") from exc
    return _to_rgb(_upright(image))


def upright_size(data: bytes, limits: ImageLimits) -> tuple[int, int]:
    """(width, height) as the image is seen upright, from its header alone (no pixels
    decoded); the same errors as `decode` for what is not an image or too large."""
    return header_upright_size(read_header(data, limits))


def header_upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened, not decoded, image as it is seen upright."""
    width, height = image.size
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError):
        orientation = 1
    return (height, width) if orientation in TRANSPOSING_ORIENTATIONS else (width, height)


def read_header(data: bytes, limits: ImageLimits) -> Image.Image:
    """Read the header; refuse non-images and oversized images before any pixel is decoded."""
    if not data:
        raise InvalidImageError("empty image: zero bytes")
    try:
        with warnings.catch_warnings():
            # past MAX_IMAGE_PIXELS Pillow only warns: our own check below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise _beyond_pillows_guard(limits) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError("not an image Pillow can read (JPEG, PNG, WebP, GIF, ...)") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # e.g. a JPEG cut inside its header
        raise InvalidImageError(f"corrupt or truncated image: {exc}") from exc
    _check_limits(*image.size, limits)
    return image


def _check_limits(width: int, height: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise InvalidImageError(f"image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise _too_large(f"{width}x{height} = {width * height:,}", limits.max_pixels)
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        raise InvalidImageError(
            f"image is {width}x{height}, aspect ratio {ratio:.0f}:1; "
            f"the limit is {limits.max_aspect_ratio:.0f}:1"
        )


def _too_large(pixels: str, limit: int, set_by: str = PIXEL_LIMIT_FLAG) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"image is {pixels} pixels, too large: the limit is {limit:,} ({set_by})"
    )


def _beyond_pillows_guard(limits: ImageLimits) -> ImageTooLargeError:
    """Pillow's own refusal (past twice its MAX_IMAGE_PIXELS), worded as ours. It comes before
    our check and names no width or height, only that the image is over its guard."""
    guard = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    if limits.max_pixels <= guard:
        return _too_large(f"over {guard:,}", limits.max_pixels)
    return _too_large(f"over {guard:,}", guard, f"Pillow's, which {PIXEL_LIMIT_FLAG} cannot raise")


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an unreadable EXIF block leaves the image as stored."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on every corrupt EXIF block
            return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError):
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in SIXTEEN_BIT_MODES:  # keep the high byte instead of clipping at 255
        high_byte = np.asarray(image, dtype=np.uint32) >> 8
        image = Image.fromarray(np.clip(high_byte, 0, 255).astype(np.uint8), mode="L")
    return image if image.mode == "RGB" else image.convert("RGB")


def resized_shape(width: int, height: int, spec: PreprocessSpec) -> tuple[int, int]:
    """(width, height) after the spec's resize: the input size when it squashes; else with the
    shortest edge resized, rounded as the reference rounds."""
    if spec.resize == "squash":
        return spec.image_size, spec.image_size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = spec.resize_shortest_edge, int(spec.resize_shortest_edge * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def center_crop(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Crop HWC uint8 to the spec's crop size, zero-padding an image smaller than the crop."""
    if not spec.center_crop:
        return pixels
    height, width = pixels.shape[:2]
    crop_h, crop_w = spec.crop_height, spec.crop_width
    if height >= crop_h and width >= crop_w:
        top, left = spec.crop_start(height - crop_h), spec.crop_start(width - crop_w)
        return pixels[top : top + crop_h, left : left + crop_w]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    padded = np.zeros((max(crop_h, height), max(crop_w, width), 3), dtype=pixels.dtype)
    pad_top, pad_left = (
        math.ceil((padded.shape[0] - height) / 2),
        math.ceil((padded.shape[1] - width) / 2),
    )
    padded[pad_top : pad_top + height, pad_left : pad_left + width] = pixels
    top, left = top + pad_top, left + pad_left
    return padded[top : top + crop_h, left : left + crop_w]


@dataclasses.dataclass(frozen=True)
class _Normalizer:
    """uint8 HWC -> float32 CHW via a per-channel lookup table of (v * rescale - mean) / std."""

    table: np.ndarray  # float32[3, 256]

    @classmethod
    def for_spec(cls, spec: PreprocessSpec) -> _Normalizer:
        values = np.arange(256, dtype=np.float64) * spec.rescale_factor
        mean, std = np.asarray(spec.mean)[:, None], np.asarray(spec.std)[:, None]
        return cls(((values[None, :] - mean) / std).astype(np.float32))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        channels = np.moveaxis(pixels, -1, 0)
        return np.stack([self.table[c][channels[c]] for c in range(3)])


class Preprocessor:
    """`bytes -> pixels` for one checkpoint's spec, as its image graph takes them (`layout`),
    in the chosen mode."""

    def __init__(
        self,
        spec: PreprocessSpec,
        *,
        layout: PixelLayout,
        mode: PreprocessMode = PreprocessMode.FAST,
        limits: ImageLimits = ImageLimits(),
    ) -> None:
        self.spec, self.layout, self.mode, self.limits = spec, layout, mode, limits
        self._finish: Callable[[np.ndarray], np.ndarray] = (
            np.ascontiguousarray if layout is PixelLayout.UINT8_NHWC else _Normalizer.for_spec(spec)
        )
        self._resample = RESAMPLE[spec.resample]

    @classmethod
    def for_package(
        cls,
        manifest: Manifest,
        *,
        mode: PreprocessMode = PreprocessMode.FAST,
        limits: ImageLimits = ImageLimits(),
    ) -> Preprocessor:
        """For a model package: its spec, laid out as its image graph takes pixels."""
        layout = PixelLayout.of(manifest.graphs["image"])
        return cls(manifest.preprocess, layout=layout, mode=mode, limits=limits)

    def blank(self) -> np.ndarray:
        """Zero pixels of one image, as this preprocessor lays them out (a row with none)."""
        return np.zeros(self.layout.image_shape(self.spec.image_size), self.layout.value)

    def __call__(self, data: ImageInput) -> np.ndarray:
        if isinstance(data, Crop):
            return self.crop(data)
        if self.mode is PreprocessMode.FAST:
            return self.fast(data)
        return self.exact(decode(data, self.limits))

    def crop(self, crop: Crop) -> np.ndarray:
        """The region cut from the fully decoded image, then as `exact` (every pixel counts in
        a small region: no draft decoding). InvalidImageError if it is under the minimum
        size on this image."""
        image = crop.source.decoded(lambda data: decode(data, self.limits))
        check_fits(crop.region, image.size, "the box")
        return self.exact(image.crop(crop.region.pixels(*image.size)))

    def exact(self, image: Image.Image) -> np.ndarray:
        """The family's processor on an RGB image: resize, crop (rescale, normalise)."""
        resized = image.resize(resized_shape(*image.size, self.spec), resample=self._resample)
        return self._finish(center_crop(np.asarray(resized), self.spec))

    def fast(self, data: bytes) -> np.ndarray:
        """Draft-decode, then one resize of just the crop region straight to the input size."""
        spec = self.spec
        image = decode(data, self.limits, draft_short_edge=spec.resize_shortest_edge)
        width, height = image.size
        new_w, new_h = resized_shape(width, height, spec)
        crop_w, crop_h = (spec.crop_width, spec.crop_height) if spec.center_crop else (new_w, new_h)
        if crop_w > new_w or crop_h > new_h:  # the crop would pad: rare configs, exact path
            return self.exact(image)
        left, top = spec.crop_start(new_w - crop_w), spec.crop_start(new_h - crop_h)
        sx, sy = width / new_w, height / new_h
        box = (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)
        resized = image.resize(
            (crop_w, crop_h), resample=self._resample, box=box, reducing_gap=REDUCING_GAP
        )
        return self._finish(np.asarray(resized))
