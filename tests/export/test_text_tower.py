"""The package's text graph: contract, parity, tokenizer entry, `--no-text`, format 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lookalike.export.cli import main
from lookalike.export.families.clip import PRESETS as RANDOM_INIT_PRESETS
from lookalike.export.manifest import MANIFEST_FILE, Manifest, Precision, sha256_file
from lookalike.export.source import load_checkpoint
from lookalike.export.verify import PARITY_BARS, PARITY_TEXTS
from tests.packages import as_format_1

PRESET = RANDOM_INIT_PRESETS["tiny"]


def text_session(package: Path, manifest: Manifest, precision: Precision) -> ort.InferenceSession:
    variant = manifest.graphs["text"].variants[precision]
    return ort.InferenceSession(str(package / variant.file), providers=["CPUExecutionProvider"])


def ids(texts: list[str]) -> np.ndarray:
    text = load_checkpoint(random_init="tiny").text
    assert text is not None
    return text.token_ids(texts)


def test_the_manifest_describes_the_tokenizer(tiny_export: Path, tiny_manifest: Manifest) -> None:
    graph = tiny_manifest.graphs["text"]
    assert (graph.input, graph.input_dtype, graph.output) == ("input_ids", "int64", "text_embeds")
    assert graph.input_shape == ("batch", 77)
    assert graph.output_dim == tiny_manifest.embedding_dim
    spec = graph.tokenizer
    assert spec is not None
    assert (spec.max_length, spec.start_token_id, spec.end_token_id) == (77, 49406, 49407)
    assert spec.pad_token_id == 49407
    assert spec.pooling == "first-end-token"
    assert spec.tokenizer_json in spec.files
    assert spec.sha256 == sha256_file(tiny_export / spec.tokenizer_json)
    vocabulary = json.loads((tiny_export / "vocab.json").read_text())
    assert len(vocabulary) == 49408  # CLIP's, built from OpenAI's BPE merges


@pytest.mark.parametrize("precision", list(Precision))
def test_each_text_variant_meets_its_bar_and_has_a_dynamic_batch(
    tiny_export: Path, tiny_manifest: Manifest, precision: Precision
) -> None:
    parity = tiny_manifest.graphs["text"].variants[precision].parity
    assert parity.bar == PARITY_BARS[precision]
    assert parity.bar <= parity.min_cosine
    assert parity.inputs == len(PARITY_TEXTS)
    session = text_session(tiny_export, tiny_manifest, precision)
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1]) == ("input_ids", "tensor(int64)", 77)
    assert (out.name, out.type) == ("text_embeds", "tensor(float)")
    assert isinstance(inp.shape[0], str)
    for batch in (1, 3):
        embeds = session.run(None, {"input_ids": ids(list(PARITY_TEXTS[:batch]))})[0]
        assert embeds.shape == (batch, PRESET["projection_dim"])
        np.testing.assert_allclose(np.linalg.norm(embeds, axis=1), 1.0, atol=1e-3)


def test_fp32_text_matches_pytorch_recomputed_here(
    tiny_export: Path, tiny_manifest: Manifest
) -> None:
    texts = ["a dog on a beach", "ROBOTS 🤖 at night", "naïve café"]
    text = load_checkpoint(random_init="tiny").text
    assert text is not None
    batch = text.token_ids(texts)
    with torch.no_grad():  # the Hugging Face model itself, not the exported wrapper
        expected = text.tower.module.tower(input_ids=torch.from_numpy(batch)).text_embeds.numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = text_session(tiny_export, tiny_manifest, Precision.FP32).run(None, {"input_ids": batch})[
        0
    ]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_int8_text_runs_quantized_attention_and_keeps_the_projection_fp32(
    tiny_export: Path, tiny_manifest: Manifest
) -> None:
    variant = tiny_manifest.graphs["text"].variants[Precision.INT8]
    nodes = onnx.load(str(tiny_export / variant.file)).graph.node
    ops = [node.op_type for node in nodes]
    assert ops.count("QAttention") == PRESET["text"]["num_hidden_layers"]
    assert {n.op_type for n in nodes if "text_projection" in n.name} == {"MatMul"}


def test_no_text_exports_the_image_tower_alone(tmp_path: Path) -> None:
    output = tmp_path / "out"
    code = main(
        ["--quiet", "--random-init", "tiny", "-o", str(output), "--precision", "fp32", "--no-text"]
    )
    assert code == 0
    manifest = Manifest.load(output)
    assert set(manifest.graphs) == {"image"}
    assert sorted(p.name for p in output.iterdir()) == ["image_fp32.onnx", MANIFEST_FILE]


def test_a_format_1_manifest_still_reads(tiny_float_export: Path) -> None:
    raw = as_format_1(json.loads((tiny_float_export / MANIFEST_FILE).read_text()))
    manifest = Manifest.from_json(json.dumps(raw))
    assert set(manifest.graphs) == {"image"}
    assert manifest.graphs["image"].input_dtype == "float32"
    assert manifest.graphs["image"].variants[Precision.FP32].parity.inputs == 8
