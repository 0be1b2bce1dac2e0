"""A family's tower (a PyTorch module ending in the L2 normalisation) -> a raw ONNX graph.

- image: `pixel_values float32[B, 3, S, S] -> image_embeds float32[B, D]`
- text: `input_ids int64[B, L] -> text_embeds float32[B, D]`

Traced with TorchScript (`dynamo=False`): the graphs the ONNX Runtime transformer optimizer
knows how to fuse. Only the batch axis is dynamic: the position embeddings fix the image size,
and every text is padded to the full context. (optimum's exporter gave node for node the same
CLIP graphs, but it has no configs that end in each family's pooled, normalised embedding.)
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = [
    "DEFAULT_OPSET",
    "IMAGE_INPUT",
    "IMAGE_OUTPUT",
    "TEXT_INPUT",
    "TEXT_OUTPUT",
    "export_graph",
]

IMAGE_INPUT, IMAGE_OUTPUT = "pixel_values", "image_embeds"
TEXT_INPUT, TEXT_OUTPUT = "input_ids", "text_embeds"
DEFAULT_OPSET = 17


@torch.no_grad()
def export_graph(
    module: torch.nn.Module,
    example: torch.Tensor,
    output: Path,
    *,
    input_name: str,
    output_name: str,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write the raw (unoptimized) fp32 graph of `module` to `output`; `example` is a batch
    of two inputs of the right shape."""
    torch.onnx.export(
        module.eval(),
        (example,),
        str(output),
        input_names=[input_name],
        output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        opset_version=opset,
        dynamo=False,
        do_constant_folding=True,
    )
    return output
