"""`--model DIR`: a CLIPModel saved with `save_pretrained`, as users keep checkpoints offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from lookalike.export.cli import main
from lookalike.export.manifest import Manifest, Precision
from lookalike.export.tokenizer import clip_bpe_tokenizer
from lookalike.export.verify import token_ids
from tests.pixels import normalized, random_images

VISION = dict(
    hidden_size=24,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)
TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)


@pytest.fixture(scope="module")
def saved_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CLIPModel]:
    torch.manual_seed(7)
    config = CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=12)
    model = CLIPModel(config).eval()
    directory = tmp_path_factory.mktemp("checkpoints") / "clip"
    model.save_pretrained(directory)
    CLIPImageProcessor(
        size={"shortest_edge": 40},
        crop_size={"height": 32, "width": 32},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
    ).save_pretrained(directory)
    clip_bpe_tokenizer().save_pretrained(directory)  # as the hub's CLIP checkpoints carry it
    return directory, model


def test_local_clip_directory_exports_with_its_own_preprocessing(
    saved_clip: tuple[Path, CLIPModel], tmp_path: Path
) -> None:
    directory, model = saved_clip
    output = tmp_path / "out"
    assert main(["--quiet", "--model", str(directory), "--output", str(output)]) == 0
    manifest = Manifest.load(output)

    assert manifest.source.kind == "local"
    assert manifest.source.id == str(directory.resolve())
    assert manifest.source.random_weights is False
    assert manifest.embedding_dim == 12
    prep = manifest.preprocess
    assert (prep.image_size, prep.resize_shortest_edge, prep.crop_height) == (32, 40, 32)
    assert prep.mean == (0.5, 0.5, 0.5)
    assert prep.std == (0.25, 0.25, 0.25)
    assert set(manifest.graphs["image"].variants) == set(Precision)

    batch = random_images(3, 32, seed=5)
    with torch.no_grad():
        floats = torch.from_numpy(normalized(batch, prep))
        expected = model.get_image_features(pixel_values=floats).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    fp32 = manifest.graphs["image"].variants[Precision.FP32]
    sess = ort.InferenceSession(str(output / fp32.file), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"pixel_values": batch})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_local_clip_directory_exports_its_text_tower_with_its_tokenizer(
    saved_clip: tuple[Path, CLIPModel], tmp_path: Path
) -> None:
    directory, model = saved_clip
    output = tmp_path / "out"
    assert main(["--quiet", "--model", str(directory), "--output", str(output)]) == 0
    text = Manifest.load(output).graphs["text"]
    assert text.tokenizer is not None
    assert (text.input, text.input_shape, text.input_dtype) == ("input_ids", ("batch", 77), "int64")
    assert set(text.variants) == set(Precision)

    texts = ["a photo of a cat", "Ünïcödé, 猫 and 🐱", "x", "long " * 100]
    ids = token_ids(clip_bpe_tokenizer(), texts, 77)
    with torch.no_grad():
        expected = model.get_text_features(input_ids=torch.from_numpy(ids)).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    fp32 = text.variants[Precision.FP32]
    sess = ort.InferenceSession(str(output / fp32.file), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids})[0]
    assert float(np.min(np.sum(got * expected, axis=1))) >= 0.99999
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_vision_only_checkpoint_without_processor_uses_default_preprocessing(
    tmp_path: Path,
) -> None:
    """A saved CLIPVisionModelWithProjection (as some hubs publish) with no processor file."""
    torch.manual_seed(11)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION, projection_dim=10)).eval()
    model.save_pretrained(tmp_path / "vision")
    output = tmp_path / "out"
    code = main(["--quiet", "--model", str(tmp_path / "vision"), "-o", str(output), "--no-text"])
    assert code == 0
    manifest = Manifest.load(output)
    assert manifest.embedding_dim == 10
    assert manifest.preprocess.resize_shortest_edge == 32
    assert manifest.preprocess.crop_height == 32

    batch = random_images(2, 32, seed=2)
    with torch.no_grad():
        floats = torch.from_numpy(normalized(batch, manifest.preprocess))
        expected = model(pixel_values=floats).image_embeds.numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    int8 = manifest.graphs["image"].variants[Precision.INT8]
    sess = ort.InferenceSession(str(output / int8.file), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"pixel_values": batch})[0]
    assert float(np.min(np.sum(got * expected, axis=1))) >= 0.99


def test_vision_only_checkpoint_asks_for_no_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION, projection_dim=10)).save_pretrained(
        tmp_path / "vision"
    )
    code = main(["--quiet", "--model", str(tmp_path / "vision"), "-o", str(tmp_path / "out")])
    assert code != 0
    assert "--no-text" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_clip_directory_without_tokenizer_files_is_refused_clearly(
    saved_clip: tuple[Path, CLIPModel], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, model = saved_clip
    bare = tmp_path / "bare"
    model.save_pretrained(bare)  # weights and config only
    code = main(["--quiet", "--model", str(bare), "-o", str(tmp_path / "out")])
    assert code != 0
    error = capsys.readouterr().err
    assert "no tokenizer files: it needs tokenizer.json, or vocab.json and merges.txt" in error
    assert "--no-text" in error
    assert "NoneType" not in error  # no Python internals for a person to decode
