"""Graph optimization and reduced-precision variants of the exported image graph."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.onnx_model import OnnxModel
from onnxruntime.transformers.optimizer import optimize_model

__all__ = ["QUANTIZATION_PLANS", "QuantizationPlan", "optimize_fp32", "quantize_int8", "to_fp16"]

log = logging.getLogger(__name__)


def optimize_fp32(raw: Path, output: Path, *, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Fuse the transformer blocks (Attention, QuickGelu, SkipLayerNorm); return fused op counts."""
    model = optimize_model(
        str(raw),
        model_type="clip",
        num_heads=num_heads,
        hidden_size=hidden_size,
        opt_level=0,  # fusions only; ONNX Runtime applies its own levels at session start
        use_gpu=False,
    )
    model.save_model_to_file(str(output))
    return {op: count for op, count in model.get_fused_operator_statistics().items() if count}


def to_fp16(fp32: Path, output: Path) -> None:
    """Half-precision weights and activations; inputs and outputs stay float32."""
    model = OnnxModel(onnx.load(str(fp32)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(output))


@dataclasses.dataclass(frozen=True)
class QuantizationPlan:
    """Which nodes stay in fp32 when the rest is quantized to int8.

    Node names come from the module paths of the PyTorch model, so they are the same for
    every CLIP size.
    """

    name: str
    keep_fp32: tuple[str, ...]  # substrings of node names

    def excluded_nodes(self, model: onnx.ModelProto) -> list[str]:
        return [
            node.name
            for node in model.graph.node
            if any(pattern in node.name for pattern in self.keep_fp32)
        ]


# Tried in order until one meets the int8 parity bar. The patch embedding sees raw pixels
# and the final projection writes the embedding itself: both cost little and quantize badly.
# CLIP's MLP down-projections (fc2) carry the activation outliers of real checkpoints.
QUANTIZATION_PLANS = (
    QuantizationPlan("edges-fp32", ("patch_embedding", "visual_projection")),
    QuantizationPlan("edges-and-mlp-out-fp32", ("patch_embedding", "visual_projection", "mlp/fc2")),
)


def quantize_int8(fp32: Path, output: Path, plan: QuantizationPlan) -> list[str]:
    """Dynamic int8 (per-channel signed weights, uint8 activations); return the fp32 nodes.

    Quantizing the *optimized* graph turns fused Attention into QAttention, the fast path.
    Shape inference on that graph needs `DefaultTensorType` to type the fused weights.
    """
    excluded = plan.excluded_nodes(onnx.load(str(fp32), load_external_data=False))
    quantize_dynamic(
        str(fp32),
        str(output),
        per_channel=True,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return excluded


def count_ops(path: Path, op_types: Sequence[str]) -> dict[str, int]:
    model = onnx.load(str(path), load_external_data=False)
    counts = dict.fromkeys(op_types, 0)
    for node in model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    return {op: n for op, n in counts.items() if n}
