"""`lookalike-server --index DIR --shards-on-ray`: the shards of a built index as Ray Serve
deployments on the package's two-node cluster, behind the usual gRPC front, answering exactly
as the one-process `--index` server does."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from ray.cluster_utils import Cluster

from benchmarks import datasets
from lookalike.server.cluster.build_index import BuildSettings, build_index
from lookalike.server.cluster.serving import ClusterSettings
from lookalike.server.engine import ModelIdentity
from lookalike.server.index import IndexSettings
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.server.serving import config_for, running_server

TINY = ModelIdentity("random-init:tiny", 16)
COUNT, SHARDS = 600, 3
SEARCH = IndexSettings(exact_search_below=0)  # every shard on its HNSW graph


@pytest.fixture(scope="module")
def index(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from ray import serve

    root = tmp_path_factory.mktemp("served")
    ids = [f"item-{i:04d}" for i in range(COUNT)]
    datasets.write_dataset(root / "dataset", TINY, ids, datasets.unit_rows(COUNT, 16, seed=5))
    build_index(BuildSettings(dataset=root / "dataset", output=root / "index", shards=SHARDS))
    try:
        yield root / "index"
    finally:
        serve.shutdown()


@contextlib.contextmanager
def stub_for(model: Path, index: Path, **options: object) -> Iterator[pb_grpc.ImageSearchStub]:
    config = config_for(model, None, index_dir=index, index=SEARCH, **options)
    with running_server(config) as server, grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ImageSearchStub(channel)


def answers(matches) -> list[tuple[str, float]]:
    return [(m.id, round(m.score, 5)) for m in matches]


def test_shards_on_serve_answer_as_one_process_does(index: Path, tiny_export: Path) -> None:
    queries = datasets.unit_rows(20, 16, seed=6)
    requests = [
        pb.SearchRequest(vector=pb.Vector(values=q.tolist()), k=10, filter=f)
        for q in queries
        for f in ({}, {"parity": "1"})
    ]
    requests.append(pb.SearchRequest(id="item-0042", k=5, exclude_self=True))
    with stub_for(tiny_export, index) as local:
        expected = [answers(local.Search(r, timeout=30).matches) for r in requests]
        item = local.Get(pb.GetRequest(id="item-0042", include_vector=True), timeout=30)
    with stub_for(tiny_export, index, shards_on_ray=ClusterSettings()) as served:
        assert [answers(served.Search(r, timeout=30).matches) for r in requests] == expected
        assert all(len(e) == k for e, k in zip(expected, [10, 10] * 20 + [5], strict=True))
        got = served.Get(pb.GetRequest(id="item-0042", include_vector=True), timeout=30)
        assert got.metadata == item.metadata
        np.testing.assert_array_equal(got.vector.values, item.vector.values)
        assert served.Stats(pb.StatsRequest(), timeout=30).items == COUNT
        with pytest.raises(grpc.RpcError) as missing:  # raised in a replica, same status
            served.Get(pb.GetRequest(id="nobody"), timeout=30)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert missing.value.details() == "no item with id 'nobody'", missing.value.details()
        with pytest.raises(grpc.RpcError) as refused:
            served.Delete(pb.DeleteRequest(ids=["item-0001"]), timeout=30)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
