"""What the operating system's own socket tables say a started `lookalike-server` listens on:
exactly the ports its `listening on` line names, on the address it was given (127.0.0.1); and
nothing at all in the processes it starts (the preprocess workers, multiprocessing's resource
tracker). Issue #42."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.process import (
    LOOPBACK,
    Listener,
    ServerProcess,
    announced_listeners,
    listeners_by_process,
)

HTTP_AND_METRICS = ("--http-port", "0", "--metrics-port", "0")
EVERY_TRANSPORT = {"gRPC", "HTTP", "metrics"}


@pytest.mark.parametrize(
    ("flags", "transports", "processes"),
    [
        ((), {"gRPC"}, 1),
        (HTTP_AND_METRICS, EVERY_TRANSPORT, 1),
        # the server, its one worker, and the resource tracker of the workers' shared memory
        ((*HTTP_AND_METRICS, "--preprocess-processes", "1"), EVERY_TRANSPORT, 3),
    ],
    ids=["grpc-only", "grpc-http-metrics", "preprocess-processes"],
)
def test_a_server_listens_exactly_on_the_ports_it_was_given_and_its_children_on_none(
    tiny_export: Path,
    tmp_path: Path,
    flags: tuple[str, ...],
    transports: set[str],
    processes: int,
) -> None:
    server = ServerProcess(tiny_export, tmp_path / "data", tmp_path / "server.log", *flags)
    try:  # SERVING: everything it starts with is running
        announced = announced_listeners(server.log, LOOPBACK)
        listening = listeners_by_process(server.process.pid)
    finally:
        server.stop()
    assert announced.keys() == transports
    assert len(listening) == processes
    nothing: dict[int, set[Listener]] = {pid: set() for pid in listening}
    assert listening == nothing | {server.process.pid: set(announced.values())}
