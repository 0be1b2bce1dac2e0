"""SigLIP through the same export: its manifest, its graphs against the Hugging Face model
itself, and the served tokenizer against `SiglipTokenizer` on hostile strings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lookalike.export.families.siglip import CONTEXT_LENGTH, PRESETS
from lookalike.export.manifest import FORMAT_VERSION, Manifest, Precision
from lookalike.export.source import load_checkpoint
from lookalike.export.verify import PARITY_BARS, PARITY_TEXTS
from lookalike.server.embed.tokenizer import TextTokenizer
from tests.pixels import normalized, random_images

PRESET = PRESETS["siglip-tiny"]
# Beyond the parity texts: case, punctuation SigLIP drops, whitespace it collapses, digits,
# full-width forms its NFKC folds, mixed scripts, and runs of spaces and tabs.
HOSTILE_TEXTS = (
    *PARITY_TEXTS,
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\nhere",
    "Don't STOP: it's 3.14159, (really) [sic] {x} <y>!?",
    "FULL-WIDTH letters!".translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)}),
    "émojis 👩‍👩‍👧 and ZWJ",
    "Ελληνικά, русский, العربية, हिन्दी",
    "https://example.com/a/b?c=d&e=f#g",
    "word " * 100,
)


@pytest.fixture(scope="module")
def manifest(siglip_export: Path) -> Manifest:
    return Manifest.load(siglip_export)


def session(
    package: Path, manifest: Manifest, role: str, precision: Precision
) -> ort.InferenceSession:
    variant = manifest.graphs[role].variants[precision]
    return ort.InferenceSession(str(package / variant.file), providers=["CPUExecutionProvider"])


def test_the_manifest_records_the_family_its_rules_and_its_score_scale(
    manifest: Manifest,
) -> None:
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.family == "siglip"
    assert manifest.source.id == "siglip-tiny"
    assert manifest.embedding_dim == PRESET["vision"]["hidden_size"]  # no projection
    prep = manifest.preprocess
    assert (prep.resize, prep.center_crop, prep.image_size) == ("squash", False, 224)
    assert (prep.mean, prep.std, prep.resample) == ((0.5,) * 3, (0.5,) * 3, "bicubic")
    spec = manifest.graphs["text"].tokenizer
    assert spec is not None
    assert (spec.max_length, spec.start_token_id, spec.end_token_id, spec.pad_token_id) == (
        CONTEXT_LENGTH,
        None,
        1,
        1,
    )
    assert spec.pooling == "last-token"
    assert spec.ordinary_ids.start == 2  # <pad> 0 and </s> 1 come first
    assert manifest.scores is not None
    assert manifest.scores.kind == "sigmoid"
    for role in ("image", "text"):
        for precision, variant in manifest.graphs[role].variants.items():
            assert PARITY_BARS[precision] <= variant.parity.min_cosine, (role, precision)


def test_fp32_graphs_equal_the_hugging_face_towers(siglip_export: Path, manifest: Manifest) -> None:
    """Against `SiglipModel`'s own forward (its `nn.MultiheadAttention` pooling head, not the
    plain rewrite the export traces), on inputs the exporter never saw."""
    checkpoint = load_checkpoint(random_init="siglip-tiny")
    assert checkpoint.text is not None
    pixels = random_images(5, 224, seed=3)
    ids = checkpoint.text.token_ids(["a dog on a beach", "ROBOTS at night", "x"])
    vision, text = checkpoint.image.tower.module.tower, checkpoint.text.tower.module.tower
    with torch.no_grad():
        floats = torch.from_numpy(normalized(pixels, manifest.preprocess))
        image_expected = vision(pixel_values=floats).pooler_output.numpy()
        text_expected = text(input_ids=torch.from_numpy(ids)).pooler_output.numpy()
    for role, inputs, expected in (
        ("image", {"pixel_values": pixels}, image_expected),
        ("text", {"input_ids": ids}, text_expected),
    ):
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        got = session(siglip_export, manifest, role, Precision.FP32).run(None, inputs)[0]
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_int8_runs_quantized_attention_in_both_towers(
    siglip_export: Path, manifest: Manifest
) -> None:
    for role in ("image", "text"):
        variant = manifest.graphs[role].variants[Precision.INT8]
        ops = [node.op_type for node in onnx.load(str(siglip_export / variant.file)).graph.node]
        assert (
            ops.count("QAttention")
            == PRESET["vision" if role == "image" else "text"]["num_hidden_layers"]
        ), role


def test_the_served_tokenizer_equals_siglip_tokenizer(
    siglip_export: Path, manifest: Manifest
) -> None:
    """The server's `tokenizers` pipeline against transformers' SentencePiece `SiglipTokenizer`:
    lowercasing, punctuation dropped, whitespace collapsed, NFKC, `</s>` kept last when
    truncated, padding to 64."""
    checkpoint = load_checkpoint(random_init="siglip-tiny")
    assert checkpoint.text is not None
    spec = manifest.graphs["text"].tokenizer
    assert spec is not None
    served = TextTokenizer(siglip_export, spec)
    expected = checkpoint.text.token_ids(HOSTILE_TEXTS)
    for text, ids in zip(HOSTILE_TEXTS, expected, strict=True):
        np.testing.assert_array_equal(served(text), ids, err_msg=repr(text))
    assert expected[-1][-1] == spec.end_token_id  # the long text was truncated, </s> kept
