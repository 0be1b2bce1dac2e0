"""What differs between the graphs of a package, by role: `image` and `text`.

Each role exports its raw graph, computes its PyTorch reference on fixed parity inputs, and
says how it is described in the manifest and how int8 is prepared and planned. The pipeline
runs every role through the same optimize -> variants -> verify steps.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from lookalike.export.checkpoint import Checkpoint, Tower
from lookalike.export.convert import (
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    TEXT_INPUT,
    TEXT_OUTPUT,
    export_graph,
)
from lookalike.export.manifest import PixelLayout, PreprocessSpec, TokenizerSpec
from lookalike.export.optimize import QuantizationPlan, patch_embedding_as_matmul
from lookalike.export.verify import PARITY_TEXTS, parity_images, reference_embeddings

__all__ = ["FromPixels", "GraphJob", "graph_jobs"]


@dataclasses.dataclass
class GraphJob:
    """One graph on its way from PyTorch to verified variants."""

    role: str
    raw: Path  # the unoptimized fp32 graph in the staging directory
    input_name: str
    input_shape: tuple[str | int, ...]
    input_dtype: str
    output_name: str
    output_dim: int
    num_heads: int
    hidden_size: int
    parity_inputs: np.ndarray
    reference: np.ndarray  # PyTorch's unit embeddings of `parity_inputs`
    quantization_plans: tuple[QuantizationPlan, ...]
    prepare_int8: Callable[[onnx.ModelProto], None]
    tokenizer: TokenizerSpec | None = None


class FromPixels(torch.nn.Module):
    """uint8[B, S, S, 3] pixels, as decoders write them -> the tower's embedding: the family's
    rescaling and normalisation and the change of layout become the graph's first operations,
    so a caller sends a quarter of the bytes and converts nothing."""

    def __init__(self, tower: torch.nn.Module, preprocess: PreprocessSpec) -> None:
        super().__init__()
        self.tower = tower
        std = torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.scale: torch.Tensor
        self.shift: torch.Tensor
        self.register_buffer("scale", preprocess.rescale_factor / std)
        self.register_buffer("shift", -mean / std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        channels_first = pixels.permute(0, 3, 1, 2).to(self.scale.dtype)
        return self.tower(channels_first * self.scale + self.shift)  # type: ignore[no-any-return]


def graph_jobs(
    checkpoint: Checkpoint,
    staging: Path,
    *,
    opset: int,
    image_input: PixelLayout = PixelLayout.UINT8_NHWC,
) -> list[GraphJob]:
    """Export each tower's raw graph and reference; the PyTorch weights can go after this."""
    jobs = [_image_job(checkpoint, staging, opset, image_input)]
    if checkpoint.text is not None:
        jobs.append(_text_job(checkpoint, staging, opset))
    return jobs


def _image_job(checkpoint: Checkpoint, staging: Path, opset: int, layout: PixelLayout) -> GraphJob:
    """The image graph; its reference is always the family's processor (rescaled and
    normalised pixels) through the PyTorch tower."""
    image, size = checkpoint.image, checkpoint.image.image_size
    photos = parity_images()
    pixels = image.reference_pixels(photos)  # the family's own processor
    module, inputs, shape = image.tower.module, pixels, ("batch", 3, size, size)
    if layout is PixelLayout.UINT8_NHWC:
        module, inputs = FromPixels(module, image.preprocess).eval(), image.resized_pixels(photos)
        shape = ("batch", size, size, 3)
    raw = export_graph(
        module,
        torch.from_numpy(inputs[:2]),
        staging / "image_raw.onnx",
        input_name=IMAGE_INPUT,
        output_name=IMAGE_OUTPUT,
        opset=opset,
    )
    return _job(
        "image",
        raw,
        image.tower,
        input_name=IMAGE_INPUT,
        input_shape=shape,
        input_dtype=layout.value,
        output_name=IMAGE_OUTPUT,
        parity_inputs=inputs,
        reference_inputs=pixels,
        prepare_int8=functools.partial(patch_embedding_as_matmul, image_size=size),
    )


def _text_job(checkpoint: Checkpoint, staging: Path, opset: int) -> GraphJob:
    text = checkpoint.text
    assert text is not None
    ids = text.token_ids(PARITY_TEXTS)  # the family's own tokenizer
    raw = export_graph(
        text.tower.module,
        torch.from_numpy(ids[:2]),
        staging / "text_raw.onnx",
        input_name=TEXT_INPUT,
        output_name=TEXT_OUTPUT,
        opset=opset,
    )
    return _job(
        "text",
        raw,
        text.tower,
        input_name=TEXT_INPUT,
        input_shape=("batch", text.context_length),
        input_dtype="int64",
        output_name=TEXT_OUTPUT,
        parity_inputs=ids,
        prepare_int8=lambda model: None,  # no convolution to rewrite
        tokenizer=text.save_tokenizer(staging),
    )


def _job(
    role: str,
    raw: Path,
    tower: Tower,
    *,
    parity_inputs: np.ndarray,
    reference_inputs: np.ndarray | None = None,  # what the PyTorch tower takes, if not those
    **described: Any,
) -> GraphJob:
    reference = reference_embeddings(
        tower.module, parity_inputs if reference_inputs is None else reference_inputs
    )
    return GraphJob(
        role=role,
        raw=raw,
        output_dim=tower.dims,
        num_heads=tower.num_heads,
        hidden_size=tower.hidden_size,
        parity_inputs=parity_inputs,
        reference=reference,
        quantization_plans=tower.int8_plans,
        **described,
    )
