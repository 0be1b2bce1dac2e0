"""Search by text over real gRPC: the text tower beside the image tower, and its misuse."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from lookalike.export.manifest import MANIFEST_FILE, Manifest, Precision
from lookalike.export.source import load_checkpoint
from lookalike.server.embed.onnx_engine import EngineSettings, OnnxEngine
from lookalike.server.embed.preprocess import Preprocessor
from lookalike.server.request_types import RequestLimits
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.packages import as_format_1
from tests.server.images import jpeg
from tests.server.serving import config_for, running_server

Code = grpc.StatusCode
TEXTS = ["a photo of a cat", "A RED CAR in the rain, 1987!", "猫と犬 🐱", "x", "word " * 120]


@pytest.fixture(scope="module")
def stub(
    tiny_export: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[pb_grpc.ImageSearchStub]:
    config = config_for(
        tiny_export,
        tmp_path_factory.mktemp("data"),
        engine=EngineSettings(precision=Precision.FP32, intra_op_threads=1),
        request_limits=RequestLimits(max_images_per_request=8, max_text_bytes=1024),
    )
    with running_server(config) as server, grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ImageSearchStub(channel)


def vectors(response: pb.EmbedResponse) -> np.ndarray:
    return np.array([list(v.values) for v in response.embeddings], dtype=np.float32)


def test_embedded_texts_equal_pytorch_text_features(stub: pb_grpc.ImageSearchStub) -> None:
    got = vectors(stub.Embed(pb.EmbedRequest(texts=TEXTS), timeout=30))
    text = load_checkpoint(random_init="tiny").text  # the same seed, the same weights
    assert text is not None
    ids = text.token_ids(TEXTS)
    with torch.no_grad():  # the Hugging Face model itself, not the exported wrapper
        expected = text.tower.module.tower(input_ids=torch.from_numpy(ids)).text_embeds.numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    cosines = np.sum(got * expected, axis=1)
    assert float(cosines.min()) >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_a_text_embeds_the_same_alone_and_among_others(stub: pb_grpc.ImageSearchStub) -> None:
    together = vectors(stub.Embed(pb.EmbedRequest(texts=TEXTS), timeout=30))
    for i, text in enumerate(TEXTS):
        alone = vectors(stub.Embed(pb.EmbedRequest(texts=[text]), timeout=30))[0]
        assert np.abs(alone - together[i]).max() <= 1e-6


def test_search_by_text_finds_the_item_holding_that_texts_vector(
    stub: pb_grpc.ImageSearchStub,
) -> None:
    embedded = vectors(stub.Embed(pb.EmbedRequest(texts=TEXTS), timeout=30))
    for i, vector in enumerate(embedded):
        stub.Add(pb.AddRequest(id=f"caption-{i}", vector=pb.Vector(values=vector)), timeout=30)
    stub.Add(pb.AddRequest(id="photo", image=jpeg(96, 64, seed=4)), timeout=30)
    for i, text in enumerate(TEXTS):
        response = stub.Search(pb.SearchRequest(text=text, k=3), timeout=30)
        assert response.matches[0].id == f"caption-{i}"
        assert response.matches[0].score == pytest.approx(1.0, abs=1e-5)


def test_stats_report_the_text_tower(stub: pb_grpc.ImageSearchStub) -> None:
    stats = stub.Stats(pb.StatsRequest(), timeout=30)
    assert stats.text_enabled
    assert stats.text_precision == "fp32"
    assert stats.text_queue_depth == 0


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (pb.EmbedRequest(texts=[""]), Code.INVALID_ARGUMENT, "the text is empty"),
        (pb.EmbedRequest(texts=["ok", " \n\t "]), Code.INVALID_ARGUMENT, "text 1 is empty"),
        (pb.EmbedRequest(texts=["é" * 600]), Code.RESOURCE_EXHAUSTED, "the limit is 1,024"),
        (pb.EmbedRequest(texts=["t"] * 9), Code.RESOURCE_EXHAUSTED, "9 texts"),
        (
            pb.EmbedRequest(texts=["a cat"], images=[b"x"]),
            Code.INVALID_ARGUMENT,
            "images or texts",
        ),
        (pb.SearchRequest(text="   ", k=3), Code.INVALID_ARGUMENT, "empty or only whitespace"),
        (pb.SearchRequest(text="a" * 1025, k=3), Code.RESOURCE_EXHAUSTED, "1,025 bytes"),
        (pb.SearchRequest(text="a cat", k=0), Code.INVALID_ARGUMENT, "k must be"),
    ],
)
def test_bad_text_requests_get_their_status(
    stub: pb_grpc.ImageSearchStub, request_: object, code: grpc.StatusCode, message: str
) -> None:
    method = stub.Embed if isinstance(request_, pb.EmbedRequest) else stub.Search
    with pytest.raises(grpc.RpcError) as info:
        method(request_, timeout=30)
    assert info.value.code() == code
    assert message in info.value.details()


def test_text_queries_are_answered_under_image_load(stub: pb_grpc.ImageSearchStub) -> None:
    """Texts have their own queue: mixed traffic, every answer the same as alone."""
    alone = vectors(stub.Embed(pb.EmbedRequest(texts=TEXTS), timeout=30))
    images = [jpeg(200 + 10 * i, 150, seed=i) for i in range(6)]

    def image_traffic(i: int) -> int:
        return len(stub.Embed(pb.EmbedRequest(images=[images[i % 6]]), timeout=60).embeddings)

    def text_traffic(i: int) -> np.ndarray:
        return vectors(stub.Embed(pb.EmbedRequest(texts=[TEXTS[i % 5]]), timeout=60))[0]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        image_calls = [pool.submit(image_traffic, i) for i in range(24)]
        text_calls = [pool.submit(text_traffic, i) for i in range(20)]
        assert [call.result() for call in image_calls] == [1] * 24
        for i, call in enumerate(text_calls):
            assert np.abs(call.result() - alone[i % 5]).max() <= 1e-6


def test_without_the_text_tower_text_requests_fail_precondition(
    tiny_export: Path, tmp_path: Path
) -> None:
    config = config_for(tiny_export, tmp_path / "data", text=False)
    with running_server(config) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ImageSearchStub(channel)
        for call, request in (
            (stub.Embed, pb.EmbedRequest(texts=["a cat"])),
            (stub.Search, pb.SearchRequest(text="a cat", k=3)),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=30)
            assert info.value.code() == Code.FAILED_PRECONDITION
            assert "--no-text" in info.value.details()
        stats = stub.Stats(pb.StatsRequest(), timeout=30)
        assert not stats.text_enabled
        assert stats.text_precision == ""
        assert len(stub.Embed(pb.EmbedRequest(images=[jpeg(64, 64)]), timeout=30).embeddings) == 1


def format_1_package(package: Path, into: Path) -> Path:
    """The image-only package an earlier Lookalike wrote (manifest format 1)."""
    copy = into / "format-1"
    shutil.copytree(package, copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    for variant in manifest["graphs"]["text"]["variants"].values():
        (copy / variant["file"]).unlink()
    for name in manifest["graphs"]["text"]["tokenizer"]["files"]:
        (copy / name).unlink()
    (copy / MANIFEST_FILE).write_text(json.dumps(as_format_1(manifest)))
    return copy


def test_an_image_only_package_of_the_previous_format_serves_images(
    tiny_export: Path, tiny_float_export: Path, tmp_path: Path
) -> None:
    """Format 1: no text tower, and float32 pixels normalised by the server. An image gets the
    vector the current package's uint8 graph gives it."""
    package = format_1_package(tiny_float_export, tmp_path)
    fp32 = EngineSettings(precision=Precision.FP32)
    image = jpeg(96, 64)
    current = OnnxEngine(tiny_export, fp32)
    expected = current.embed(Preprocessor.for_package(Manifest.load(tiny_export))(image)[None])
    with (
        running_server(config_for(package, tmp_path / "data", engine=fp32)) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = pb_grpc.ImageSearchStub(channel)
        (served,) = stub.Embed(pb.EmbedRequest(images=[image]), timeout=30).embeddings
        assert float(np.dot(served.values, expected[0])) >= 0.99999
        with pytest.raises(grpc.RpcError) as info:
            stub.Search(pb.SearchRequest(text="a cat", k=3), timeout=30)
        assert info.value.code() == Code.FAILED_PRECONDITION
        details = info.value.details()
        assert "has no text tower" in details
        assert f"lookalike-export --random-init tiny --output {package} --overwrite" in details
