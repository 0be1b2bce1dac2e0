"""The shape of a collection without a query, on data whose answer is known: planted groups of
near-copies and a few vectors unlike any other. Clusters recover the groups (over gRPC and
HTTP, the same), within a bounded sample; the Neighbours scan at k=1 ranks the planted outliers
as the most unusual items, as an exact numpy computation does."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest

from lookalike.cli import main
from lookalike.v1 import lookalike_pb2 as pb
from tests.server.http.conftest import http_client, http_server
from tests.server.planted import GROUPS, OUTLIERS, PER_GROUP, group_of, planted


@pytest.fixture(scope="module")
def served(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory):
    with http_server(tiny_export, tmp_path_factory.mktemp("data")) as (server, url):
        with http_client(url) as client:
            for item_id, vector in planted().items():
                stored = client.put(f"/v1/items/{item_id}", json={"vector": vector.tolist()})
                assert stored.status_code == 200, stored.text
        yield server, url


def test_clusters_recover_planted_groups_the_same_over_grpc_and_http(served) -> None:
    server, url = served
    with grpc.insecure_channel(server.address) as channel:
        answer = server.stub(channel).Clusters(
            pb.ClustersRequest(count=GROUPS, per_cluster=3), timeout=60
        )
    assert (answer.sampled, answer.total) == (GROUPS * PER_GROUP + OUTLIERS,) * 2
    sizes = [cluster.size for cluster in answer.clusters]
    assert sorted(sizes, reverse=True) == sizes  # largest first
    assert sum(sizes) == answer.sampled
    represented = []
    for cluster in answer.clusters:
        groups = {group_of(m.id) for m in cluster.representatives}
        assert len(groups) == 1, [m.id for m in cluster.representatives]  # one planted group
        scores = [m.score for m in cluster.representatives]
        assert scores == sorted(scores, reverse=True)  # nearest the centre first
        assert cluster.size >= PER_GROUP
        represented += groups
    assert sorted(represented) == [f"group{g}" for g in range(GROUPS)]

    with http_client(url) as client:
        page = client.get("/v1/clusters", params={"count": GROUPS, "per_cluster": 3}).json()
    assert [c["size"] for c in page["clusters"]] == sizes
    assert [[m["id"] for m in c["representatives"]] for c in page["clusters"]] == [
        [m.id for m in c.representatives] for c in answer.clusters
    ]


def test_a_sample_bounds_the_work(served) -> None:
    _, url = served
    with http_client(url) as client:
        page = client.get("/v1/clusters", params={"count": 3, "sample": 10}).json()
        assert (page["sampled"], page["total"]) == (10, GROUPS * PER_GROUP + OUTLIERS)
        assert sum(c["size"] for c in page["clusters"]) == 10
        again = client.get("/v1/clusters", params={"count": 3, "sample": 10}).json()
        assert again == page  # the same sample for the same collection
        refused = client.get("/v1/clusters", params={"count": 0})
        assert refused.status_code == 400
        assert "count must be between 1 and 100" in refused.json()["error"]["message"]


def test_the_neighbour_scan_ranks_the_planted_outliers_most_unusual(served) -> None:
    _, url = served
    vectors = planted()
    ids = list(vectors)
    matrix = np.stack([vectors[i] for i in ids])
    cosines = matrix @ matrix.T
    np.fill_diagonal(cosines, -2)
    exact = {item_id: float(cosines[row].max()) for row, item_id in enumerate(ids)}
    nearest, cursor = {}, 0
    with http_client(url) as client:
        while cursor is not None:
            page = client.get(
                "/v1/duplicates", params={"threshold": -1, "k": 1, "cursor": cursor}
            ).json()
            nearest.update({i["id"]: i["neighbours"][0]["score"] for i in page["items"]})
            cursor = page["next_cursor"]
    assert nearest.keys() == exact.keys()
    assert all(abs(nearest[i] - exact[i]) < 1e-3 for i in ids)  # f32 index, exact search
    unusual = sorted(nearest, key=nearest.get)[:OUTLIERS]
    assert sorted(unusual) == [f"odd-{n}" for n in range(OUTLIERS)]


def test_the_cli_shows_the_groups_and_the_unusual_items(
    served, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = served
    assert main(["--server", server.address, "clusters", "--count", str(GROUPS), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert sum(c["size"] for c in found["clusters"]) == found["total"]
    for cluster in found["clusters"]:
        assert len({group_of(m["id"]) for m in cluster["representatives"]}) == 1
    assert main(["--server", server.address, "clusters", "--count", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"2 groups of {GROUPS * PER_GROUP + OUTLIERS} items"
    )
    assert main(["--server", server.address, "outliers", "-n", str(OUTLIERS), "--json"]) == 0
    unusual = json.loads(capsys.readouterr().out)["outliers"]
    assert sorted(row["id"] for row in unusual) == [f"odd-{n}" for n in range(OUTLIERS)]
