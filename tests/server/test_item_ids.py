"""Item ids that cannot spoof, over a real server on loopback (gRPC and HTTP): a name spelt in
NFC or NFD is one item, invisible and format characters are refused, the CLI and ingest follow
the same rules, and ids stored before them keep being served and can be listed."""

from __future__ import annotations

import csv
import json
import sqlite3
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import grpc
import httpx
import numpy as np
import pytest

from lookalike.batch.sources import iter_sources
from lookalike.cli import main
from lookalike.cli.common import EXIT_SOME_FAILED
from lookalike.server.index.local_repository import DATABASE_FILE
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.server.http.conftest import http_client, http_server
from tests.server.http.test_http_errors import documented_error
from tests.server.images import natural

NFC = unicodedata.normalize("NFC", "café.jpg")
NFD = unicodedata.normalize("NFD", "café.jpg")
REFUSED = [
    ("\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE at position 4"),
    ("\u200b", "U+200B ZERO WIDTH SPACE at position 4"),
]
NOT_ALLOWED = "invisible and format characters are not allowed in ids"
Served = tuple[pb_grpc.ImageSearchStub, httpx.Client, str]  # a server's stub, client, address


@pytest.fixture(scope="module")
def served(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with (
        http_server(tiny_export, tmp_path_factory.mktemp("data")) as (server, base),
        grpc.insecure_channel(server.address) as channel,
        http_client(base) as api,
    ):
        yield pb_grpc.ImageSearchStub(channel), api, server.address


@pytest.fixture
def stub(served: Served) -> pb_grpc.ImageSearchStub:
    return served[0]


@pytest.fixture
def api(served: Served) -> httpx.Client:
    return served[1]


def vector(stub: pb_grpc.ImageSearchStub, seed: int) -> list[float]:
    values = np.random.default_rng(seed).normal(size=stub.Stats(pb.StatsRequest()).dims)
    return list(values / np.linalg.norm(values))


def test_nfc_and_nfd_are_one_item_over_grpc(stub: pb_grpc.ImageSearchStub) -> None:
    added = stub.Add(pb.AddRequest(id=NFD, vector=pb.Vector(values=vector(stub, 1))))
    assert (added.id, added.replaced) == (NFC, False)
    assert stub.Get(pb.GetRequest(id=NFC)).id == NFC
    assert stub.Get(pb.GetRequest(id=NFD)).id == NFC
    again = stub.Add(pb.AddRequest(id=NFC, vector=pb.Vector(values=vector(stub, 2))))
    assert again.replaced
    tagged = stub.UpdateMetadata(pb.UpdateMetadataRequest(ids=[NFD], set={"k": "v"}))
    assert (tagged.updated, list(tagged.missing)) == (1, [])
    similar = stub.Search(pb.SearchRequest(id=NFD, k=5))
    assert [match.id for match in similar.matches][:1] == [NFC]
    deleted = stub.Delete(pb.DeleteRequest(ids=[NFD]))
    assert (deleted.deleted, list(deleted.missing)) == (1, [])
    with pytest.raises(grpc.RpcError) as gone:
        stub.Get(pb.GetRequest(id=NFC))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_nfc_and_nfd_are_one_item_over_http(
    stub: pb_grpc.ImageSearchStub, api: httpx.Client
) -> None:
    first = api.put(f"/v1/items/{quote(NFC)}", json={"vector": vector(stub, 3)})
    assert first.json() == {"id": NFC, "replaced": False}
    second = api.put(f"/v1/items/{quote(NFD)}", json={"vector": vector(stub, 4)})
    assert second.json() == {"id": NFC, "replaced": True}
    assert api.get(f"/v1/items/{quote(NFD)}").json()["id"] == NFC
    similar = api.post("/v1/search", json={"id": NFD, "k": 5, "exclude_self": True})
    assert NFC not in [match["id"] for match in similar.json()["matches"]]
    assert api.delete(f"/v1/items/{quote(NFD)}").json() == {"deleted": 1}


@pytest.mark.parametrize(("character", "named"), REFUSED)
def test_format_characters_are_refused_over_grpc(
    stub: pb_grpc.ImageSearchStub, character: str, named: str
) -> None:
    request = pb.AddRequest(id=f"abcd{character}gpj.exe", vector=pb.Vector(values=vector(stub, 0)))
    with pytest.raises(grpc.RpcError) as refused:
        stub.Add(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == f"id contains {named}: {NOT_ALLOWED}"
    assert stub.Stats(pb.StatsRequest()).dims  # still serving


@pytest.mark.parametrize(("character", "named"), REFUSED)
def test_format_characters_are_refused_over_http(
    api: httpx.Client, character: str, named: str
) -> None:
    answer = api.put(f"/v1/items/{quote(f'abcd{character}gpj.exe')}", json={"vector": [1.0]})
    message = documented_error(answer, 400, "INVALID_ARGUMENT")
    assert message == f"id contains {named}: {NOT_ALLOWED}"
    assert api.get("/healthz").json() == {"status": "SERVING"}


def test_a_bulk_add_refuses_the_item_alone(stub: pb_grpc.ImageSearchStub) -> None:
    requests = [
        pb.AddRequest(id=item_id, vector=pb.Vector(values=vector(stub, seed)))
        for seed, item_id in enumerate(["bulk-1", "bulk\u2066-2", "bulk-3"])
    ]
    results = [r for answer in stub.AddStream(iter(requests)) for r in answer.results]
    assert [(r.id, r.code) for r in results] == [("bulk-1", 0), ("bulk\u2066-2", 3), ("bulk-3", 0)]
    assert "U+2066 LEFT-TO-RIGHT ISOLATE at position 4" in results[1].error


def test_the_cli_indexes_a_file_name_as_nfc_and_lists_a_refused_one(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed, name in enumerate([f"index-{NFD}", "index\u200b.jpg", "index-plain.jpg"]):
        natural(64, 48, seed=seed).save(folder / name)
    code = main(["--server", served[2], "index", str(folder)])
    out = capsys.readouterr().out
    assert code == EXIT_SOME_FAILED
    assert "2 stored, 0 already indexed, 1 failed" in out
    assert f"id contains U+200B ZERO WIDTH SPACE at position 5: {NOT_ALLOWED}" in out
    assert main(["--server", served[2], "get", f"index-{NFC}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == f"index-{NFC}"
    assert main(["--server", served[2], "index", str(folder)]) == EXIT_SOME_FAILED
    assert "0 stored, 2 already indexed, 1 failed" in capsys.readouterr().out


def test_ingest_lists_ids_in_nfc_and_a_refused_one_as_found(tmp_path: Path) -> None:
    """The ids `lookalike ingest` gives its images, from file names and from a list file; the
    image whose id is refused becomes an error row when read (tests/cluster/test_ingest.py)."""
    folder = tmp_path / "album"
    folder.mkdir()
    for name in (NFD, "b\u202ec.jpg"):
        (folder / name).write_bytes(b"an image")
    listed = tmp_path / "list.csv"
    with listed.open("w", newline="", encoding="utf-8") as stream:
        csv.writer(stream).writerows([["id", "path"], [f"listed-{NFD}", f"album/{NFD}"]])
    ids = [image.id for image in iter_sources([str(folder), str(listed)])]
    assert ids == ["b\u202ec.jpg", NFC, f"listed-{NFC}"]


def test_ids_stored_before_the_rules_are_listed_and_still_served(
    tiny_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older server stored an NFD id and one with an override; this one finds each by the id
    as stored, and `lookalike legacy-ids` names them."""
    data = tmp_path / "data"
    legacy = {"old-nfd": NFD, "old-rlo": "abcd\u202egpj.exe"}
    with http_server(tiny_export, data) as (server, _), grpc.insecure_channel(server.address) as ch:
        stub = pb_grpc.ImageSearchStub(ch)
        for seed, item_id in enumerate([*legacy, "fine"]):
            stub.Add(pb.AddRequest(id=item_id, vector=pb.Vector(values=vector(stub, seed))))
    with sqlite3.connect(data / DATABASE_FILE) as db:
        db.executemany("UPDATE items SET id = ? WHERE id = ?", [(v, k) for k, v in legacy.items()])

    with http_server(tiny_export, data) as (server, base), http_client(base) as api:
        assert main(["legacy-ids", str(data)]) == 0
        out = capsys.readouterr().out
        assert f"  {NFD!a}  not in Unicode NFC: stored now, it would be {NFC!a}" in out
        rlo = legacy["old-rlo"]
        assert f"  {rlo!a}  id contains U+202E RIGHT-TO-LEFT OVERRIDE at position 4" in out
        assert "2 of 3 ids stored before ids were normalised" in out
        assert main(["legacy-ids", str(data), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert [row["id"] for row in report["legacy"]] == [NFD, rlo]

        for item_id in legacy.values():
            assert api.get(f"/v1/items/{quote(item_id)}").json()["id"] == item_id
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageSearchStub(channel)
            assert stub.Get(pb.GetRequest(id=rlo)).id == rlo
            assert stub.Search(pb.SearchRequest(id=NFD, k=1)).matches[0].id == NFD
            deleted = stub.Delete(pb.DeleteRequest(ids=[NFD, rlo]))
        assert (deleted.deleted, list(deleted.missing)) == (2, [])
