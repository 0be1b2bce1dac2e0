"""A full disk: writes fail with a clear status, searches go on, nothing acknowledged is lost.

Twice: on a 1 MiB tmpfs (ENOSPC, SQLITE_FULL: needs mount rights), and with the server's files
limited to 1 MiB (RLIMIT_FSIZE: EFBIG, which SQLite reports as an I/O error), which needs no
rights at all, so the server's handling is tested wherever the tests run."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.mounts import small_tmpfs, under_file_size_limit
from tests.reliability.process import STARTUP_TIMEOUT, clean_env, listening_port, server_command
from tests.server.serving import config_for, connected

MIB = 1 << 20


def fill_until_refused(
    stub: pb_grpc.ImageSearchStub,
) -> tuple[grpc.RpcError, dict[str, np.ndarray]]:
    """Add items until the server refuses one: the refusal, and the items it acknowledged."""
    rng = np.random.default_rng(0)
    stored: dict[str, np.ndarray] = {}
    for i in range(2000):  # bounded: 1 MiB fills long before
        vector = rng.normal(size=16)
        request = pb.AddRequest(
            id=f"i{i}", vector=pb.Vector(values=vector), metadata={"pad": "x" * 2000}
        )
        try:
            stub.Add(request, timeout=30)
        except grpc.RpcError as error:
            return error, stored
        stored[f"i{i}"] = vector / np.linalg.norm(vector)
    raise AssertionError("the disk never filled")


def still_serving(stub: pb_grpc.ImageSearchStub, stored: dict[str, np.ndarray]) -> None:
    assert len(stored) > 10
    some = next(iter(stored))
    assert stub.Search(pb.SearchRequest(id=some, k=1), timeout=10).matches[0].id == some
    assert stub.Stats(pb.StatsRequest()).items == len(stored)


def nothing_lost(model_dir: Path, data_dir: Path, stored: dict[str, np.ndarray]) -> None:
    """A server started afresh on the data directory finds every acknowledged item."""
    with connected(config_for(model_dir, data_dir)) as (_, channel):
        stub = pb_grpc.ImageSearchStub(channel)
        assert stub.Stats(pb.StatsRequest()).items == len(stored)
        for item_id, vector in stored.items():
            got = stub.Get(pb.GetRequest(id=item_id, include_vector=True))
            np.testing.assert_allclose(got.vector.values, vector, atol=1e-6)


def test_full_disk_refuses_writes_keeps_serving_and_loses_nothing(
    tiny_export: Path, tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        with connected(config_for(tiny_export, disk / "data")) as (_, channel):
            stub = pb_grpc.ImageSearchStub(channel)
            failure, stored = fill_until_refused(stub)
            assert failure.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "disk is full" in failure.details()
            still_serving(stub, stored)
        rescued = Path(shutil.copytree(disk / "data", tmp_path / "rescued"))
    nothing_lost(tiny_export, rescued, stored)


@contextlib.contextmanager
def server_with_file_size_limit(
    model_dir: Path, data_dir: Path, log: Path, limit_bytes: int
) -> Iterator[pb_grpc.ImageSearchStub]:
    """`python -m lookalike.server` with its files limited to `limit_bytes`; stopped with
    SIGTERM, which it must still answer cleanly."""
    command = server_command(model_dir, data_dir, "--host", "127.0.0.1", "--threads", "1")
    with log.open("w") as stream:
        process = subprocess.Popen(
            under_file_size_limit(command, limit_bytes),
            stdout=stream,
            stderr=stream,
            env=clean_env(),
        )
    try:
        port = listening_port(process, log)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + STARTUP_TIMEOUT
            serving = health_pb2.HealthCheckResponse.SERVING
            while health.Check(health_pb2.HealthCheckRequest(), timeout=10).status != serving:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            yield pb_grpc.ImageSearchStub(channel)
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(60)
    assert returncode == 0, log.read_text()


def test_file_size_limit_refuses_writes_keeps_serving_and_loses_nothing(
    tiny_export: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    log = tmp_path / "server.log"
    with server_with_file_size_limit(tiny_export, data, log, MIB) as stub:
        failure, stored = fill_until_refused(stub)
        assert failure.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, failure.details()
        assert "file size limit (ulimit -f)" in failure.details()
        still_serving(stub, stored)
    assert max(path.stat().st_size for path in data.rglob("*")) <= MIB  # the limit held
    nothing_lost(tiny_export, data, stored)
