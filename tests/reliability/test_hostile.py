"""A corpus of hostile requests: each gets its exact status code, and the server answers the
next good request."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.reliability.report import ReliabilityReport
from tests.server.images import encode, jpeg, natural
from tests.server.serving import config_for, running_server

TOKEN = "hostile-corpus-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
MAX_MESSAGE_BYTES = 4 * 2**20
OK, INVALID, NOT_FOUND = (
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
)
EXHAUSTED, UNAUTHENTICATED = grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED
DIMS = 16

Call = Callable[[pb_grpc.ImageSearchStub], object]


def animated_gif(frames: int) -> bytes:
    images = [Image.new("P", (32, 32), i % 256) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=10)
    return buffer.getvalue()


def multipage_tiff(pages: int) -> bytes:
    images = [natural(40, 30, seed=i) for i in range(pages)]
    buffer = io.BytesIO()
    images[0].save(buffer, "TIFF", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def corrupt_exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 0xFFFF  # an orientation that does not exist
    data = bytearray(encode(natural(80, 60), "JPEG", exif=exif))
    marker = data.find(b"Exif\x00\x00")
    data[marker + 6 : marker + 14] = b"MM\x00*\x7f\xff\xff\xff"  # IFD offset past the end
    return bytes(data)


def sixteen_bit_png() -> bytes:
    return encode(Image.fromarray(np.full((40, 60), 40000, dtype=np.uint16)), "PNG")


def embed(image: bytes) -> Call:
    return lambda stub: stub.Embed(pb.EmbedRequest(images=[image]), metadata=AUTH, timeout=60)


def add_vector(values: list[float], item_id: str = "v") -> Call:
    request = pb.AddRequest(id=item_id, vector=pb.Vector(values=values))
    return lambda stub: stub.Add(request, metadata=AUTH, timeout=30)


def add_id(item_id: str) -> Call:
    return add_vector([1.0] * DIMS, item_id)


def search(**fields: object) -> Call:
    request = pb.SearchRequest(**fields)
    return lambda stub: stub.Search(request, metadata=AUTH, timeout=30)


def stream(requests: list[pb.AddRequest]) -> Call:
    return lambda stub: list(stub.AddStream(iter(requests), metadata=AUTH, timeout=60))


CORPUS: dict[str, tuple[Call, grpc.StatusCode]] = {
    "empty-bytes": (embed(b""), INVALID),
    "random-bytes": (embed(np.random.default_rng(1).bytes(10_000)), INVALID),
    "text-file": (embed(b"just some text\n" * 50), INVALID),
    "html": (embed(b"<html><body><img src='http://example.invalid/x.jpg'></body></html>"), INVALID),
    "svg": (embed(b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'), INVALID),
    "truncated-jpeg": (embed(jpeg(400, 300)[:1500]), INVALID),
    "truncated-png": (embed(encode(natural(200, 150), "PNG")[:900]), INVALID),
    "decompression-bomb": (embed(encode(Image.new("1", (30000, 30000)), "PNG")), EXHAUSTED),
    "one-by-one": (embed(encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG")), OK),
    "100000-by-1": (embed(encode(Image.new("RGB", (100000, 1)), "PNG")), INVALID),
    "cmyk-jpeg": (embed(encode(natural(90, 70).convert("CMYK"), "JPEG")), OK),
    "16-bit-png": (embed(sixteen_bit_png()), OK),
    "palette-transparent": (embed(encode(natural(50, 40).convert("P"), "PNG", transparency=3)), OK),
    "gif-3000-frames": (embed(animated_gif(3000)), OK),
    "tiff-many-pages": (embed(multipage_tiff(40)), OK),
    "corrupt-exif": (embed(corrupt_exif_jpeg()), OK),
    "vector-wrong-dimension": (add_vector([1.0] * (DIMS + 1)), INVALID),
    "vector-nan": (add_vector([float("nan")] * DIMS), INVALID),
    "vector-inf": (add_vector([float("inf")] + [0.0] * (DIMS - 1)), INVALID),
    "vector-all-zero": (add_vector([0.0] * DIMS), INVALID),
    "k-zero": (search(vector=pb.Vector(values=[1.0] * DIMS), k=0), INVALID),
    "k-negative": (search(vector=pb.Vector(values=[1.0] * DIMS), k=-5), INVALID),
    "k-huge": (search(vector=pb.Vector(values=[1.0] * DIMS), k=2**31 - 1), INVALID),
    "id-empty": (add_id(""), INVALID),
    "id-10kb": (add_id("x" * 10_240), INVALID),
    "id-with-nul": (add_id("a\x00b"), INVALID),
    "id-unicode": (add_id("фото/猫-🐈.jpg"), OK),
    "metadata-10000-keys": (
        lambda stub: stub.Add(
            pb.AddRequest(
                id="m",
                vector=pb.Vector(values=[1.0] * DIMS),
                metadata={f"k{i}": "v" for i in range(10_000)},
            ),
            metadata=AUTH,
            timeout=30,
        ),
        INVALID,
    ),
    "metadata-huge-value": (
        lambda stub: stub.Add(
            pb.AddRequest(
                id="m", vector=pb.Vector(values=[1.0] * DIMS), metadata={"k": "v" * 1_000_000}
            ),
            metadata=AUTH,
            timeout=30,
        ),
        INVALID,
    ),
    "filter-unknown-key": (search(id="фото/猫-🐈.jpg", k=3, filter={"nope": "x"}), OK),
    "search-unknown-id": (search(id="never-stored", k=3), NOT_FOUND),
    "message-over-limit": (embed(b"\0" * (MAX_MESSAGE_BYTES + 10)), EXHAUSTED),
    "10000-images-in-one-request": (
        lambda stub: stub.Embed(pb.EmbedRequest(images=[b"x"] * 10_000), metadata=AUTH, timeout=30),
        EXHAUSTED,
    ),
    "duplicate-ids-in-one-stream": (
        stream(
            [
                pb.AddRequest(id="dup", vector=pb.Vector(values=[float(i + 1)] * DIMS))
                for i in range(3)
            ]
        ),
        OK,
    ),
    "wrong-token": (
        lambda stub: stub.Stats(pb.StatsRequest(), metadata=(("authorization", "Bearer no"),)),
        UNAUTHENTICATED,
    ),
    "no-token": (lambda stub: stub.Stats(pb.StatsRequest(), timeout=10), UNAUTHENTICATED),
}


@pytest.fixture(scope="module")
def stub(
    tiny_export: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[pb_grpc.ImageSearchStub]:
    config = config_for(
        tiny_export,
        tmp_path_factory.mktemp("data"),
        token=TOKEN,
        max_message_bytes=MAX_MESSAGE_BYTES,
    )
    with running_server(config) as server, grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ImageSearchStub(channel)


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("name", list(CORPUS))
def test_hostile_request_gets_its_status_and_the_server_lives_on(
    stub, name: str, report: ReliabilityReport
) -> None:
    call, expected = CORPUS[name]
    try:
        call(stub)
        code = OK
    except grpc.RpcError as error:
        code = error.code()
    report.record(code.name)
    assert code == expected, name
    good = stub.Embed(pb.EmbedRequest(images=[jpeg(64, 48)]), metadata=AUTH, timeout=30)
    assert len(good.embeddings[0].values) == DIMS
