"""PyTorch CLIP towers -> raw ONNX graphs that end in the projection and the L2 normalisation.

- image: `pixel_values float32[B, 3, S, S] -> image_embeds float32[B, D]`
- text: `input_ids int64[B, 77] -> text_embeds float32[B, D]`, pooled at the first end token

optimum's stock configs export the towers without that ending (`clip_vision_model` gives
`pooler_output`; `clip-text-with-projection` also mislabels the `text_embeds` axes). We hand
optimum's exporter small modules that end in the projection and the normalisation, with ONNX
configs naming those outputs and only the batch axis dynamic; optimum supplies the dummy
inputs, the model patching and the TorchScript-based export (`dynamo=False`) the ONNX Runtime
optimizer needs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from optimum.exporters.onnx import export as optimum_export
from optimum.exporters.onnx.model_configs import (
    CLIPTextWithProjectionOnnxConfig,
    CLIPVisionModelOnnxConfig,
)
from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

__all__ = [
    "DEFAULT_OPSET",
    "IMAGE_INPUT",
    "IMAGE_OUTPUT",
    "TEXT_INPUT",
    "TEXT_OUTPUT",
    "export_image_graph",
    "export_text_graph",
]

IMAGE_INPUT, IMAGE_OUTPUT = "pixel_values", "image_embeds"
TEXT_INPUT, TEXT_OUTPUT = "input_ids", "text_embeds"
DEFAULT_OPSET = 17


class _ImageEmbedder(torch.nn.Module):
    """Vision tower + projection + L2 normalisation: the whole image side of CLIP."""

    def __init__(self, tower: CLIPVisionModelWithProjection) -> None:
        super().__init__()
        self.tower = tower
        self.config = tower.config  # optimum's exporter reads it

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        embeds = self.tower(pixel_values=pixel_values).image_embeds
        return {IMAGE_OUTPUT: torch.nn.functional.normalize(embeds, p=2.0, dim=-1)}


class _TextEmbedder(torch.nn.Module):
    """Text tower + projection + L2 normalisation: the whole text side of CLIP.

    The tower reads the vector at the first end token; with its causal mask, the padding after
    that token cannot change it.
    """

    def __init__(self, tower: CLIPTextModelWithProjection) -> None:
        super().__init__()
        self.tower = tower
        self.config = tower.config

    def forward(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        embeds = self.tower(input_ids=input_ids).text_embeds
        return {TEXT_OUTPUT: torch.nn.functional.normalize(embeds, p=2.0, dim=-1)}


class _ImageEmbedsOnnxConfig(CLIPVisionModelOnnxConfig):
    """Only the batch axis is dynamic: the position embeddings fix height and width."""

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return {IMAGE_INPUT: {0: "batch"}}

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return {IMAGE_OUTPUT: {0: "batch"}}


class _TextEmbedsOnnxConfig(CLIPTextWithProjectionOnnxConfig):
    """Only the batch axis is dynamic: every text is padded to the full context."""

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return {TEXT_INPUT: {0: "batch"}}

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return {TEXT_OUTPUT: {0: "batch"}}


def export_image_graph(
    tower: CLIPVisionModelWithProjection, output: Path, *, opset: int = DEFAULT_OPSET
) -> Path:
    """Write the raw (unoptimized) fp32 image graph to `output`."""
    config = tower.config
    optimum_export(
        model=_ImageEmbedder(tower).eval(),
        config=_ImageEmbedsOnnxConfig(config, task="feature-extraction"),
        output=output,
        opset=opset,
        input_shapes={"height": config.image_size, "width": config.image_size, "batch_size": 2},
    )
    return output


def export_text_graph(
    tower: CLIPTextModelWithProjection,
    output: Path,
    *,
    context_length: int,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write the raw (unoptimized) fp32 text graph to `output`."""
    optimum_export(
        model=_TextEmbedder(tower).eval(),
        config=_TextEmbedsOnnxConfig(tower.config, task="feature-extraction"),
        output=output,
        opset=opset,
        input_shapes={"batch_size": 2, "sequence_length": context_length},
    )
    return output
