"""`python -m lookalike.server` as an operator runs it, for the tests that start it as a process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

STARTUP_TIMEOUT = 120


def server_command(model_dir: Path, data_dir: Path, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lookalike.server",
        "--model-dir",
        str(model_dir),
        "--data-dir",
        str(data_dir),
        "--port",
        "0",
        *flags,
    ]


def clean_env() -> dict[str, str]:
    """This environment without LOOKALIKE_* settings, which would override the flags."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}


def listening_port(process: subprocess.Popen, log: Path, timeout: float = STARTUP_TIMEOUT) -> int:
    """The gRPC port a server started with `--port 0` names in its `listening on` line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text())
        if found:
            return int(found.group(1))
        assert process.poll() is None, log.read_text()
        time.sleep(0.05)
    raise TimeoutError(log.read_text())


class ServerProcess:
    """`python -m lookalike.server` as an operator runs it, on a free loopback port."""

    def __init__(self, model_dir: Path, data_dir: Path, log: Path, *flags: str) -> None:
        self.log = log
        command = server_command(
            model_dir,
            data_dir,
            "--host",
            "127.0.0.1",
            "--threads",
            "1",
            "--max-delay-ms",
            "2",
            *flags,
        )
        with log.open("w") as stream:
            self.process = subprocess.Popen(command, stderr=stream, stdout=stream, env=clean_env())
        self.port = listening_port(self.process, log)
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while time.monotonic() < deadline:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                assert self.process.poll() is None, self.log.read_text()
                time.sleep(0.05)
        raise TimeoutError(self.log.read_text())

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(60) == 0, self.log.read_text()
