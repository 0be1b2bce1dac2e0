"""The embedded Ray (the one `ray_session` starts for the offline commands, ingest and
build-index, and for `--shards-on-ray` without an address) is unreachable from the network:
every socket its processes listen on is on loopback, and its GCS refuses a caller without this
machine's Ray token, whatever RAY_AUTH_MODE says."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from lookalike.server.cluster.ray_session import _wants_token
from tests.reliability.process import listening_sockets, process_tree

# joins nothing: starts the embedded Ray, runs a task (so a worker listens too), says the
# GCS address, and holds the session until told to end it
HOLD_A_SESSION = """
import sys
import ray
from lookalike.server.cluster.ray_session import ray_session

with ray_session(None, quiet=True):
    ray.get(ray.remote(lambda: 1).remote())
    print(ray.get_runtime_context().gcs_address, flush=True)
    sys.stdin.readline()
"""
STARTUP_S = 240


@contextlib.contextmanager
def embedded_ray(home: Path) -> Iterator[tuple[int, str]]:
    """(pid, GCS address) of a process holding an embedded Ray session; the user's
    environment says RAY_AUTH_MODE=disabled, which must not open it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    environment.update(HOME=str(home), RAY_AUTH_MODE="disabled")
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_SESSION],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=environment,
        text=True,
    )
    stdin, stdout = process.stdin, process.stdout
    assert stdin is not None
    assert stdout is not None
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(STARTUP_S)
    try:
        gcs = said[0].strip() if said else ""
        assert gcs, f"no GCS address within {STARTUP_S}s"
        yield process.pid, gcs
    finally:
        with contextlib.suppress(BrokenPipeError):
            stdin.write("\n")
            stdin.flush()
        try:
            process.wait(120)
        finally:
            process.kill()


def test_the_embedded_ray_listens_on_loopback_only_and_wants_the_token(tmp_path: Path) -> None:
    with embedded_ray(tmp_path) as (pid, gcs):
        members = process_tree(pid)
        sockets = {(member, s) for member in members for s in listening_sockets(member)}
        assert len(members) > 3, "no Ray processes: the test's premise changed"
        assert len(sockets) > 3, "Ray's services listen on nothing: the test's premise changed"
        beyond = {
            (member, s) for member, s in sockets if not ipaddress.ip_address(s.address).is_loopback
        }
        assert not beyond, [(member, s, command_line(member)) for member, s in beyond]
        assert _wants_token(gcs), "the GCS answers a caller without a token"


def command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:120]
    return "(ended)"
