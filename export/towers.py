"""What differs between the graphs of a package, by role: `image` and `text`.

Each role exports its raw graph, computes its PyTorch reference on fixed parity inputs, and
says how it is described in the manifest and how int8 is prepared and planned. The pipeline
runs every role through the same optimize -> variants -> verify steps.
"""

from __future__ import annotations

import dataclasses
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
from lookalike.export.manifest import TokenizerSpec
from lookalike.export.optimize import QuantizationPlan, patch_embedding_as_matmul
from lookalike.export.verify import PARITY_TEXTS, parity_images, reference_embeddings

__all__ = ["GraphJob", "graph_jobs"]


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


def graph_jobs(checkpoint: Checkpoint, staging: Path, *, opset: int) -> list[GraphJob]:
    """Export each tower's raw graph and reference; the PyTorch weights can go after this."""
    jobs = [_image_job(checkpoint, staging, opset)]
    if checkpoint.text is not None:
        jobs.append(_text_job(checkpoint, staging, opset))
    return jobs


def _image_job(checkpoint: Checkpoint, staging: Path, opset: int) -> GraphJob:
    image = checkpoint.image
    pixels = image.reference_pixels(parity_images())  # the family's own processor
    raw = export_graph(
        image.tower.module,
        torch.from_numpy(pixels[:2]),
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
        input_shape=("batch", 3, image.image_size, image.image_size),
        input_dtype="float32",
        output_name=IMAGE_OUTPUT,
        parity_inputs=pixels,
        prepare_int8=patch_embedding_as_matmul,
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
    **described: Any,
) -> GraphJob:
    return GraphJob(
        role=role,
        raw=raw,
        output_dim=tower.dims,
        num_heads=tower.num_heads,
        hidden_size=tower.hidden_size,
        parity_inputs=parity_inputs,
        reference=reference_embeddings(tower.module, parity_inputs),
        quantization_plans=tower.int8_plans,
        **described,
    )
