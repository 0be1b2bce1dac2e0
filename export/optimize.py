"""Graph optimization and reduced-precision variants of the exported image graph."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnx import helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.onnx_model import OnnxModel
from onnxruntime.transformers.optimizer import optimize_model

__all__ = [
    "QUANTIZATION_PLANS",
    "QuantizationPlan",
    "optimize_graph",
    "fused_op_counts",
    "save_fp16",
    "save_cpu_fp32",
    "quantize_int8",
    "count_ops",
]

log = logging.getLogger(__name__)


def optimize_graph(raw: Path, *, num_heads: int, hidden_size: int) -> OnnxModel:
    """Fuse the transformer blocks: Attention, QuickGelu, SkipLayerNormalization."""
    return optimize_model(
        str(raw),
        model_type="clip",
        num_heads=num_heads,
        hidden_size=hidden_size,
        opt_level=0,  # fusions only; ONNX Runtime applies its own levels at session start
        use_gpu=False,
    )


def fused_op_counts(model: OnnxModel) -> dict[str, int]:
    return {op: n for op, n in model.get_fused_operator_statistics().items() if n}


def save_fp16(fused: OnnxModel, output: Path) -> None:
    """Half-precision weights and activations; inputs and outputs stay float32.

    Keeps the fused SkipLayerNormalization, which is fast on CUDA.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(fused.model)
    model = OnnxModel(copy)
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(output))


def save_cpu_fp32(fused: OnnxModel, output: Path) -> int:
    """Save the graph tuned for the CPU; return how many SkipLayerNormalizations it split.

    ONNX Runtime's CPU SkipLayerNormalization kernel is several times slower than the Add and
    LayerNormalization it replaces (measured: 37 ms vs 11 ms per ViT-B/32 batch of 16, which
    made int8 13% slower end to end), so the CPU graph keeps them apart. Mutates `fused`.
    """
    split = _split_skip_layer_norms(fused.model.graph)
    fused.save_model_to_file(str(output))
    return split


def _split_skip_layer_norms(graph: onnx.GraphProto) -> int:
    nodes: list[onnx.NodeProto] = []
    split = 0
    for node in graph.node:
        if node.op_type != "SkipLayerNormalization":
            nodes.append(node)
            continue
        split += 1
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        data, skip, gamma, beta = node.input[:4]
        bias = node.input[4] if len(node.input) > 4 else ""
        outputs = [*node.output, "", "", ""][:4]  # output, mean, inv_std_var, input_skip_bias_sum
        total = outputs[3] or f"{node.name}/sum"
        if bias:
            nodes.append(
                helper.make_node(
                    "Add", [data, skip], [f"{node.name}/skip"], f"{node.name}/add_skip"
                )
            )
            nodes.append(
                helper.make_node(
                    "Add", [f"{node.name}/skip", bias], [total], f"{node.name}/add_bias"
                )
            )
        else:
            nodes.append(helper.make_node("Add", [data, skip], [total], f"{node.name}/add_skip"))
        nodes.append(
            helper.make_node(
                "LayerNormalization",
                [total, gamma, beta],
                [outputs[0]],
                f"{node.name}/layer_norm",
                axis=-1,
                epsilon=epsilon,
            )
        )
    del graph.node[:]
    graph.node.extend(nodes)
    return split


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
