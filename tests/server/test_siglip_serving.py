"""SigLIP and SigLIP 2 packages served by the unchanged server over real gRPC: their
embeddings equal PyTorch's (the family's own processor and tokenizer feeding `SiglipModel`),
and text finds images."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as photographs

from lookalike.export.checkpoint import Checkpoint
from lookalike.export.manifest import MANIFEST_FILE, Precision, sha256_file
from lookalike.export.source import load_checkpoint
from lookalike.server.embed.onnx_engine import EngineSettings
from lookalike.server.errors import DataDirError
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.server.images import encode
from tests.server.serving import config_for, running_server

PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket")
TEXTS = ["a photo of a cat", "A RED CAR in the rain, 1987!", "猫と犬 🐱", "ΟΔΟΣ", "word " * 80]


@pytest.fixture(scope="module", params=["siglip-tiny", "siglip2-tiny"])
def preset(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def package(preset: str, request: pytest.FixtureRequest) -> Path:
    exported: Path = request.getfixturevalue(preset.removesuffix("-tiny") + "_export")
    return exported


@pytest.fixture(scope="module")
def checkpoint(preset: str) -> Checkpoint:
    return load_checkpoint(random_init=preset)  # the same seed, the same weights


@pytest.fixture(scope="module")
def stub(
    package: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[pb_grpc.ImageSearchStub]:
    config = config_for(
        package,
        tmp_path_factory.mktemp("data"),
        engine=EngineSettings(precision=Precision.FP32, intra_op_threads=1),
    )
    with running_server(config) as server, grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ImageSearchStub(channel)


def vectors(response: pb.EmbedResponse) -> np.ndarray:
    return np.array([list(v.values) for v in response.embeddings], dtype=np.float32)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_served_images_equal_pytorch_on_photographs(
    stub: pb_grpc.ImageSearchStub, checkpoint: Checkpoint
) -> None:
    """Fast preprocessing (draft decode, one squash resize: bicubic for SigLIP, bilinear for
    SigLIP 2) against SiglipImageProcessor and SiglipModel's vision tower: the same embedding
    to cosine 0.999."""
    photos = [Image.fromarray(getattr(photographs, name)()).convert("RGB") for name in PHOTOGRAPHS]
    payloads = [encode(photo, "JPEG", quality=95) for photo in photos]
    got = vectors(stub.Embed(pb.EmbedRequest(images=payloads), timeout=60))
    decoded = [Image.open(io.BytesIO(data)).convert("RGB") for data in payloads]
    pixels = checkpoint.image.reference_pixels(decoded)
    with torch.no_grad():
        vision = checkpoint.image.tower.module.tower
        expected = unit(vision(pixel_values=torch.from_numpy(pixels)).pooler_output.numpy())
    cosines = np.sum(got * expected, axis=1)
    assert float(cosines.min()) >= 0.999, cosines


def test_served_texts_equal_pytorch(stub: pb_grpc.ImageSearchStub, checkpoint: Checkpoint) -> None:
    got = vectors(stub.Embed(pb.EmbedRequest(texts=TEXTS), timeout=60))
    assert checkpoint.text is not None
    ids = checkpoint.text.token_ids(TEXTS)
    with torch.no_grad():
        text = checkpoint.text.tower.module.tower
        expected = unit(text(input_ids=torch.from_numpy(ids)).pooler_output.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_stats_name_the_model_and_its_score_scale(
    stub: pb_grpc.ImageSearchStub, package: Path, preset: str, checkpoint: Checkpoint
) -> None:
    stats = stub.Stats(pb.StatsRequest(), timeout=30)
    assert (stats.model_id, stats.model_family, stats.dims) == (preset, "siglip", 32)
    assert stats.manifest_sha256 == sha256_file(package / MANIFEST_FILE)
    assert stats.HasField("score_scale")
    assert checkpoint.scores is not None
    assert stats.score_scale.kind == "sigmoid"
    assert stats.score_scale.scale == pytest.approx(checkpoint.scores.scale)
    assert stats.score_scale.bias == pytest.approx(checkpoint.scores.bias)


@pytest.mark.parametrize(
    ("first", "second", "names"),
    [
        # another family
        (
            "tiny",
            "siglip",
            ("random-init:tiny (clip, 16-d)", "random-init:siglip-tiny (siglip, 32-d)"),
        ),
        # the same family and dimension: the model's identity still tells them apart
        (
            "siglip",
            "siglip2",
            ("random-init:siglip-tiny (siglip, 32-d)", "random-init:siglip2-tiny (siglip, 32-d)"),
        ),
    ],
)
def test_a_data_dir_of_another_model_is_refused_naming_both(
    first: str, second: str, names: tuple[str, str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    made_by, opened_by = (request.getfixturevalue(f"{name}_export") for name in (first, second))
    with running_server(config_for(made_by, tmp_path)):
        pass  # the first model's server made this data directory
    with (
        running_server(config_for(opened_by, tmp_path), load=False) as server,
        pytest.raises(DataDirError, match="cannot be mixed") as refused,
    ):
        server.call(server.server.load())
    for name in names:
        assert name in str(refused.value)


def test_search_by_text_ranks_by_the_text_embedding(stub: pb_grpc.ImageSearchStub) -> None:
    photos = {
        name: encode(Image.fromarray(getattr(photographs, name)()).convert("RGB"), "JPEG")
        for name in PHOTOGRAPHS
    }
    for name, data in photos.items():
        stub.Add(pb.AddRequest(id=name, image=data), timeout=60)
    (query,) = vectors(stub.Embed(pb.EmbedRequest(texts=[TEXTS[0]]), timeout=60))
    stored = {
        name: np.array(stub.Get(pb.GetRequest(id=name, include_vector=True)).vector.values)
        for name in photos
    }
    expected = sorted(stored, key=lambda name: -float(stored[name] @ query))
    found = stub.Search(pb.SearchRequest(text=TEXTS[0], k=len(photos)), timeout=60)
    assert [match.id for match in found.matches] == expected
