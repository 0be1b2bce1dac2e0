"""Graph optimization and reduced-precision variants of the exported graphs (image and text)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.onnx_model import OnnxModel
from onnxruntime.transformers.optimizer import optimize_model

__all__ = [
    "QuantizationPlan",
    "optimize_graph",
    "fused_op_counts",
    "save_fp16",
    "split_for_cpu",
    "patch_embedding_as_matmul",
    "quantize_int8",
    "count_ops",
]

log = logging.getLogger(__name__)

CONTRIB_DOMAIN = "com.microsoft"


def optimize_graph(
    raw: Path, *, num_heads: int, hidden_size: int, fuse_attention: bool
) -> OnnxModel:
    """Fuse the transformer blocks: QuickGelu, SkipLayerNormalization and, if asked, Attention."""
    options = FusionOptions("clip")
    options.enable_attention = fuse_attention
    return optimize_model(
        str(raw),
        model_type="clip",
        num_heads=num_heads,
        hidden_size=hidden_size,
        opt_level=0,  # fusions only; ONNX Runtime applies its own levels at session start
        optimization_options=options,
        use_gpu=False,
    )


def fused_op_counts(model: OnnxModel) -> dict[str, int]:
    return {op: n for op, n in model.get_fused_operator_statistics().items() if n}


def save_fp16(fused: OnnxModel, output: Path) -> None:
    """Half-precision weights and activations; inputs and outputs stay float32."""
    copy = onnx.ModelProto()
    copy.CopyFrom(fused.model)
    model = OnnxModel(copy)
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(output))


def split_for_cpu(model: OnnxModel) -> None:
    """Replace each SkipLayerNormalization with Add + LayerNormalization, in place.

    ONNX Runtime's CPU SkipLayerNormalization kernel is several times slower than the ops it
    fuses (measured: 37 ms vs 11 ms per ViT-B/32 batch of 16, 13% of int8 inference time).
    """
    _split_skip_layer_norms(model.model.graph)


def _split_skip_layer_norms(graph: onnx.GraphProto) -> None:
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "SkipLayerNormalization":
            nodes.append(node)
            continue
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        data, skip, gamma, beta = node.input[:4]
        bias = node.input[4] if len(node.input) > 4 else ""
        outputs = [*node.output, "", "", ""][:4]  # output, mean, inv_std_var, input_skip_bias_sum
        total = outputs[3] or f"{node.name}/sum"
        if bias:  # bias first: ONNX Runtime folds an Add of a MatMul's output into the MatMul
            nodes.append(
                helper.make_node(
                    "Add", [data, bias], [f"{node.name}/biased"], f"{node.name}/add_bias"
                )
            )
            nodes.append(
                helper.make_node(
                    "Add", [f"{node.name}/biased", skip], [total], f"{node.name}/add_skip"
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


def patch_embedding_as_matmul(model: onnx.ModelProto, *, image_size: int) -> None:
    """Rewrite the patch-embedding Conv as patchify (Reshape, Transpose) + MatMul, in place.

    The Conv has stride = kernel = patch size, so it is a MatMul of flattened patches with the
    flattened kernel. As a MatMul it can be quantized: on ViT-B/32 the fp32 Conv was 2.6% of
    the FLOPs but about 8% of int8 inference time. The output keeps the Conv's name and
    [B, hidden, grid, grid] layout, so the rest of the graph is untouched.
    """
    graph = model.graph
    conv = next(
        (n for n in graph.node if n.op_type == "Conv" and "patch_embedding" in n.name), None
    )
    if conv is None:
        raise ValueError("the graph has no patch-embedding Conv to rewrite")
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    kernel = numpy_helper.to_array(initializers[conv.input[1]])  # [hidden, channels, p, p]
    hidden, channels, patch, _ = kernel.shape
    grid = image_size // patch
    name = conv.name.rsplit("/", 1)[0]  # .../patch_embedding, which plans match on
    flat_kernel = numpy_helper.from_array(
        kernel.reshape(hidden, channels * patch * patch).T.copy(), f"{name}/weight_as_matmul"
    )
    shapes = {
        "patches_6d": [-1, channels, grid, patch, grid, patch],
        "patches": [-1, grid * grid, channels * patch * patch],
        "grid": [-1, grid, grid, hidden],
    }
    constants = [
        numpy_helper.from_array(np.array(shape, dtype=np.int64), f"{name}/{key}_shape")
        for key, shape in shapes.items()
    ]
    rewrite = _patch_matmul_nodes(conv, name, flat_kernel.name)
    position = list(graph.node).index(conv)
    graph.node.remove(conv)
    for offset, node in enumerate(rewrite):
        graph.node.insert(position + offset, node)
    graph.initializer.remove(initializers[conv.input[1]])
    graph.initializer.extend([flat_kernel, *constants])


def _patch_matmul_nodes(conv: onnx.NodeProto, name: str, kernel: str) -> list[onnx.NodeProto]:
    """The nodes that replace `conv`: patchify, MatMul with `kernel`, the Conv's bias if it has
    one, and back to the Conv's [B, hidden, grid, grid] output (shapes from `name`/*_shape)."""
    patchify = [
        helper.make_node(
            "Reshape",
            [conv.input[0], f"{name}/patches_6d_shape"],
            [f"{name}/patches_6d"],
            f"{name}/reshape_pixels",
        ),
        helper.make_node(
            "Transpose",
            [f"{name}/patches_6d"],
            [f"{name}/patches_grid"],
            f"{name}/gather_patches",
            perm=[0, 2, 4, 1, 3, 5],
        ),
        helper.make_node(
            "Reshape",
            [f"{name}/patches_grid", f"{name}/patches_shape"],
            [f"{name}/patches"],
            f"{name}/flatten_patches",
        ),
        helper.make_node(
            "MatMul", [f"{name}/patches", kernel], [f"{name}/embedded"], f"{name}/MatMul"
        ),
    ]
    embedded = f"{name}/embedded"
    if len(conv.input) > 2:  # a bias (SigLIP's; CLIP's patch embedding has none)
        patchify.append(
            helper.make_node(
                "Add", [embedded, conv.input[2]], [f"{name}/biased"], f"{name}/add_bias"
            )
        )
        embedded = f"{name}/biased"
    rewrite = [
        *patchify,
        helper.make_node(
            "Reshape",
            [embedded, f"{name}/grid_shape"],
            [f"{name}/embedded_grid"],
            f"{name}/reshape_grid",
        ),
        helper.make_node(
            "Transpose",
            [f"{name}/embedded_grid"],
            [conv.output[0]],
            f"{name}/channels_first",
            perm=[0, 3, 1, 2],
        ),
    ]
    return rewrite


@dataclasses.dataclass(frozen=True)
class QuantizationPlan:
    """Which nodes stay in fp32 when the rest is quantized to int8.

    Node names come from the module paths of the PyTorch model, so they are the same for
    every size of a family; each family lists its plans, tried in order until one meets the
    int8 parity bar.
    """

    name: str
    keep_fp32: tuple[str, ...]  # substrings of node names

    def excluded_nodes(self, model: onnx.ModelProto) -> list[str]:
        return [
            node.name
            for node in model.graph.node
            if any(pattern in node.name for pattern in self.keep_fp32)
        ]


def quantize_int8(source: onnx.ModelProto, output: Path, plan: QuantizationPlan) -> list[str]:
    """Dynamic int8 (per-channel signed weights, uint8 activations); return the fp32 nodes.

    Quantizing the *optimized* graph turns fused Attention into QAttention, the fast path.
    Shape inference on that graph needs `DefaultTensorType` to type the fused weights.
    """
    if not any(opset.domain == CONTRIB_DOMAIN for opset in source.opset_import):
        # OnnxModel adds it when saving to a file; quantizing in memory needs it for shape
        # inference of the fused (com.microsoft) ops
        source.opset_import.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    excluded = plan.excluded_nodes(source)
    quantize_dynamic(
        source,
        str(output),
        per_channel=True,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return excluded


# The ops worth reporting in a variant's notes: fused kernels and quantized ones.
NOTABLE_OPS = (
    "Attention",
    "QAttention",
    "QuickGelu",
    "SkipLayerNormalization",
    "LayerNormalization",
    "MatMul",
    "DynamicQuantizeMatMul",
    "MatMulInteger",
    "Conv",
)


def count_ops(path: Path) -> dict[str, int]:
    """How many of each notable op the saved graph holds."""
    model = onnx.load(str(path), load_external_data=False)
    counts = dict.fromkeys(NOTABLE_OPS, 0)
    for node in model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    return {op: n for op, n in counts.items() if n}
