"""What differs between the graphs of a package, by role: `image` and `text`.

Each role exports its raw graph, computes its PyTorch reference on fixed parity inputs, and
says how it is described in the manifest and how int8 is prepared and planned. The pipeline
runs every role through the same optimize -> variants -> verify steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from lookalike.export.convert import (
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    TEXT_INPUT,
    TEXT_OUTPUT,
    export_image_graph,
    export_text_graph,
)
from lookalike.export.manifest import TokenizerSpec
from lookalike.export.optimize import (
    QuantizationPlan,
    image_quantization_plans,
    patch_embedding_as_matmul,
    text_quantization_plans,
)
from lookalike.export.source import Checkpoint
from lookalike.export.tokenizer import CONTEXT_LENGTH, package_tokenizer
from lookalike.export.verify import (
    parity_batch,
    parity_token_ids,
    reference_embeddings,
    reference_text_embeddings,
)

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
    config = checkpoint.model.config
    raw = export_image_graph(checkpoint.model, staging / "image_raw.onnx", opset=opset)
    pixels = parity_batch(checkpoint.processor)
    return GraphJob(
        role="image",
        raw=raw,
        input_name=IMAGE_INPUT,
        input_shape=("batch", 3, config.image_size, config.image_size),
        input_dtype="float32",
        output_name=IMAGE_OUTPUT,
        output_dim=config.projection_dim,
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        parity_inputs=pixels,
        reference=reference_embeddings(checkpoint.model, pixels),
        quantization_plans=image_quantization_plans(),
        prepare_int8=patch_embedding_as_matmul,
    )


def _text_job(checkpoint: Checkpoint, staging: Path, opset: int) -> GraphJob:
    assert checkpoint.text is not None
    model, tokenizer = checkpoint.text.model, checkpoint.text.tokenizer
    config = model.config
    raw = export_text_graph(
        model, staging / "text_raw.onnx", context_length=CONTEXT_LENGTH, opset=opset
    )
    ids = parity_token_ids(tokenizer, CONTEXT_LENGTH)
    return GraphJob(
        role="text",
        raw=raw,
        input_name=TEXT_INPUT,
        input_shape=("batch", CONTEXT_LENGTH),
        input_dtype="int64",
        output_name=TEXT_OUTPUT,
        output_dim=config.projection_dim,
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        parity_inputs=ids,
        reference=reference_text_embeddings(model, ids),
        quantization_plans=text_quantization_plans(),
        prepare_int8=lambda model: None,  # no convolution to rewrite
        tokenizer=package_tokenizer(tokenizer, staging),
    )
