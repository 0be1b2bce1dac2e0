"""Lookalike's Ray commands as users run them (processes), shared by the Ray tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.reliability.process import listening_port

SERVICE = "lookalike.v1.ImageSearch"
SERVING = health_pb2.HealthCheckResponse.SERVING
RAY_CRASH_HANDLER_SAID = "*** SIGTERM received"  # absl's FailureSignalHandler, which Ray installs


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class FrontStub(pb_grpc.ImageSearchStub):
    """The ImageSearch stub of a `cluster serve` front, and the front's process id."""

    def __init__(self, channel: grpc.Channel, pid: int) -> None:
        super().__init__(channel)
        self.pid = pid


@contextlib.contextmanager
def cluster_serve(
    address: str,
    index: Path,
    model: Path,
    log: Path,
    *flags: str,
    env: Mapping[str, str] | None = None,
) -> Iterator[FrontStub]:
    """`lookalike cluster serve INDEX` on the Ray cluster at `address`, once its health says
    SERVING; stopped with SIGTERM, which must end it cleanly: by the server's own handler, not
    by Ray's crash handler, which aborts the process 3 s later (`RAY_CRASH_HANDLER_SAID`)."""
    command = [sys.executable, "-m", "lookalike.cli", "cluster", "serve", str(index)]
    command += ["--model-dir", str(model), "--ray-address", address]
    command += ["--port", "0", "--embed-cpus", "0.5", "--watch-interval-s", "0.2", *flags]
    with log.open("w") as output:
        # a crash prints every thread's Python stack into the log the assertion below shows
        crash_stacks = {**(env or os.environ), "PYTHONFAULTHANDLER": "1"}
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=crash_stacks
        )
    try:
        port = listening_port(process, log, timeout=180)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=SERVICE)

            def serving() -> bool:
                assert process.poll() is None, log.read_text()
                with contextlib.suppress(grpc.RpcError):
                    return health.Check(request, timeout=5).status == SERVING
                return False

            wait_for(serving, seconds=180)
            yield FrontStub(channel, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(60)
        said = log.read_text()
        assert returncode == 0, f"exit status {returncode}:\n{said}"
        assert RAY_CRASH_HANDLER_SAID not in said, said
