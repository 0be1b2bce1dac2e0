"""`python -m lookalike.server` as an operator runs it, for the tests that start it as a process,
and what the operating system says it listens on."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

STARTUP_TIMEOUT = 120
LOOPBACK = "127.0.0.1"  # the --host ServerProcess gives, and the server's default


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


class Listener(NamedTuple):
    """A socket that accepts from anyone who can reach its address: a listening TCP socket, or
    an unconnected UDP socket bound to a port."""

    protocol: str  # "tcp" or "udp"
    address: str
    port: int


def announced_listeners(log: Path, host: str) -> dict[str, Listener]:
    """What a started server's `listening on` line names, by transport (gRPC; HTTP and metrics
    where they are on): TCP listeners on its ports, on `host`, the address it was given."""
    line = next(line for line in log.read_text().splitlines() if "listening on" in line)
    patterns = {
        "gRPC": r"listening on [^ ]+:(\d+) ",
        "HTTP": r"HTTP on https?://[^ ]+:(\d+)/",
        "metrics": r"metrics on http://[^ ]+:(\d+)/metrics",
    }
    found = {name: re.search(pattern, line) for name, pattern in patterns.items()}
    return {name: Listener("tcp", host, int(port[1])) for name, port in found.items() if port}


def process_tree(pid: int) -> list[int]:
    """`pid` and every process descended from it (from each process's parent in /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # ended while being read
            # the command name, in parentheses, may hold spaces: the fields after it are plain
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
    tree = [pid]
    for member in tree:
        tree += [child for child, parent in parents.items() if parent == member]
    return tree


TCP_LISTEN, UDP_UNCONNECTED = "0A", "07"  # the kernel's socket states, as /proc/net/* gives them


def listening_sockets(pid: int) -> set[Listener]:
    """The sockets process `pid` listens on (its threads' too; not its children's), from the
    kernel's own tables: its open sockets' inodes looked up in /proc/net/{tcp,udp}{,6}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed while being read
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    listeners = set()
    for protocol, state in (("tcp", TCP_LISTEN), ("udp", UDP_UNCONNECTED)):
        for table in (f"/proc/{pid}/net/{protocol}", f"/proc/{pid}/net/{protocol}6"):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                local, socket_state, inode = fields[1], fields[3], fields[9]
                if socket_state == state and inode in inodes:
                    address, port = local.split(":")
                    listeners.add(Listener(protocol, _kernel_address(address), int(port, 16)))
    return listeners


def listeners_by_process(pid: int) -> dict[int, set[Listener]]:
    """What process `pid` and each of its descendants listens on."""
    return {member: listening_sockets(member) for member in process_tree(pid)}


def _kernel_address(hex_address: str) -> str:
    """An address as /proc/net/* prints it (32-bit words in hex, each in the host's byte order),
    IPv4-mapped IPv6 ones as the IPv4 address they are (gRPC binds 127.0.0.1 as ::ffff:127.0.0.1
    on an IPv6 socket, which accepts exactly what a 127.0.0.1 socket does)."""
    words = [int(hex_address[i : i + 8], 16) for i in range(0, len(hex_address), 8)]
    address = ipaddress.ip_address(struct.pack(f"={len(words)}I", *words))
    return str(getattr(address, "ipv4_mapped", None) or address)


class ServerProcess:
    """`python -m lookalike.server` as an operator runs it, on a free loopback port."""

    def __init__(self, model_dir: Path, data_dir: Path, log: Path, *flags: str) -> None:
        self.log = log
        command = server_command(
            model_dir,
            data_dir,
            "--host",
            LOOPBACK,
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
                # a check that times out on a loaded machine is asked again, until the deadline
                with contextlib.suppress(grpc.RpcError):
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
