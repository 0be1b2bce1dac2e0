"""Pixels for image graphs: uint8 images as a format-4 graph takes them, and the same images
rescaled and normalised as the family's processor makes them for the PyTorch tower, computed
here from the spec's numbers (independently of the exporter's and the server's code)."""

from __future__ import annotations

import numpy as np

from lookalike.export.manifest import PreprocessSpec


def random_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8[count, size, size, 3]: noise of a different contrast per image."""
    rng = np.random.default_rng(seed)
    contrast = rng.uniform(0.2, 1.0, size=(count, 1, 1, 1))
    noise = 127.5 + 127.5 * contrast * rng.uniform(-1, 1, size=(count, size, size, 3))
    return noise.round().astype(np.uint8)


def normalized(images: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8[N, S, S, 3] -> float32[N, 3, S, S]: (value * rescale - mean) / std, per channel."""
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(1, 3, 1, 1)
    rescaled = images.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(spec.rescale_factor)
    return np.ascontiguousarray((rescaled - mean) / std, dtype=np.float32)
