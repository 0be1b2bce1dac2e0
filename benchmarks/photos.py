"""Real photographs that ship inside scikit-image and scikit-learn (no download), as RGB images,
and the scenes the region benchmark makes from them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

__all__ = ["sample_photos", "paste_scene", "jpeg_bytes"]

# In the scikit-image wheel itself (others are fetched on first use, which fails offline)
SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "coins",
    "moon",
    "horse",
    "clock",
    "grass",
    "gravel",
    "brick",
    "cell",
    "page",
    "text",
)


def sample_photos() -> list[tuple[str, Image.Image]]:
    """Every offline sample photo of scikit-image and scikit-learn, RGB (20 images)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = []
    for name in SKIMAGE_PHOTOS:
        pixels = getattr(skimage.data, name)()
        photos.append((name, Image.fromarray(np.asarray(pixels)).convert("RGB")))
    sklearn = load_sample_images()
    for path, pixels in zip(sklearn.filenames, sklearn.images, strict=True):
        photos.append((path.rsplit("/", 1)[-1].split(".")[0], Image.fromarray(pixels)))
    return photos


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def paste_scene(
    background: Image.Image,
    thing: Image.Image | None,
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = (480, 360),
    scale: tuple[float, float] = (0.2, 0.45),
) -> tuple[Image.Image, tuple[float, float, float, float] | None]:
    """A random crop of `background` resized to `size`, with `thing` (if any) pasted at a
    random place and a random width (a fraction of the scene's, from `scale`); and the
    pasted box, normalised."""
    width, height = size
    bw, bh = background.size
    crop_w = int(min(bw, bh * width / height) * rng.uniform(0.6, 1.0))
    crop_h = int(crop_w * height / width)
    left, top = int(rng.integers(0, bw - crop_w + 1)), int(rng.integers(0, bh - crop_h + 1))
    scene = background.crop((left, top, left + crop_w, top + crop_h)).resize(size)
    if rng.random() < 0.5:
        scene = ImageOps.mirror(scene)
    if thing is None:
        return scene, None
    thing_w = int(width * rng.uniform(*scale))
    thing_h = min(height - 1, int(thing_w * thing.height / thing.width))
    pasted = thing.resize((thing_w, thing_h))
    x, y = int(rng.integers(0, width - thing_w + 1)), int(rng.integers(0, height - thing_h + 1))
    scene.paste(pasted, (x, y))
    return scene, (x / width, y / height, (x + thing_w) / width, (y + thing_h) / height)
