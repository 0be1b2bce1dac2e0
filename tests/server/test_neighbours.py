"""Neighbours (near-duplicate candidates) over real gRPC on 127.0.0.1: pairs above a threshold,
page by page, whole images only, and what the CLI groups from them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from lookalike.cli import main
from lookalike.export.manifest import Precision
from lookalike.server.core import NEIGHBOUR_PAGE
from lookalike.server.embed.onnx_engine import EngineSettings
from lookalike.server.embed.preprocess import PreprocessMode
from lookalike.server.index.settings import IndexSettings
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.server.images import encode, natural
from tests.server.serving import config_for, running_server

RANDOM_ITEMS = NEIGHBOUR_PAGE + 44  # more than a page, so the scan pages
THRESHOLD = 0.995


@pytest.fixture(scope="module")
def server(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = config_for(
        tiny_export,
        tmp_path_factory.mktemp("data"),
        engine=EngineSettings(precision=Precision.FP32, intra_op_threads=1),
        preprocess_mode=PreprocessMode.EXACT,
        index=IndexSettings(exact_search_below=64),  # the scan runs on the HNSW graph
    )
    with running_server(config) as running:
        yield running.address


@pytest.fixture(scope="module")
def stub(server: str) -> Iterator[pb_grpc.ImageSearchStub]:
    with grpc.insecure_channel(server) as channel:
        yield pb_grpc.ImageSearchStub(channel)


@pytest.fixture(scope="module")
def copies(stub: pb_grpc.ImageSearchStub) -> dict[str, set[str]]:
    """Random vectors, three of them with near copies; returns each copied id's copies."""
    dims = stub.Stats(pb.StatsRequest(), timeout=30).dims
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(RANDOM_ITEMS, dims))
    requests = [
        pb.AddRequest(id=f"v{n}", vector=pb.Vector(values=v), metadata={"set": str(n % 2)})
        for n, v in enumerate(vectors)
    ]
    expected: dict[str, set[str]] = {}
    for original, count in ((3, 1), (10, 2), (200, 1)):
        names = [f"v{original}"] + [f"v{original}-copy{c}" for c in range(count)]
        for copy in names[1:]:
            near = vectors[original] + rng.normal(size=dims) * 0.01 * np.linalg.norm(vectors[0])
            requests.append(
                pb.AddRequest(
                    id=copy, vector=pb.Vector(values=near), metadata={"set": str(original % 2)}
                )
            )
        for name in names:
            expected[name] = set(names) - {name}
    results = [r for g in stub.AddStream(iter(requests), timeout=120) for r in g.results]
    assert all(r.code == 0 for r in results)
    return expected


def scan(stub: pb_grpc.ImageSearchStub, **fields) -> tuple[dict[str, set[str]], list]:
    pages = list(stub.Neighbours(pb.NeighboursRequest(**fields), timeout=60))
    found = {i.id: {n.id for n in i.neighbours} for page in pages for i in page.items}
    return found, pages


def test_every_pair_above_the_threshold_is_found_page_by_page(
    stub: pb_grpc.ImageSearchStub, copies: dict[str, set[str]]
) -> None:
    found, pages = scan(stub, min_score=THRESHOLD)
    assert found == copies
    total = stub.Stats(pb.StatsRequest(), timeout=30).items
    assert len(pages) == -(-total // NEIGHBOUR_PAGE)
    assert [p.scanned for p in pages][-1] == total
    assert all(p.total == total for p in pages)
    scores = [n.score for page in pages for i in page.items for n in i.neighbours]
    assert min(scores) >= THRESHOLD

    two, _ = scan(stub, min_score=THRESHOLD, k=1)
    assert all(len(near) == 1 and near <= copies[item] for item, near in two.items())
    odd, _ = scan(stub, min_score=THRESHOLD, filter={"set": "1"})
    assert odd == {item: near for item, near in copies.items() if item.startswith("v3")}


def test_a_filter_holds_on_both_sides_of_a_pair(stub: pb_grpc.ImageSearchStub) -> None:
    dims = stub.Stats(pb.StatsRequest(), timeout=30).dims
    base = np.random.default_rng(99).normal(size=dims)
    near = {"w": base, "w-copy": base * 1.001, "w-twin": base * 0.999}
    sides = {"w": "x", "w-copy": "x", "w-twin": "y"}
    for item_id, vector in near.items():
        request = pb.AddRequest(
            id=item_id, vector=pb.Vector(values=vector), metadata={"side": sides[item_id]}
        )
        stub.Add(request, timeout=30)
    found, _ = scan(stub, min_score=THRESHOLD, filter={"side": "x"})
    assert found == {"w": {"w-copy"}, "w-copy": {"w"}}  # the twin is on the other side
    unfiltered, _ = scan(stub, min_score=THRESHOLD)
    assert unfiltered["w-twin"] == {"w", "w-copy"}
    stub.Delete(pb.DeleteRequest(ids=list(near)), timeout=30)


def test_a_pair_the_filter_allows_is_found_behind_closer_items_it_does_not(
    stub: pb_grpc.ImageSearchStub,
) -> None:
    """Six items on the other side are closer to "q" than its one copy on its side: the scan
    looks past them (each item's first search holds only a few places)."""
    dims = stub.Stats(pb.StatsRequest(), timeout=30).dims
    rng = np.random.default_rng(5)

    def near(vector: np.ndarray, distance: float) -> np.ndarray:
        step = rng.normal(size=dims)
        moved = vector + distance * step / np.linalg.norm(step)
        return moved / np.linalg.norm(moved)

    q = near(rng.normal(size=dims), 0)
    vectors = {"q": q, "q-far": near(q, 0.07)} | {f"q-other-{n}": near(q, 0.005) for n in range(6)}
    assert (
        THRESHOLD
        < float(q @ vectors["q-far"])
        < min(float(q @ v) for name, v in vectors.items() if name.startswith("q-other"))
    )
    for item_id, vector in vectors.items():
        side = "y" if item_id.startswith("q-other") else "x"
        request = pb.AddRequest(
            id=item_id, vector=pb.Vector(values=vector), metadata={"side": side}
        )
        stub.Add(request, timeout=30)
    found, _ = scan(stub, min_score=THRESHOLD, k=1, filter={"side": "x"})
    assert found == {"q": {"q-far"}, "q-far": {"q"}}
    stub.Delete(pb.DeleteRequest(ids=list(vectors)), timeout=30)


def test_a_region_never_makes_a_pair(stub: pb_grpc.ImageSearchStub) -> None:
    """An image's region and another image showing just that part are one vector apart: a
    search by image finds one from the other, the near-duplicate scan does not pair them."""
    scene = natural(320, 320, seed=3)
    box = pb.Region(x0=0.25, y0=0.25, x1=0.75, y1=0.75)
    stub.Add(pb.AddRequest(id="scene", image=encode(scene, "PNG"), regions=[box]), timeout=60)
    part = encode(scene.crop((80, 80, 240, 240)), "PNG")
    stub.Add(pb.AddRequest(id="part", image=part), timeout=60)
    by_image = stub.Search(pb.SearchRequest(id="part", k=1, exclude_self=True), timeout=30)
    assert by_image.matches[0].id == "scene"
    assert by_image.matches[0].score == pytest.approx(1.0, abs=1e-5)
    found, _ = scan(stub, min_score=0.99999)
    assert "scene" not in found
    assert "part" not in found
    stub.Delete(pb.DeleteRequest(ids=["scene", "part"]), timeout=30)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"min_score": 1.5}, "min_score must be between -1 and 1"), ({"k": 101}, "k must be")],
)
def test_bad_scans_are_refused(stub: pb_grpc.ImageSearchStub, fields: dict, message: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        scan(stub, **{"min_score": 0.9, **fields})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()


def test_the_cli_lists_groups_as_a_table_json_and_a_page(
    server: str, copies: dict[str, set[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "groups.html"
    arguments = ["--server", server, "duplicates", "--threshold", str(THRESHOLD)]
    assert main([*arguments, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    groups = [set(group["ids"]) for group in document["groups"]]
    assert groups[0] == {"v10", "v10-copy0", "v10-copy1"}  # the largest first
    assert sorted(map(sorted, groups[1:])) == [["v200", "v200-copy0"], ["v3", "v3-copy0"]]
    assert document["groups"][0]["pairs"][0]["score"] >= THRESHOLD
    assert main([*arguments, "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert "group 1: 3 items" in out
    assert re.search(rf"3 groups, 7 items in them, of {RANDOM_ITEMS + 4} scanned", out)
    html = page.read_text()
    assert html.count('<section class="group">') == 3
    assert "v200-copy0" in html
    assert main(["--server", server, "duplicates"]) != 0
    assert "--calibrate" in capsys.readouterr().err


def test_calibration_recommends_a_threshold_from_transformed_copies(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "sample"
    folder.mkdir()
    for n in range(5):
        natural(240 + 16 * n, 180, seed=60 + n).save(folder / f"photo-{n}.jpg", quality=92)
    assert main(["--server", server, "duplicates", "--calibrate", str(folder), "--json"]) == 0
    calibration = json.loads(capsys.readouterr().out)
    assert (calibration["images"], calibration["copies"]) == (5, 30)
    rows = calibration["rows"]
    recalls = [row["recall"] for row in rows]
    assert recalls == sorted(recalls, reverse=True)  # a higher threshold never finds more
    assert recalls[0] == 1.0
    assert set(calibration["copy_scores"]) == {
        "resize",
        "crop",
        "recompress",
        "flip",
        "rotate",
        "colour",
    }

    arguments = ["--server", server, "duplicates", "--calibrate", str(folder)]
    assert main([*arguments, "--precision", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "30 copies of 5 images" in out
    assert "RANDOM weights" in out
    recommended = re.search(r"--threshold (\d\.\d+) \(precision (\d\.\d+), recall", out)
    assert recommended is not None, out
    threshold, precision = float(recommended[1]), float(recommended[2])
    row = next(r for r in rows if abs(r["threshold"] - threshold) < 1e-9)
    assert precision >= 0.9
    assert row["precision"] == pytest.approx(precision, abs=1e-3)
    assert all(r["precision"] < 0.9 for r in rows if r["threshold"] < threshold)  # the lowest
    assert main([*arguments, "--precision", "1.01"]) == 0
    assert "no threshold reaches precision 1.01" in capsys.readouterr().out

    # --json carries the same recommendation as the text report
    assert main([*arguments, "--precision", "0.9", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["precision_asked"] == 0.9
    assert document["recommended"]["threshold"] == pytest.approx(threshold, abs=1e-3)
    assert document["random_weights"] is True
    assert main([*arguments, "--precision", "1.01", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recommended"] is None
