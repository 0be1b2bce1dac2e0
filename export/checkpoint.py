"""What a model family hands the export pipeline, whatever the family.

Each tower is a PyTorch module that ends in the embedding and its L2 normalisation (the graph
the server runs is traced from it); beside it the family's own reference for its input: the
image processor and the tokenizer the checkpoint was trained with, which the parity checks run
against. The pipeline knows nothing else of the family.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lookalike.export.manifest import ModelSource, PreprocessSpec, ScoreScale, TokenizerSpec
from lookalike.export.optimize import QuantizationPlan
from lookalike.export.tokenizer import package_tokenizer
from lookalike.export.verify import token_ids

__all__ = [
    "Checkpoint",
    "ImageSide",
    "Normalized",
    "TextSide",
    "Tower",
    "per_channel",
    "processor_pixels",
    "processor_resized_pixels",
    "resample_name",
]


class Normalized(torch.nn.Module):
    """A Hugging Face tower's embedding for one input, L2-normalised: `tower(**{input_name:
    x}).<output>`, the module a graph is traced from. The tower stays reachable as `.tower`
    (node names follow module paths: int8 plans match on them)."""

    def __init__(self, tower: torch.nn.Module, *, input_name: str, output: str) -> None:
        super().__init__()
        self.tower, self.input_name, self.output = tower, input_name, output

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        embeds = getattr(self.tower(**{self.input_name: inputs}), self.output)
        return torch.nn.functional.normalize(embeds, p=2.0, dim=-1)


@dataclasses.dataclass(frozen=True)
class Tower:
    """`module(input) -> float32[B, dims]` unit vectors; the shape the optimizer fuses, and
    the int8 plans to try in order (which nodes, named by module path, stay fp32)."""

    module: torch.nn.Module
    dims: int
    hidden_size: int
    num_heads: int
    num_layers: int
    int8_plans: tuple[QuantizationPlan, ...]

    @classmethod
    def of(
        cls,
        module: torch.nn.Module,
        config: Any,
        *,
        dims: int,
        int8_plans: tuple[QuantizationPlan, ...],
    ) -> Tower:
        """A tower whose shape is read from its Hugging Face config."""
        return cls(
            module=module.eval(),
            dims=dims,
            hidden_size=config.hidden_size,
            num_heads=config.num_attention_heads,
            num_layers=config.num_hidden_layers,
            int8_plans=int8_plans,
        )


@dataclasses.dataclass(frozen=True)
class ImageSide:
    tower: Tower
    image_size: int
    patch_size: int
    preprocess: PreprocessSpec  # the processor's rule, as the server applies it
    reference_pixels: Callable[[Sequence[Image.Image]], np.ndarray]  # the family's processor
    # the same processor's resized and cropped pixels before it rescales them: uint8[N, S, S, 3]
    resized_pixels: Callable[[Sequence[Image.Image]], np.ndarray]

    @classmethod
    def of(cls, tower: Tower, config: Any, processor: Any, preprocess: PreprocessSpec) -> ImageSide:
        """An image tower sized by its Hugging Face vision config, checked against the
        family's image processor, whose rule `preprocess` restates."""
        return cls(
            tower=tower,
            image_size=config.image_size,
            patch_size=config.patch_size,
            preprocess=preprocess,
            reference_pixels=processor_pixels(processor),
            resized_pixels=processor_resized_pixels(processor),
        )


@dataclasses.dataclass(frozen=True)
class TextSide:
    tower: Tower
    context_length: int  # every text is truncated and padded to this many tokens
    vocab_size: int
    # the family's own tokenizer: int64[N, context_length], truncated and padded as trained
    token_ids: Callable[[Sequence[str]], np.ndarray]
    # writes the tokenizer as a `tokenizers` file into a package directory, and describes it
    save_tokenizer: Callable[[Path], TokenizerSpec]

    @classmethod
    def of(
        cls,
        tower: Tower,
        *,
        reference: Any,
        packaged: Any,
        context_length: int,
        vocab_size: int,
        pooling: str,
        lowercase: bool = False,
    ) -> TextSide:
        """A text tower checked against the family's `reference` tokenizer; `packaged` is its
        fast (`tokenizers`) equivalent the server runs, pooled by the manifest's rule. With
        `lowercase`, the family's texts are lowercased before its tokenizer sees them (the
        packaged tokenizer does it itself)."""

        def reference_ids(texts: Sequence[str]) -> np.ndarray:
            texts = [text.lower() for text in texts] if lowercase else list(texts)
            return token_ids(reference, texts, context_length)

        return cls(
            tower=tower,
            context_length=context_length,
            vocab_size=vocab_size,
            token_ids=reference_ids,
            save_tokenizer=lambda directory: package_tokenizer(
                packaged,
                directory,
                max_length=context_length,
                pooling=pooling,
                vocab_size=vocab_size,
            ),
        )


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    family: str  # "clip" or "siglip"
    source: ModelSource
    image: ImageSide
    text: TextSide | None  # None when only the image tower was asked for
    scores: ScoreScale | None = None  # the family's calibrated probability, where it has one

    @property
    def towers(self) -> list[Tower]:
        return [self.image.tower] + ([self.text.tower] if self.text else [])


def resample_name(resample: Any) -> str:
    """An image processor's resampling filter (enum or int) as the manifest names it."""
    name = getattr(resample, "name", None) or _PIL_FILTERS[int(resample)]
    return str(name).lower()


def per_channel(value: float | Sequence[float]) -> tuple[float, float, float]:
    """A processor's mean or std, one value or three, as three."""
    red, green, blue = [value] * 3 if isinstance(value, (int, float)) else value
    return float(red), float(green), float(blue)


_PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def processor_pixels(processor: Any) -> Callable[[Sequence[Image.Image]], np.ndarray]:
    """A Hugging Face image processor as a reference: images -> float32[N, 3, S, S]."""

    def pixels(images: Sequence[Image.Image]) -> np.ndarray:
        batch = processor(images=list(images), return_tensors="np")["pixel_values"]
        return np.asarray(batch, dtype=np.float32)

    return pixels


def processor_resized_pixels(processor: Any) -> Callable[[Sequence[Image.Image]], np.ndarray]:
    """A Hugging Face image processor's pixels before rescaling and normalisation: images ->
    uint8[N, S, S, 3], what an image graph of format 4 takes."""

    def pixels(images: Sequence[Image.Image]) -> np.ndarray:
        kept = processor(
            images=list(images), do_rescale=False, do_normalize=False, return_tensors="np"
        )["pixel_values"]
        rounded = np.round(kept)
        if np.abs(kept - rounded).max() > 1e-3 or rounded.min() < 0 or rounded.max() > 255:
            raise ValueError("the image processor resized to pixels other than whole 0..255")
        return np.ascontiguousarray(rounded.astype(np.uint8).transpose(0, 2, 3, 1))

    return pixels
