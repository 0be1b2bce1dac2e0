"""PyTorch CLIP vision tower -> ONNX graph `pixel_values -> image_embeds` (unit norm).

optimum's stock `clip_vision_model` config exports `pooler_output`, without the projection.
We hand optimum's exporter a small module that ends in the projection and the L2
normalisation, with an ONNX config naming that output; optimum supplies the dummy inputs,
the model patching and the TorchScript-based export (`dynamo=False`) the ORT optimizer needs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from optimum.exporters.onnx import export as optimum_export
from optimum.exporters.onnx.model_configs import CLIPVisionModelOnnxConfig
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "ImageEmbedder", "export_image_graph"]

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "image_embeds"
DEFAULT_OPSET = 17


class ImageEmbedder(torch.nn.Module):
    """Vision tower + projection + L2 normalisation: the whole image side of CLIP."""

    def __init__(self, clip_vision: CLIPVisionModelWithProjection) -> None:
        super().__init__()
        self.clip_vision = clip_vision
        self.config = clip_vision.config  # optimum's exporter reads it

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        embeds = self.clip_vision(pixel_values=pixel_values).image_embeds
        return {OUTPUT_NAME: torch.nn.functional.normalize(embeds, p=2.0, dim=-1)}


class ImageEmbedsOnnxConfig(CLIPVisionModelOnnxConfig):
    """Only the batch axis is dynamic: the position embeddings fix height and width."""

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return {INPUT_NAME: {0: "batch"}}

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return {OUTPUT_NAME: {0: "batch"}}


def export_image_graph(
    model: CLIPVisionModelWithProjection, output: Path, *, opset: int = DEFAULT_OPSET
) -> Path:
    """Write the raw (unoptimized) fp32 image graph to `output`."""
    config: CLIPVisionConfig = model.config
    onnx_config = ImageEmbedsOnnxConfig(config, task="feature-extraction")
    input_shapes = {"height": config.image_size, "width": config.image_size, "batch_size": 2}
    optimum_export(
        model=ImageEmbedder(model).eval(),
        config=onnx_config,
        output=output,
        opset=opset,
        input_shapes=input_shapes,
    )
    return output
