"""Tagging: stored items' metadata changed in place (set pairs, remove keys), over gRPC, HTTP
and the CLI; the next search filters on it, the vectors stay, and a bad change changes nothing."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest

from lookalike.cli import main
from lookalike.v1 import lookalike_pb2 as pb
from tests.server.http.conftest import http_client, http_server
from tests.server.images import jpeg


def tagged(client: httpx.Client, **filter: str) -> list[str]:
    vector = client.get("/v1/items/photo-0", params={"include_vector": "true"}).json()["vector"]
    found = client.post("/v1/search", json={"vector": vector, "k": 10, "filter": filter})
    return sorted(match["id"] for match in found.json()["matches"])


def test_items_are_tagged_and_untagged_over_grpc_http_and_the_cli(
    tiny_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with http_server(tiny_export, tmp_path / "data") as (server, url), http_client(url) as client:
        for number in range(4):
            stored = client.put(
                f"/v1/items/photo-{number}",
                files={"image": (f"{number}.jpg", jpeg(160, 120, number), "image/jpeg")},
                data={"metadata": '{"split": "train"}'},
            )
            assert stored.status_code == 200, stored.text
        before = client.get("/v1/items/photo-1", params={"include_vector": "true"}).json()

        answer = client.post(
            "/v1/metadata",
            json={"ids": ["photo-1", "photo-2", "nobody"], "set": {"label": "rocket"}},
        )
        assert answer.json() == {"updated": 2, "missing": ["nobody"]}
        assert tagged(client, label="rocket") == ["photo-1", "photo-2"]
        after = client.get("/v1/items/photo-1", params={"include_vector": "true"}).json()
        assert after["metadata"] == {"split": "train", "label": "rocket"}
        assert after["vector"] == before["vector"]  # the vectors stay

        with grpc.insecure_channel(server.address) as channel:
            stub = server.stub(channel)
            update = pb.UpdateMetadataRequest(
                ids=["photo-2"], set={"split": "val"}, remove=["label"]
            )
            assert stub.UpdateMetadata(update, timeout=30).updated == 1
            assert dict(stub.Get(pb.GetRequest(id="photo-2"), timeout=30).metadata) == {
                "split": "val"
            }
            both = pb.UpdateMetadataRequest(ids=["photo-3"], set={"a": "1"}, remove=["a"])
            with pytest.raises(grpc.RpcError) as refused:
                stub.UpdateMetadata(both, timeout=30)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "'a' is both set and removed" in refused.value.details()
        assert tagged(client, label="rocket") == ["photo-1"]
        assert tagged(client, split="val") == ["photo-2"]

        # all or none: one item would pass the limit of 64 keys, so none is changed
        many = {f"k{i}": "v" for i in range(63)}
        assert (
            client.post("/v1/metadata", json={"ids": ["photo-3"], "set": many}).status_code == 200
        )
        too_many = client.post(
            "/v1/metadata", json={"ids": ["photo-0", "photo-3"], "set": {"one": "more"}}
        )
        assert too_many.status_code == 400
        assert "after the update has 65 keys" in too_many.json()["error"]["message"]
        assert client.get("/v1/items/photo-0").json()["metadata"] == {"split": "train"}
        nothing = client.post("/v1/metadata", json={"ids": ["photo-0"]})
        assert nothing.status_code == 400
        assert "nothing to change" in nothing.json()["error"]["message"]

        arguments = ["--server", server.address, "tag", "photo-0", "gone", "--set", "label=cat"]
        assert main(arguments) == 0
        assert capsys.readouterr().out.splitlines() == ["updated 1", "  not found  gone"]
        assert tagged(client, label="cat") == ["photo-0"]
