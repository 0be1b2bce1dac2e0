"""`--image-decoder nvimgcodec` over gRPC, run on the CPU (nvImageCodec's CPU backend, the
resize graph on ONNX Runtime's CPU provider): it answers as a server decoding with Pillow in
`--preprocess exact` does: JPEGs to within the resize's rounding, everything the CPU path
keeps (PNG, a corrupt scan) vector for vector and error for error, and an image's vector does
not depend on what else was in its batch."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
from PIL import Image
from skimage import data as photographs

from lookalike.server.embed.preprocess import PreprocessMode
from lookalike.server.embed.settings import ImageDecoder
from lookalike.v1 import lookalike_pb2 as pb
from tests.server.images import encode, jpeg
from tests.server.serving import config_for, connected


def inputs() -> dict[str, bytes]:
    photo = jpeg(640, 480, seed=3)
    scan = photo.rfind(b"\xff\xda")
    return {
        "astronaut": encode(Image.fromarray(photographs.astronaut()), "JPEG", quality=90),
        "coffee": encode(Image.fromarray(photographs.coffee()), "JPEG", quality=90),
        "greyscale": encode(Image.fromarray(photographs.camera()), "JPEG", quality=90),
        "png": encode(Image.fromarray(photographs.chelsea()), "PNG"),
        "corrupt scan": photo[: scan + 2] + b"\x00\x02" + b"\xff" * 64 + b"\xff\xd9",
        "truncated": photo[: len(photo) // 2],
        "no image": b"GIF89a but not really",
    }


def outcomes(
    model: Path, data: Path, decoder: ImageDecoder
) -> tuple[dict[str, object], np.ndarray, dict[str, float]]:
    """Each input embedded alone (its vector, or its status and message), the vectors of the
    decodable ones embedded in one request, and the images counted by decoder."""
    config = config_for(model, data, preprocess_mode=PreprocessMode.EXACT, image_decoder=decoder)
    answers: dict[str, object] = {}
    with connected(config) as (server, channel):
        stub = server.stub(channel)
        for name, image in inputs().items():
            try:
                reply = stub.Embed(pb.EmbedRequest(images=[image]), timeout=60)
                answers[name] = np.array(reply.embeddings[0].values, dtype=np.float32)
            except grpc.RpcError as error:
                answers[name] = (error.code(), error.details())
        good = [image for name, image in inputs().items() if isinstance(answers[name], np.ndarray)]
        together = stub.Embed(pb.EmbedRequest(images=good), timeout=60).embeddings
        registry = server.server.metrics.registry
        counted = {
            name: registry.get_sample_value("lookalike_decoded_images_total", {"decoder": name})
            or 0.0
            for name in ("nvimgcodec", "pillow")
        }
    return answers, np.array([list(e.values) for e in together], dtype=np.float32), counted


def test_a_server_decoding_with_nvimgcodec_answers_as_one_decoding_with_pillow(
    tiny_export: Path, tmp_path: Path
) -> None:
    pillow, pillow_together, _ = outcomes(tiny_export, tmp_path / "pillow", ImageDecoder.PILLOW)
    device, device_together, decoded = outcomes(
        tiny_export, tmp_path / "device", ImageDecoder.NVIMGCODEC
    )
    # the three JPEGs twice by nvImageCodec, the PNG twice by Pillow; the corrupt scan, which
    # nvImageCodec hands back, fails in Pillow as on the other server (counted by neither)
    assert decoded == {"nvimgcodec": 6.0, "pillow": 2.0}
    for name in ("astronaut", "coffee", "greyscale"):
        cosine = float(np.dot(device[name], pillow[name]))  # type: ignore[arg-type]
        assert cosine > 0.999, name
    np.testing.assert_array_equal(device["png"], pillow["png"])  # type: ignore[arg-type]
    for name in ("corrupt scan", "truncated", "no image"):
        assert type(device[name]) is type(pillow[name]), name
        if isinstance(pillow[name], tuple):
            assert pillow[name][0] == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[index]
            assert device[name] == pillow[name], name
        else:
            np.testing.assert_array_equal(device[name], pillow[name])  # type: ignore[arg-type]
    alone = [device[name] for name, answer in pillow.items() if isinstance(answer, np.ndarray)]
    np.testing.assert_array_equal(device_together, np.stack(alone))  # type: ignore[arg-type]
    assert len(device_together) == len(pillow_together)
