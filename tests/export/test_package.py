"""The exported model package: files, manifest, graph contract and numerics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lookalike.export.families.clip import PRESETS as RANDOM_INIT_PRESETS
from lookalike.export.manifest import MANIFEST_FILE, Manifest, Precision, sha256_file
from lookalike.export.optimize import patch_embedding_as_matmul
from lookalike.export.source import load_checkpoint
from lookalike.export.verify import PARITY_BARS
from tests.pixels import normalized, random_images

PRESET = RANDOM_INIT_PRESETS["tiny"]
TINY = {**PRESET["vision"], "projection_dim": PRESET["projection_dim"]}


def session(package: Path, manifest: Manifest, precision: Precision) -> ort.InferenceSession:
    variant = manifest.graphs["image"].variants[precision]
    return ort.InferenceSession(str(package / variant.file), providers=["CPUExecutionProvider"])


def pixels(batch: int, seed: int = 0) -> np.ndarray:
    return random_images(batch, TINY["image_size"], seed)


def test_package_holds_manifest_tokenizer_and_one_file_per_graph_and_precision(
    tiny_export: Path, tiny_manifest: Manifest
) -> None:
    files = sorted(p.name for p in tiny_export.iterdir())
    assert set(tiny_manifest.graphs) == {"image", "text"}
    tokenizer = tiny_manifest.graphs["text"].tokenizer
    assert tokenizer is not None
    graph_files = []
    for role, graph in tiny_manifest.graphs.items():
        assert set(graph.variants) == set(Precision)
        for precision, variant in graph.variants.items():
            assert variant.file == f"{role}_{precision.value}.onnx"
            path = tiny_export / variant.file
            assert variant.sha256 == sha256_file(path)
            assert variant.bytes == path.stat().st_size
            graph_files.append(variant.file)
    assert files == sorted([MANIFEST_FILE, *graph_files, *tokenizer.files])


def test_manifest_describes_model_and_preprocessing(tiny_manifest: Manifest) -> None:
    assert tiny_manifest.source.kind == "random-init"
    assert tiny_manifest.source.id == "tiny"
    assert tiny_manifest.source.random_weights is True
    assert tiny_manifest.embedding_dim == TINY["projection_dim"]
    prep = tiny_manifest.preprocess
    assert (prep.image_size, prep.resize_shortest_edge) == (224, 224)
    assert (prep.crop_height, prep.crop_width, prep.center_crop) == (224, 224, True)
    assert prep.resample == "bicubic"
    assert prep.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert prep.std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    assert prep.rescale_factor == pytest.approx(1 / 255)
    assert tiny_manifest.opset == 17
    for tool in ("torch", "transformers", "onnxruntime", "onnx"):
        assert tiny_manifest.tools[tool][0].isdigit(), tool
    graph = tiny_manifest.graphs["image"]
    assert (graph.input, graph.output, graph.l2_normalized) == (
        "pixel_values",
        "image_embeds",
        True,
    )


def test_manifest_round_trips_through_json(tiny_export: Path, tiny_manifest: Manifest) -> None:
    text = (tiny_export / MANIFEST_FILE).read_text()
    assert Manifest.from_json(text) == tiny_manifest
    assert json.loads(tiny_manifest.to_json()) == json.loads(text)


def test_a_package_without_rejected_variants_is_written_as_older_readers_read_it(
    tiny_export: Path, tiny_manifest: Manifest
) -> None:
    """`rejected` appears only where a variant was rejected: a Lookalike from before it (which
    refuses unknown keys as a malformed manifest) still serves every other package."""
    raw = json.loads((tiny_export / MANIFEST_FILE).read_text())
    assert all("rejected" not in graph for graph in raw["graphs"].values())
    assert all(graph.rejected == {} for graph in tiny_manifest.graphs.values())


@pytest.mark.parametrize("precision", list(Precision))
def test_parity_figures_meet_their_bar(tiny_manifest: Manifest, precision: Precision) -> None:
    parity = tiny_manifest.graphs["image"].variants[precision].parity
    assert parity.bar == PARITY_BARS[precision]
    assert parity.bar <= parity.min_cosine <= parity.mean_cosine <= 1.0 + 1e-6
    assert parity.inputs >= 8
    assert parity.batch_sizes[0] == 1
    assert parity.batch_sizes[1] > 1


@pytest.mark.parametrize("precision", list(Precision))
def test_graph_has_dynamic_batch_and_unit_norm_output(
    tiny_export: Path, tiny_manifest: Manifest, precision: Precision
) -> None:
    sess = session(tiny_export, tiny_manifest, precision)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "pixel_values"
    assert inp.type == "tensor(uint8)"  # pixels as decoders write them
    assert isinstance(inp.shape[0], str)  # symbolic: any batch size
    assert inp.shape[1:] == [224, 224, 3]
    assert out.name == "image_embeds"
    assert out.type == "tensor(float)"
    for batch in (1, 3, 7):
        embeds = sess.run(None, {"pixel_values": pixels(batch)})[0]
        assert embeds.shape == (batch, TINY["projection_dim"])
        np.testing.assert_allclose(np.linalg.norm(embeds, axis=1), 1.0, atol=1e-3)


def test_fp32_image_alone_equals_image_in_batch_of_seven(
    tiny_export: Path, tiny_manifest: Manifest
) -> None:
    sess = session(tiny_export, tiny_manifest, Precision.FP32)
    batch = pixels(7, seed=3)
    together = sess.run(None, {"pixel_values": batch})[0]
    for i in range(7):
        alone = sess.run(None, {"pixel_values": batch[i : i + 1]})[0]
        assert np.abs(alone[0] - together[i]).max() <= 1e-5


def test_fp32_matches_pytorch_projection_recomputed_here(
    tiny_export: Path, tiny_manifest: Manifest
) -> None:
    """Independent of the exporter's own parity check: same seed, same weights; the graph
    rescales and normalises its uint8 pixels as the processor does for PyTorch."""
    model = load_checkpoint(random_init="tiny").image.tower.module.tower
    batch = pixels(4, seed=9)
    with torch.no_grad():
        floats = torch.from_numpy(normalized(batch, tiny_manifest.preprocess))
        expected = model(pixel_values=floats).image_embeds.numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = session(tiny_export, tiny_manifest, Precision.FP32).run(None, {"pixel_values": batch})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def op_types(package: Path, manifest: Manifest, precision: Precision) -> list[str]:
    variant = manifest.graphs["image"].variants[precision]
    return [node.op_type for node in onnx.load(str(package / variant.file)).graph.node]


def test_each_variant_has_the_fusions_its_hardware_runs_fastest(
    tiny_export: Path, tiny_manifest: Manifest
) -> None:
    layers = TINY["num_hidden_layers"]
    fp32 = op_types(tiny_export, tiny_manifest, Precision.FP32)  # CPU
    assert fp32.count("QuickGelu") == layers
    assert "Attention" not in fp32  # plain MatMuls run faster on CPU
    assert "SkipLayerNormalization" not in fp32  # split again for the CPU
    fp16 = op_types(tiny_export, tiny_manifest, Precision.FP16)  # CUDA: every fusion
    assert fp16.count("Attention") == layers
    assert "SkipLayerNormalization" in fp16
    int8 = op_types(tiny_export, tiny_manifest, Precision.INT8)  # CPU
    assert int8.count("QAttention") == layers
    assert "SkipLayerNormalization" not in int8
    for precision in Precision:  # the manifest's notes describe the files
        notes = tiny_manifest.graphs["image"].variants[precision].notes
        ops = op_types(tiny_export, tiny_manifest, precision)
        assert notes["ops"] == {op: ops.count(op) for op in notes["ops"]}


def test_int8_quantizes_body_and_patch_embedding_and_keeps_projection_fp32(
    tiny_export: Path, tiny_manifest: Manifest
) -> None:
    variant = tiny_manifest.graphs["image"].variants[Precision.INT8]
    assert variant.notes["plan"] == "projection-fp32"  # the first plan meets the tiny model's bar
    nodes = onnx.load(str(tiny_export / variant.file)).graph.node
    ops = [node.op_type for node in nodes]
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert "Conv" not in ops  # the patch embedding runs as a MatMul, quantized
    patch_embedding = {n.op_type for n in nodes if "patch_embedding" in n.name}
    assert "MatMulInteger" in patch_embedding
    projection = [n for n in nodes if "visual_projection" in n.name]
    assert projection
    assert {n.op_type for n in projection} == {"MatMul"}


def test_patch_embedding_as_matmul_computes_the_same_embeddings(
    tiny_export: Path, tiny_manifest: Manifest
) -> None:
    variant = tiny_manifest.graphs["image"].variants[Precision.FP32]
    model = onnx.load(str(tiny_export / variant.file))
    assert "Conv" in {node.op_type for node in model.graph.node}
    patch_embedding_as_matmul(model, image_size=TINY["image_size"])
    assert "Conv" not in {node.op_type for node in model.graph.node}
    rewritten = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = pixels(3)
    expected = session(tiny_export, tiny_manifest, Precision.FP32).run(
        None, {"pixel_values": batch}
    )[0]
    got = rewritten.run(None, {"pixel_values": batch})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_fp16_weights_are_half_precision_with_uint8_pixels_in_and_float32_out(
    tiny_export: Path, tiny_manifest: Manifest
) -> None:
    variant = tiny_manifest.graphs["image"].variants[Precision.FP16]
    graph = onnx.load(str(tiny_export / variant.file)).graph
    types = {init.data_type for init in graph.initializer if len(init.dims) == 2}
    assert types == {onnx.TensorProto.FLOAT16}
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("precision", list(Precision))
def test_float_pixels_as_before_format_4_give_the_same_embeddings(
    tiny_export: Path, tiny_manifest: Manifest, tiny_float_export: Path, precision: Precision
) -> None:
    """`--image-input float32` writes the graph packages took before format 4 (normalised
    float32 [B, 3, S, S]): fed the same images, it embeds as the uint8 graph does."""
    float_manifest = Manifest.load(tiny_float_export)
    graph = float_manifest.graphs["image"]
    assert (graph.input_dtype, graph.input_shape) == ("float32", ("batch", 3, 224, 224))
    assert tiny_manifest.graphs["image"].input_dtype == "uint8"
    assert tiny_manifest.graphs["image"].input_shape == ("batch", 224, 224, 3)
    images = pixels(6, seed=5)
    ours = session(tiny_export, tiny_manifest, precision).run(None, {"pixel_values": images})[0]
    floats = normalized(images, float_manifest.preprocess)
    before = session(tiny_float_export, float_manifest, precision)
    theirs = before.run(None, {"pixel_values": floats})[0]
    bar = {Precision.FP32: 0.99999, Precision.FP16: 0.999, Precision.INT8: 0.99}[precision]
    assert np.sum(ours * theirs, axis=1).min() >= bar


def test_cli_prints_summary_and_random_weights_warning(tiny_export: Path) -> None:
    stdout = (tiny_export.parent / "export.stdout").read_text()
    stderr = (tiny_export.parent / "export.stderr").read_text()
    assert "RANDOM WEIGHTS" in stdout
    assert "RANDOM WEIGHTS" in stderr
    for precision in Precision:
        assert f"image_{precision.value}.onnx" in stdout
    assert "[10/10]" in stderr  # numbered progress lines: load, export, 2 x (optimize, 3 variants)
    assert "peak memory so far" in stderr  # with what each step cost, for sizing machines
