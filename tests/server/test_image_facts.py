"""What the server records of each added image (its upright size, its file's bytes), to choose
the copy of a near-duplicate group to keep: on Get, Search and Neighbours over gRPC; and what
the collection takes on disk."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from PIL import Image

from lookalike.server.index.disk import bytes_on_disk
from lookalike.v1 import lookalike_pb2 as pb
from tests.server.images import encode, jpeg, natural
from tests.server.serving import config_for, connected


def rotated_jpeg(width: int, height: int) -> bytes:
    """Stored `width` x `height`, tagged to be seen a quarter turn around (EXIF orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(natural(width, height, seed=5), "JPEG", exif=exif)


def facts(message: pb.ImageFacts) -> tuple[int, int, int]:
    return message.width, message.height, message.bytes


def test_the_server_records_each_images_upright_size_and_bytes(
    tiny_export: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    photo, turned = jpeg(640, 480), rotated_jpeg(300, 200)
    half = encode(natural(640, 480).resize((320, 240)), "JPEG", quality=70)
    with connected(config_for(tiny_export, tmp_path)) as (server, channel):
        stub = server.stub(channel)
        for item_id, image in (("photo", photo), ("turned", turned), ("half", half)):
            stub.Add(pb.AddRequest(id=item_id, image=image), timeout=60)
        dims = len(stub.Embed(pb.EmbedRequest(images=[photo]), timeout=60).embeddings[0].values)
        stub.Add(pb.AddRequest(id="vector", vector=pb.Vector(values=[1.0] * dims)), timeout=30)

        got = {i: stub.Get(pb.GetRequest(id=i), timeout=30) for i in ("photo", "turned", "vector")}
        assert facts(got["photo"].image) == (640, 480, len(photo))
        assert facts(got["turned"].image) == (200, 300, len(turned))  # as seen upright
        assert not got["vector"].HasField("image")

        found = stub.Search(pb.SearchRequest(image=photo, k=4), timeout=60).matches
        by_id = {match.id: match for match in found}
        assert facts(by_id["half"].image) == (320, 240, len(half))
        assert not by_id["vector"].HasField("image")

        pages = stub.Neighbours(pb.NeighboursRequest(min_score=-1, k=3), timeout=60)
        items = {item.id: item for page in pages for item in page.items}
        assert facts(items["photo"].image) == (640, 480, len(photo))
        neighbours = {n.id: n for n in items["photo"].neighbours}
        assert facts(neighbours["turned"].image) == (200, 300, len(turned))
        assert not neighbours["vector"].HasField("image")

        caplog.clear()
        with caplog.at_level(logging.WARNING), pytest.raises(grpc.RpcError) as refused:
            stub.Add(pb.AddRequest(id="broken", image=photo[:1500]), timeout=60)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # refused, so nothing was stored: no word of a thumbnail, no traceback
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_stats_say_what_the_data_directory_takes_on_disk(tiny_export: Path, tmp_path: Path) -> None:
    with connected(config_for(tiny_export, tmp_path / "data")) as (server, channel):
        stub = server.stub(channel)
        empty = stub.Stats(pb.StatsRequest(), timeout=30).disk_bytes
        for number in range(20):
            stub.Add(pb.AddRequest(id=f"photo-{number}", image=jpeg(320, 240, number)), timeout=60)
        stats = stub.Stats(pb.StatsRequest(), timeout=30)
        assert stats.disk_bytes == bytes_on_disk(tmp_path / "data")
    assert 0 < empty < stats.disk_bytes  # the thumbnails and vectors take their room
