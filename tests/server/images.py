"""Deterministic test images, encoded as a client would send them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def natural(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour fields plus grain: compresses and resizes like a photo."""
    rng = np.random.default_rng(seed)
    field = rng.normal(size=(height // 40 + 2, width // 40 + 2, 3)).cumsum(0).cumsum(1)
    field = ((field - field.min()) / np.ptp(field) * 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC))
    grain = rng.integers(-12, 13, size=(height, width, 3))
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def jpeg(width: int, height: int, seed: int = 0) -> bytes:
    return encode(natural(width, height, seed), "JPEG", quality=90)
