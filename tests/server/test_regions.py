"""Regions over real gRPC on 127.0.0.1: several vectors per item, matches per item."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from PIL import Image

from lookalike.export.manifest import Precision
from lookalike.server.embed.onnx_engine import EngineSettings
from lookalike.server.embed.preprocess import PreprocessMode
from lookalike.server.index.settings import IndexSettings
from lookalike.server.regions import GRID, MIN_REGION_PIXELS, grid_regions
from lookalike.server.request_types import RequestLimits
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.server.images import encode, natural
from tests.server.serving import config_for, running_server

Code = grpc.StatusCode
EXACT_BELOW = 8  # tiny: most searches here go through HNSW and have to widen
MAX_REGIONS = 16
SIDE = 320
BOX = pb.Region(x0=0.25, y0=0.5, x1=0.75, y1=1.0, label="lower middle")


@pytest.fixture(scope="module")
def stub(
    tiny_export: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[pb_grpc.ImageSearchStub]:
    config = config_for(
        tiny_export,
        tmp_path_factory.mktemp("data"),
        engine=EngineSettings(precision=Precision.FP32, intra_op_threads=1),
        preprocess_mode=PreprocessMode.EXACT,
        index=IndexSettings(exact_search_below=EXACT_BELOW),
        request_limits=RequestLimits(max_regions_per_item=MAX_REGIONS),
    )
    with running_server(config) as server, grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ImageSearchStub(channel)


def photo(seed: int, side: int = SIDE) -> Image.Image:
    return natural(side, side, seed)


def png(image: Image.Image) -> bytes:
    return encode(image, "PNG")


def crop(image: Image.Image, region: pb.Region) -> Image.Image:
    width, height = image.size
    box = (region.x0 * width, region.y0 * height, region.x1 * width, region.y1 * height)
    return image.crop(tuple(round(v) for v in box))  # type: ignore[arg-type]


def embed(stub: pb_grpc.ImageSearchStub, image: Image.Image) -> list[float]:
    return list(stub.Embed(pb.EmbedRequest(images=[png(image)]), timeout=30).embeddings[0].values)


def add(stub: pb_grpc.ImageSearchStub, item_id: str, image: Image.Image, **fields) -> None:
    stub.Add(pb.AddRequest(id=item_id, image=png(image), **fields), timeout=60)


def vectors(stub: pb_grpc.ImageSearchStub) -> int:
    return stub.Stats(pb.StatsRequest(), timeout=30).vectors


def error_of(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value


def boxes(regions) -> list[tuple[float, ...]]:
    return [tuple(round(v, 4) for v in (r.x0, r.y0, r.x1, r.y1)) for r in regions]


def test_a_given_region_is_stored_returned_and_matched_as_its_own_vector(
    stub: pb_grpc.ImageSearchStub,
) -> None:
    image, before = photo(1), vectors(stub)
    add(stub, "given", image, regions=[BOX], metadata={"kind": "given"})
    assert vectors(stub) == before + 2
    stored = stub.Get(pb.GetRequest(id="given"), timeout=30)
    assert boxes(stored.regions) == boxes([BOX])
    assert stored.regions[0].label == "lower middle"

    # the region's vector is the cropped picture's embedding: searching with it finds the
    # item through that region, at a score of 1
    part = embed(stub, crop(image, BOX))
    found = stub.Search(pb.SearchRequest(vector=pb.Vector(values=part), k=1), timeout=30)
    (match,) = found.matches
    assert match.id == "given"
    assert not match.whole_image
    assert boxes([match.region]) == boxes([BOX])
    assert match.region.label == "lower middle"
    assert match.score == pytest.approx(1.0, abs=1e-5)

    whole = stub.Search(pb.SearchRequest(vector=pb.Vector(values=embed(stub, image)), k=1))
    assert whole.matches[0].id == "given"
    assert whole.matches[0].whole_image
    assert not whole.matches[0].HasField("region")


def test_a_query_box_searches_with_that_part_of_the_query_image(
    stub: pb_grpc.ImageSearchStub,
) -> None:
    image = photo(2)
    add(stub, "boxed", image, regions=[BOX])
    query = pb.SearchRequest(image=png(image), box=pb.Region(x0=0.25, y0=0.5, x1=0.75, y1=1), k=1)
    (match,) = stub.Search(query, timeout=30).matches
    assert match.id == "boxed"
    assert not match.whole_image
    assert match.score == pytest.approx(1.0, abs=1e-5)
    by_crop = stub.Search(pb.SearchRequest(image=png(crop(image, BOX)), k=1), timeout=30)
    assert by_crop.matches[0].score == pytest.approx(match.score, abs=1e-6)


def test_the_grid_policy_makes_its_regions_and_drops_those_too_small(
    stub: pb_grpc.ImageSearchStub,
) -> None:
    grid = pb.REGION_POLICY_GRID
    add(stub, "gridded", photo(3), region_policy=grid, regions=[BOX])
    stored = stub.Get(pb.GetRequest(id="gridded"), timeout=30)
    assert boxes(stored.regions) == boxes([BOX, *grid_regions(GRID)])  # given first, then made

    # half of a 24-pixel side is under the minimum: only the whole image is kept
    tiny = 2 * MIN_REGION_PIXELS - 8
    before = vectors(stub)
    add(stub, "too-small-for-a-grid", photo(4, side=tiny), region_policy=grid)
    assert not stub.Get(pb.GetRequest(id="too-small-for-a-grid"), timeout=30).regions
    assert vectors(stub) == before + 1


def test_matches_are_distinct_items_with_their_best_vector(
    stub: pb_grpc.ImageSearchStub,
) -> None:
    for n in range(6):
        add(
            stub,
            f"many-{n}",
            photo(10 + n),
            region_policy=pb.REGION_POLICY_GRID,
            metadata={"set": "many", "parity": str(n % 2)},
        )
    query = embed(stub, photo(10))
    for k in (1, 3, 6):
        request = pb.SearchRequest(vector=pb.Vector(values=query), k=k, filter={"set": "many"})
        matches = stub.Search(request, timeout=30).matches
        ids = [m.id for m in matches]
        assert len(ids) == k
        assert len(set(ids)) == k
        scores = [m.score for m in matches]
        assert scores == sorted(scores, reverse=True)
    odd = stub.Search(
        pb.SearchRequest(
            vector=pb.Vector(values=query), k=3, filter={"set": "many", "parity": "1"}
        ),
        timeout=30,
    ).matches
    assert sorted(m.id for m in odd) == ["many-1", "many-3", "many-5"]

    # an item's score is its best vector's: the whole-image query of many-0 scores 1 on it
    plain = stub.Search(pb.SearchRequest(vector=pb.Vector(values=query), k=50), timeout=30)
    ids = [m.id for m in plain.matches]
    assert len(ids) == len(set(ids))
    assert ids[0] == "many-0"
    assert plain.matches[0].whole_image
    assert plain.matches[0].score == pytest.approx(1, abs=1e-5)
    floor = plain.matches[3].score
    above = stub.Search(
        pb.SearchRequest(vector=pb.Vector(values=query), k=50, min_score=floor), timeout=30
    )
    assert [m.id for m in above.matches] == ids[:4]

    others = stub.Search(pb.SearchRequest(id="many-0", k=5, exclude_self=True), timeout=30)
    assert "many-0" not in [m.id for m in others.matches]
    assert len(others.matches) == 5


def test_replacing_and_deleting_remove_every_vector_of_an_item(
    stub: pb_grpc.ImageSearchStub,
) -> None:
    before = vectors(stub)
    add(stub, "replaced", photo(30), region_policy=pb.REGION_POLICY_GRID)
    assert vectors(stub) == before + 1 + len(grid_regions(GRID))
    add(stub, "replaced", photo(31), regions=[BOX])
    assert vectors(stub) == before + 2
    assert boxes(stub.Get(pb.GetRequest(id="replaced"), timeout=30).regions) == boxes([BOX])
    stub.Delete(pb.DeleteRequest(ids=["replaced"]), timeout=30)
    assert vectors(stub) == before
    region_query = embed(stub, crop(photo(31), BOX))
    found = stub.Search(pb.SearchRequest(vector=pb.Vector(values=region_query), k=50))
    assert "replaced" not in [m.id for m in found.matches]


@pytest.mark.parametrize(
    ("regions", "message"),
    [
        ([pb.Region(x0=0.5, y0=0, x1=1.5, y1=1)], "outside the image"),
        ([pb.Region(x0=0.5, y0=0.2, x1=0.5, y1=1)], "is empty"),
        ([pb.Region(x0=0, y0=0, x1=0.04, y1=0.04)], "the minimum is 16x16"),
        ([pb.Region(x0=0, y0=0, x1=1, y1=1, label="x" * 300)], "label is over 256 bytes"),
        ([BOX] * (MAX_REGIONS + 1), f"the limit is {MAX_REGIONS}"),
    ],
)
def test_bad_regions_are_refused_with_what_to_fix(
    stub: pb_grpc.ImageSearchStub, regions: list[pb.Region], message: str
) -> None:
    before = vectors(stub)
    request = pb.AddRequest(id="bad", image=png(photo(5)), regions=regions)
    error = error_of(stub.Add, request)
    assert error.code() == Code.INVALID_ARGUMENT
    assert message in error.details()
    assert vectors(stub) == before
    assert error_of(stub.Get, pb.GetRequest(id="bad")).code() == Code.NOT_FOUND


def test_misplaced_regions_and_boxes_are_refused(stub: pb_grpc.ImageSearchStub) -> None:
    dims = stub.Stats(pb.StatsRequest(), timeout=30).dims
    vector = pb.Vector(values=[1.0] * dims)
    error = error_of(stub.Add, pb.AddRequest(id="v", vector=vector, regions=[BOX]))
    assert error.code() == Code.INVALID_ARGUMENT
    assert "no image to cut them from" in error.details()
    error = error_of(stub.Search, pb.SearchRequest(vector=vector, box=BOX, k=1))
    assert error.code() == Code.INVALID_ARGUMENT
    assert "a box goes with a query by image" in (error.details())
    small = pb.Region(x0=0, y0=0, x1=0.01, y1=0.01)
    error = error_of(stub.Search, pb.SearchRequest(image=png(photo(6)), box=small, k=1))
    assert error.code() == Code.INVALID_ARGUMENT
    assert "the box" in error.details()
    error = error_of(stub.Add, pb.AddRequest(id="p", image=png(photo(6)), region_policy=9))
    assert error.code() == Code.INVALID_ARGUMENT
    assert "region_policy" in error.details()
    # a vector item under a server-made policy simply has no regions
    stub.Add(pb.AddRequest(id="v", vector=vector, region_policy=pb.REGION_POLICY_GRID))
    assert not stub.Get(pb.GetRequest(id="v"), timeout=30).regions


def test_a_stream_stores_each_item_with_its_regions_and_fails_bad_ones_alone(
    stub: pb_grpc.ImageSearchStub,
) -> None:
    requests = [
        pb.AddRequest(id=f"stream-{n}", image=png(photo(40 + n)), regions=[BOX]) for n in range(5)
    ]
    requests[2] = pb.AddRequest(id="stream-2", image=png(photo(42)), regions=[pb.Region()])
    before = vectors(stub)
    results = [r for group in stub.AddStream(iter(requests), timeout=60) for r in group.results]
    assert [r.code for r in results] == [0, 0, Code.INVALID_ARGUMENT.value[0], 0, 0]
    assert vectors(stub) == before + 8
    stored = stub.Get(pb.GetRequest(id="stream-4"), timeout=30)
    assert boxes(stored.regions) == boxes([BOX])
    assert stub.Search(pb.SearchRequest(id="stream-4", k=1), timeout=30).matches[0].id == "stream-4"


def test_a_data_dir_made_before_regions_is_served_after_a_restart(
    tiny_export: Path, tmp_path: Path
) -> None:
    """A data directory as the releases before regions left it (schema 2: no region column),
    opened by a restarted server: its items answer as before and new items take regions."""
    config = config_for(tiny_export, tmp_path / "data", preprocess_mode=PreprocessMode.EXACT)
    images = {f"old-{n}": photo(40 + n) for n in range(3)}
    with running_server(config) as server, grpc.insecure_channel(server.address) as channel:
        old = pb_grpc.ImageSearchStub(channel)
        for item_id, image in images.items():
            add(old, item_id, image, metadata={"era": "before"})
        expected = old.Search(pb.SearchRequest(id="old-0", k=3), timeout=30)
    database = sqlite3.connect(tmp_path / "data" / "items.sqlite3", isolation_level=None)
    database.execute("ALTER TABLE vectors DROP COLUMN region")  # what schema 3 added
    database.execute("DROP TABLE thumbnails")  # what schema 4 added
    for column in ("width", "height", "bytes"):  # what schema 5 added
        database.execute(f"ALTER TABLE items DROP COLUMN {column}")
    database.execute("PRAGMA user_version = 2")
    database.close()

    with running_server(config) as server, grpc.insecure_channel(server.address) as channel:
        restarted = pb_grpc.ImageSearchStub(channel)
        found = restarted.Search(pb.SearchRequest(id="old-0", k=3), timeout=30)
        assert [(m.id, m.score, m.whole_image) for m in found.matches] == [
            (m.id, m.score, True) for m in expected.matches
        ]
        stored = restarted.Get(pb.GetRequest(id="old-1"), timeout=30)
        assert (dict(stored.metadata), list(stored.regions)) == ({"era": "before"}, [])
        add(restarted, "new", photo(50), regions=[BOX])
        stats = restarted.Stats(pb.StatsRequest(), timeout=30)
        assert (stats.items, stats.vectors) == (4, 5)
        part = embed(restarted, crop(photo(50), BOX))
        (match,) = restarted.Search(
            pb.SearchRequest(vector=pb.Vector(values=part), k=1), timeout=30
        ).matches
        assert (match.id, match.whole_image, boxes([match.region])) == ("new", False, boxes([BOX]))
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "items.sqlite3")) as database:
        columns = {
            name for (name,) in database.execute("SELECT name FROM pragma_table_info('vectors')")
        }
    assert "region" in columns
