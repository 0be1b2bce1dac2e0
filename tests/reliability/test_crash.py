"""kill -9 during a bulk AddStream loses no acknowledged item and exposes no partial one: no
item without all its regions, no vector without its item."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from lookalike.server.regions import GRID, grid_regions
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.reliability.process import ServerProcess
from tests.reliability.report import ReliabilityReport
from tests.server.images import jpeg

TRIALS, SOAK_TRIALS = 20, 200
ITEMS = 300
BOX = pb.Region(x0=0.2, y0=0.1, x1=0.7, y1=0.9, label="part")


def regions_sent(request: pb.AddRequest) -> list[tuple[float, ...]]:
    """The boxes an item is stored with: its given one, then the grid's if it asked for it."""
    regions = list(request.regions)
    if request.region_policy == pb.REGION_POLICY_GRID:
        regions += [pb.Region(x0=r.x0, y0=r.y0, x1=r.x1, y1=r.y1) for r in grid_regions(GRID)]
    return [boxed(r) for r in regions]


def boxed(region: pb.Region) -> tuple[float, ...]:
    return (round(region.x0, 4), round(region.y0, 4), round(region.x1, 4), round(region.y1, 4))


def items(seed: int) -> list[pb.AddRequest]:
    rng = np.random.default_rng(seed)
    requests = []
    for i in range(ITEMS):
        metadata = {"n": str(i), "seed": str(seed)}
        if i % 25 == 0:  # some real images too, with a region, half of them with a grid too
            policy = pb.REGION_POLICY_GRID if i % 50 == 0 else pb.REGION_POLICY_NONE
            requests.append(
                pb.AddRequest(
                    id=f"t{seed}-{i}",
                    image=jpeg(80, 60, seed=i),
                    metadata=metadata,
                    regions=[BOX],
                    region_policy=policy,
                )
            )
        else:
            vector = rng.normal(size=16)
            requests.append(
                pb.AddRequest(id=f"t{seed}-{i}", vector=pb.Vector(values=vector), metadata=metadata)
            )
    return requests


def stream_until_killed(
    stub: pb_grpc.ImageSearchStub,
    requests: list[pb.AddRequest],
    server: ServerProcess,
    delay: float,
) -> set[str]:
    acknowledged: set[str] = set()
    killer = threading.Timer(delay, server.kill)
    killer.start()

    def slow() -> Iterator[pb.AddRequest]:
        for request in requests:
            yield request
            time.sleep(0.002)

    try:
        for response in stub.AddStream(slow(), timeout=60):
            acknowledged.update(r.id for r in response.results if r.code == 0)
    except grpc.RpcError as exc:  # the server died under the stream, as intended
        if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            raise
    finally:
        killer.join()
    return acknowledged


def stored_item(stub: pb_grpc.ImageSearchStub, item_id: str) -> pb.GetResponse | None:
    try:
        return stub.Get(pb.GetRequest(id=item_id, include_vector=True))
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "trial" in metafunc.fixturenames:
        trials = SOAK_TRIALS if metafunc.config.getoption("--soak") else TRIALS
        metafunc.parametrize("trial", range(trials))


def test_sigkill_during_add_stream_loses_no_acknowledged_item(
    tiny_export: Path, tmp_path: Path, trial: int, report: ReliabilityReport
) -> None:
    data = tmp_path / "data"
    requests = items(seed=trial)
    sent = {request.id: request for request in requests}
    server = ServerProcess(tiny_export, data, tmp_path / "first.log")
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        delay = random.Random(trial).uniform(0.05, 0.55)
        acknowledged = stream_until_killed(
            pb_grpc.ImageSearchStub(channel), requests, server, delay
        )
    assert server.process.returncode == -signal.SIGKILL
    print(f"trial {trial}: killed after {delay:.2f}s, {len(acknowledged)} of {ITEMS} acknowledged")

    restarted = ServerProcess(tiny_export, data, tmp_path / "second.log")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{restarted.port}") as channel:
            stub = pb_grpc.ImageSearchStub(channel)
            stored = stub.Stats(pb.StatsRequest()).items
            assert stored >= len(acknowledged)
            present, vectors = set(), 0
            for item_id, request in sent.items():
                got = stored_item(stub, item_id)
                if got is None:
                    continue
                present.add(item_id)
                assert dict(got.metadata) == dict(request.metadata)  # never a partial item
                assert [boxed(r) for r in got.regions] == regions_sent(request)
                vectors += 1 + len(got.regions)
                if request.HasField("vector"):
                    expected = np.asarray(request.vector.values)
                    expected /= np.linalg.norm(expected)
                    np.testing.assert_allclose(got.vector.values, expected, atol=1e-6)
                top = stub.Search(pb.SearchRequest(id=item_id, k=1)).matches[0]
                assert top.id == item_id  # and searchable
            assert acknowledged <= present
            assert len(present) == stored
            assert stub.Stats(pb.StatsRequest()).vectors == vectors  # no orphan vector
            report.kills += 1
            report.items_verified += len(present)
    finally:
        restarted.stop()
