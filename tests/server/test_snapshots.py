"""`--snapshot-interval-s`: a running server writes its USearch snapshot after each interval in
which the index changed, with no shutdown needed, so a crash loses no index work done before."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from lookalike.server.index.local_repository import SNAPSHOT_FILE
from lookalike.server.index.settings import IndexSettings
from lookalike.server.index.vector_index import SnapshotError, VectorIndex
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.ray_commands import wait_for
from tests.server.serving import config_for, connected

DIMS = 16
INTERVAL_S = 0.2
WRITTEN_WITHIN_S = 30  # generous: a loaded 2-core machine, against an interval of 0.2 s


def keys_in_snapshot(snapshot: Path) -> int | None:
    """How many vectors the snapshot file holds (None: no readable snapshot yet). The server
    replaces it atomically, so a read never sees half a file."""
    try:
        return len(VectorIndex.load(snapshot, DIMS, IndexSettings()).keys())
    except SnapshotError:
        return None


def test_the_snapshot_is_written_after_each_interval_that_changed_the_index(
    tiny_export: Path, tmp_path: Path
) -> None:
    snapshot = tmp_path / SNAPSHOT_FILE
    rows = np.random.default_rng(3).normal(size=(12, DIMS))
    config = config_for(tiny_export, tmp_path, snapshot_interval_s=INTERVAL_S)
    with connected(config) as (_, channel):
        stub = pb_grpc.ImageSearchStub(channel)

        def add(ids: range) -> None:
            for i in ids:
                stub.Add(pb.AddRequest(id=f"id-{i}", vector=pb.Vector(values=rows[i])))

        changes: list[tuple[Callable[[], object], int]] = [
            (lambda: add(range(8)), 8),
            (lambda: add(range(8, 12)), 12),
            (lambda: stub.Delete(pb.DeleteRequest(ids=["id-0", "id-1"])), 10),
        ]
        for change, vectors in changes:
            change()
            wait_for(lambda n=vectors: keys_in_snapshot(snapshot) == n, WRITTEN_WITHIN_S)
