"""kill -9 during a bulk AddStream loses no acknowledged item and exposes no partial one: no
item without all its regions, no vector without its item."""

from __future__ import annotations

import dataclasses
import math
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
KILL_SPREAD = 0.9  # a kill lands in this share of the rest of the stream, as its pace predicts
MID_STREAM_SHARE = 0.75  # of a run's trials, at least this share must kill mid-stream
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


@dataclasses.dataclass(frozen=True)
class KilledStream:
    """What the client of a stream saw of it, its server SIGKILLed `delay` seconds after the
    first acknowledgment."""

    acknowledged: set[str]
    delay: float
    total: int

    @property
    def mid_stream(self) -> bool:
        """Whether the server died with the stream part acknowledged: some items, not all."""
        return 0 < len(self.acknowledged) < self.total


def stream_until_killed(
    stub: pb_grpc.ImageSearchStub,
    requests: list[pb.AddRequest],
    server: ServerProcess,
    rng: random.Random,
) -> KilledStream:
    """Stream `requests`, about 2 ms apart, and SIGKILL the server at a random moment of the
    rest of the stream, once it has acknowledged something: after a random share (up to
    KILL_SPREAD) of the time that the requests not yet sent take at the pace they have been
    sent so far, so that the kills land inside the stream on a slow machine and a fast one."""
    acknowledged: set[str] = set()
    sent_at: list[float] = []  # when each request went, so far
    killer: threading.Timer | None = None
    delay = 0.0

    def paced() -> Iterator[pb.AddRequest]:
        for request in requests:
            sent_at.append(time.monotonic())
            yield request
            time.sleep(0.002)

    try:
        for response in stub.AddStream(paced(), timeout=60):
            acknowledged.update(r.id for r in response.results if r.code == 0)
            if killer is None:
                pace = (sent_at[-1] - sent_at[0]) / max(len(sent_at) - 1, 1)
                delay = rng.uniform(0, KILL_SPREAD) * pace * (len(requests) - len(sent_at))
                killer = threading.Timer(delay, server.kill)
                killer.start()
    except grpc.RpcError as exc:  # the server died under the stream, as intended
        if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            raise
    finally:
        if killer is not None:
            killer.join()
    return KilledStream(acknowledged, delay, len(requests))


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


@pytest.fixture(scope="module")
def mid_stream_kills() -> Iterator[list[bool]]:
    """Whether each trial's kill came mid-stream; once the run's trials are done, at least
    MID_STREAM_SHARE of them must have."""
    landed: list[bool] = []
    yield landed
    needed = math.ceil(MID_STREAM_SHARE * len(landed))
    assert sum(landed) >= needed, f"{sum(landed)} of {len(landed)} kills came mid-stream"


def test_sigkill_during_add_stream_loses_no_acknowledged_item(
    tiny_export: Path,
    tmp_path: Path,
    trial: int,
    report: ReliabilityReport,
    mid_stream_kills: list[bool],
) -> None:
    data = tmp_path / "data"
    requests = items(seed=trial)
    sent = {request.id: request for request in requests}
    server = ServerProcess(tiny_export, data, tmp_path / "first.log")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ImageSearchStub(channel)
            killed = stream_until_killed(stub, requests, server, random.Random(trial))
    finally:
        returncode = server.process.poll()
        if returncode is None:  # the kill never came: the server must not outlive the test
            server.kill()
    assert returncode == -signal.SIGKILL
    mid_stream_kills.append(killed.mid_stream)
    acknowledged = killed.acknowledged
    print(
        f"trial {trial}: killed {killed.delay:.2f}s after the first acknowledgment, "
        f"{len(acknowledged)} of {ITEMS} acknowledged"
    )

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
