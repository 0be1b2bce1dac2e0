"""A full disk: writes fail with a clear status, searches go on, nothing acknowledged is lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np

from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.mounts import small_tmpfs
from tests.server.serving import config_for, connected


def test_full_disk_refuses_writes_keeps_serving_and_loses_nothing(
    tiny_export: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    stored: dict[str, np.ndarray] = {}
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        with connected(config_for(tiny_export, disk / "data")) as (_, channel):
            stub = pb_grpc.ImageSearchStub(channel)
            failure = None
            for i in range(2000):  # bounded: the 1 MiB disk fills long before
                vector = rng.normal(size=16)
                request = pb.AddRequest(
                    id=f"i{i}", vector=pb.Vector(values=vector), metadata={"pad": "x" * 2000}
                )
                try:
                    stub.Add(request, timeout=30)
                except grpc.RpcError as error:
                    failure = error
                    break
                stored[f"i{i}"] = vector / np.linalg.norm(vector)
            assert failure is not None, "the disk never filled"
            assert failure.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "disk is full" in failure.details()
            assert len(stored) > 10
            some = next(iter(stored))
            assert stub.Search(pb.SearchRequest(id=some, k=1), timeout=10).matches[0].id == some
            assert stub.Stats(pb.StatsRequest()).items == len(stored)
        rescued = Path(shutil.copytree(disk / "data", tmp_path / "rescued"))
    with connected(config_for(tiny_export, rescued)) as (_, channel):
        stub = pb_grpc.ImageSearchStub(channel)
        assert stub.Stats(pb.StatsRequest()).items == len(stored)
        for item_id, vector in stored.items():
            got = stub.Get(pb.GetRequest(id=item_id, include_vector=True))
            np.testing.assert_allclose(got.vector.values, vector, atol=1e-6)
