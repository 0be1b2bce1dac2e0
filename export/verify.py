"""Parity of each ONNX variant with the PyTorch tower it came from, on fixed varied inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import PreTrainedTokenizerBase

from lookalike.export.errors import ParityError
from lookalike.export.manifest import ParityFigures, Precision
from lookalike.export.runtime import import_onnxruntime

__all__ = [
    "PARITY_BARS",
    "PARITY_TEXTS",
    "check_parity",
    "parity_images",
    "reference_embeddings",
    "token_ids",
]

# Minimum cosine between ONNX and PyTorch embeddings, per precision.
PARITY_BARS = {Precision.FP32: 0.99999, Precision.FP16: 0.999, Precision.INT8: 0.99}
PARITY_SEED = 1234
# Eight varied sentences: short and long, cased, punctuated, numbers, accents, CJK, emoji,
# markup, and one past the 77-token context (truncated, end token kept).
PARITY_TEXTS = (
    "a photo of a cat",
    "A RED CAR parked in the rain at night, 1987!",
    "Ünïcödé àccents: café, naïve, São Paulo",
    "猫が窓辺で寝ている",
    "🐱🐶 two pets 🎉",
    "<b>bold</b> &amp; <i>markup</i>",
    "x",
    "a very long caption that goes on " * 12,
)


def parity_images(seed: int = PARITY_SEED) -> list[Image.Image]:
    """Eight varied, deterministic images: shapes, sizes, modes and statistics all differ."""
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, 320, dtype=np.float32)
    smooth = rng.normal(size=(12, 16, 3)).cumsum(axis=0).cumsum(axis=1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth) * 255
    images = [
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)),  # noise, landscape
        Image.fromarray(np.stack([np.tile(gradient, (400, 1))] * 3, -1).astype(np.uint8)),
        Image.fromarray(((np.indices((300, 300)).sum(0) // 25) % 2 * 255).astype(np.uint8)),
        Image.new("RGB", (224, 224), (200, 30, 60)),  # flat colour
        Image.fromarray(smooth.astype(np.uint8)).resize((640, 480), Image.Resampling.BICUBIC),
        Image.fromarray(rng.integers(0, 256, (500, 180), dtype=np.uint8), mode="L"),  # portrait
        _shapes(rng),
        Image.fromarray(np.full((64, 900, 3), (10, 120, 250), dtype=np.uint8)),  # thin banner
    ]
    return [image.convert("RGB") for image in images]


def _shapes(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (400, 300), (240, 240, 230))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = int(rng.integers(0, 350)), int(rng.integers(0, 250))
        size = int(rng.integers(10, 80))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x, y, x + size, y + size), fill=colour)
    return image


def token_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str], length: int) -> np.ndarray:
    """int64[N, length] from a Hugging Face tokenizer: truncated (end token kept last) and
    padded to the full length, as the server does."""
    encoded = tokenizer(
        texts, padding="max_length", max_length=length, truncation=True, return_tensors="np"
    )
    return encoded["input_ids"].astype(np.int64)


@torch.no_grad()
def reference_embeddings(tower: torch.nn.Module, inputs: np.ndarray) -> np.ndarray:
    """PyTorch's unit embeddings of `inputs` (pixels or token ids), as the tower computes them."""
    return tower(torch.from_numpy(inputs)).numpy()  # type: ignore[no-any-return]


def check_parity(
    path: Path,
    precision: Precision,
    input_name: str,
    inputs: np.ndarray,
    reference: np.ndarray,
) -> ParityFigures:
    """Run the variant on the whole batch and on each input alone; fail below the bar."""
    ort = import_onnxruntime()
    provider = (
        "CUDAExecutionProvider"
        if precision is Precision.FP16 and "CUDAExecutionProvider" in ort.get_available_providers()
        else "CPUExecutionProvider"
    )
    session = ort.InferenceSession(str(path), providers=[provider])
    batched = session.run(None, {input_name: inputs})[0]
    single = np.concatenate(
        [session.run(None, {input_name: inputs[i : i + 1]})[0] for i in range(len(inputs))]
    )
    outputs = np.concatenate([batched, single])
    expected = np.concatenate([reference, reference])
    cosines = np.sum(outputs * expected, axis=1) / (
        np.linalg.norm(outputs, axis=1) * np.linalg.norm(expected, axis=1)
    )
    figures = ParityFigures(
        min_cosine=float(cosines.min()),
        mean_cosine=float(cosines.mean()),
        max_abs_diff=float(np.abs(outputs - expected).max()),
        bar=PARITY_BARS[precision],
        inputs=len(inputs),
        batch_sizes=(1, len(inputs)),
        provider=provider,
    )
    if not np.isfinite(cosines).all() or figures.min_cosine < figures.bar:
        raise ParityError(
            f"{precision.value} variant disagrees with PyTorch: min cosine "
            f"{figures.min_cosine:.6f} < {figures.bar} (max abs diff {figures.max_abs_diff:.3g})"
        )
    return figures
