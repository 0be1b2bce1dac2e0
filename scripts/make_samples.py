"""Sample images for the demo, made here (no downloads), and a transformed copy of one.

    python scripts/make_samples.py OUT_DIR [--count 24] [--copy-of 5 --copy-to query.jpg]

The transformed copy is the image resized, cropped and recompressed: what a near-duplicate
search has to see through.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

KINDS = ("landscape", "shapes", "stripes", "texture")


def sample(index: int, rng: np.random.Generator) -> Image.Image:
    width, height = int(rng.integers(480, 1280)), int(rng.integers(360, 960))
    kind = KINDS[index % len(KINDS)]
    if kind == "landscape":  # sky, ground, a sun: smooth colour fields
        sky = np.linspace(rng.uniform(120, 255), rng.uniform(0, 120), height)[:, None, None]
        tint = rng.uniform(0.4, 1.0, size=3)
        pixels = np.broadcast_to(sky * tint, (height, width, 3)).copy()
        pixels[int(height * rng.uniform(0.5, 0.8)) :] = rng.uniform(20, 160, size=3)
        image = Image.fromarray(pixels.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        x, y, r = (
            int(rng.integers(0, width)),
            int(rng.integers(0, height // 2)),
            int(rng.integers(20, 90)),
        )
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 230, 120))
        return image
    if kind == "shapes":
        image = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(5, 25))):
            x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
            x1, y1 = x0 + int(rng.integers(20, 300)), y0 + int(rng.integers(20, 300))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x0, y0, x1, y1), fill=colour)
        return image
    if kind == "stripes":
        period, angle = rng.uniform(10, 80), rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:height, 0:width]
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / period * 2 * np.pi)
        colours = rng.uniform(0, 255, size=(2, 3))
        mix = (wave[..., None] + 1) / 2
        return Image.fromarray((colours[0] * mix + colours[1] * (1 - mix)).astype(np.uint8))
    field = rng.normal(size=(height // 30 + 2, width // 30 + 2, 3)).cumsum(0).cumsum(1)
    field = ((field - field.min()) / np.ptp(field) * 255).astype(np.uint8)
    return (
        Image.fromarray(field)
        .resize((width, height), Image.Resampling.BICUBIC)
        .filter(ImageFilter.DETAIL)
    )


def transformed_copy(source: Path, target: Path) -> None:
    """Resize to 60%, crop 10% off each side, recompress at JPEG quality 60."""
    with Image.open(source) as image:
        image = image.convert("RGB")
        image = image.resize(
            (int(image.width * 0.6), int(image.height * 0.6)), Image.Resampling.LANCZOS
        )
        dx, dy = image.width // 10, image.height // 10
        image.crop((dx, dy, image.width - dx, image.height - dy)).save(target, "JPEG", quality=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--copy-of", type=int, default=5, help="which sample to copy")
    parser.add_argument("--copy-to", type=Path, help="where to write the transformed copy")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    for index in range(args.count):
        path = args.out_dir / f"{KINDS[index % len(KINDS)]}-{index:03d}.jpg"
        sample(index, rng).save(path, "JPEG", quality=90)
    if args.copy_to:
        source = args.out_dir / f"{KINDS[args.copy_of % len(KINDS)]}-{args.copy_of:03d}.jpg"
        transformed_copy(source, args.copy_to)
    print(f"wrote {args.count} sample images to {args.out_dir}")


if __name__ == "__main__":
    main()
