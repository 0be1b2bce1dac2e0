"""Lookalike on a Ray cluster started the way users start one: `ray start --head` with token
authentication on (as it is where a Ray token exists) and a second node joined with
`ray start --address`, both on 127.0.0.1; the commands join it by address from processes that
know nothing but the address and this machine's token file: ingest, build-index, cluster serve.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pyarrow.parquet as pq
import pytest

from benchmarks.common import free_port
from lookalike.cli.common import EXIT_UNREACHABLE
from lookalike.v1 import lookalike_pb2 as pb
from tests.ray_commands import cluster_serve
from tests.server.images import natural

IMAGES = 6
RAY_VARIABLES = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home of its own: Ray keeps the token in ~/.ray/auth_token there."""
    return tmp_path_factory.mktemp("home")


def environment(home: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in RAY_VARIABLES}
    return {**clean, "HOME": str(home), **extra}


def ray(home: Path, *arguments: str, groups: list[int] | None = None, **extra: str) -> None:
    """`ray ARGUMENTS`; a `ray start` in a process group of its own, which the node's processes
    keep after it returns: its id goes to `groups`, for `stop_nodes`."""
    command = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert command is not None, "the cluster extra installs the `ray` command"
    process = subprocess.Popen(
        [command, *arguments],
        env=environment(home, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=groups is not None,
    )
    if groups is not None:
        groups.append(process.pid)
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr[-3000:]


class Process(NamedTuple):
    name: str
    parent: int
    group: int
    started: int  # clock ticks after boot: with the pid, names this process and no later one


def live_processes() -> dict[int, Process]:
    """Every process but zombies, from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):  # ended while being read
            text = stat.read_text()
            fields = text.rpartition(")")[2].split()
            if fields[0] != "Z":
                name = text[text.index("(") + 1 : text.rindex(")")]
                parent, group, started = int(fields[1]), int(fields[2]), int(fields[19])
                table[int(stat.parent.name)] = Process(name, parent, group, started)
    return table


def node_processes(groups: Sequence[int]) -> dict[int, Process]:
    """The processes `ray start` left in these groups, and what they started since (Ray's
    workers, each in a group of its own under its raylet)."""
    table = live_processes()
    found = {pid for pid, process in table.items() if process.group in groups}
    while children := {pid for pid, process in table.items() if process.parent in found} - found:
        found |= children
    return {pid: table[pid] for pid in found}


def stop_nodes(groups: Sequence[int], grace_s: float = 10) -> None:
    """What `ray stop` does, for these nodes alone (it stops every Ray on the machine):
    SIGTERM to the raylets, then to the rest but the GCS, then to the GCS, each given `grace_s`
    before SIGKILL. A process is known by its pid and start time: a pid reused meanwhile by
    another process is left alone."""
    processes = node_processes(groups)
    raylets = {(pid, p.started) for pid, p in processes.items() if p.name == "raylet"}
    gcs = {(pid, p.started) for pid, p in processes.items() if p.name == "gcs_server"}
    rest = {(pid, p.started) for pid, p in processes.items()} - raylets - gcs

    def alive(bucket: set[tuple[int, int]]) -> set[tuple[int, int]]:
        return bucket & {(pid, p.started) for pid, p in live_processes().items()}

    for bucket in (raylets, rest, gcs):
        for pid, _ in bucket:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while alive(bucket) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid, _ in alive(bucket):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (left := node_processes(groups)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"Ray processes of this test outlived SIGKILL: {left}"


@pytest.fixture(scope="module")
def head(home: Path) -> Iterator[str]:
    """The cluster's address: a head node and a worker node, one CPU each."""
    # As Ray's security guide says: a token, then the nodes, which then require it (Ray 2.60
    # also turns token mode on for any cluster started where a token already exists, such as
    # one a local `ray.init()` left behind)
    ray(home, "get-auth-token", "--generate")
    address = f"127.0.0.1:{free_port()}"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    port = address.rsplit(":", 1)[1]
    groups: list[int] = []  # this test's nodes: only these are stopped, never another Ray
    try:
        ray(
            home,
            "start",
            "--head",
            "--port",
            port,
            "--include-dashboard",
            "false",
            *common,
            groups=groups,
        )
        # a node joining a cluster with token auth needs the mode set, as Ray's guide says
        ray(home, "start", "--address", address, *common, groups=groups, RAY_AUTH_MODE="token")
        yield address
    finally:
        stop_nodes(groups)


def lookalike(home: Path, *arguments: str, **extra: str) -> subprocess.CompletedProcess[str]:
    (result,) = lookalikes(home, (arguments, extra))
    return result


def lookalikes(
    home: Path, *runs: tuple[Sequence[str], dict[str, str]]
) -> list[subprocess.CompletedProcess[str]]:
    """`lookalike ARGUMENTS` with these extra environment variables, for each run at once
    (a refused join waits on Ray's timeouts, not on the CPU)."""
    started = [
        (
            arguments,
            subprocess.Popen(
                [sys.executable, "-m", "lookalike.cli", *arguments],
                env=environment(home, **extra),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for arguments, extra in runs
    ]
    results = []
    for arguments, process in started:
        out, err = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(arguments, process.returncode, out, err))
    return results


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for n in range(IMAGES):
        natural(200, 150, seed=n).save(folder / f"photo-{n}.jpg", quality=90)
    return folder


@pytest.fixture(scope="module")
def dataset(
    head: str, home: Path, tiny_export: Path, photos: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    output = tmp_path_factory.mktemp("dataset")
    arguments = ["--model-dir", str(tiny_export), "--output", str(output), "--actors", "1"]
    result = lookalike(home, "ingest", str(photos), *arguments, "--address", head)
    assert result.returncode == 0, result.stderr[-3000:]
    return output


def test_ingest_joins_a_ray_start_cluster_with_its_default_token(dataset: Path) -> None:
    rows = pq.ParquetDataset(dataset / "parts").read().to_pylist()
    assert sorted(row["id"] for row in rows) == [f"photo-{n}.jpg" for n in range(IMAGES)]


def test_build_index_and_cluster_serve_run_on_it(
    head: str, home: Path, dataset: Path, photos: Path, tiny_export: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    built = lookalike(home, "build-index", str(dataset), "--output", str(index), "--address", head)
    assert built.returncode == 0, built.stderr[-3000:]
    log = tmp_path / "front.log"
    with cluster_serve(head, index, tiny_export, log, env=environment(home)) as served:
        query = (photos / "photo-3.jpg").read_bytes()
        matches = served.Search(pb.SearchRequest(image=query, k=3), timeout=60).matches
        assert matches[0].id == "photo-3.jpg"
        assert matches[0].score == pytest.approx(1.0, abs=2e-3)  # bf16 shards
        assert served.Stats(pb.StatsRequest(), timeout=30).items == IMAGES


def test_a_wrong_token_is_refused_with_what_to_check(
    head: str, home: Path, tiny_export: Path, photos: Path, tmp_path: Path
) -> None:
    arguments = ["ingest", str(photos), "--model-dir", str(tiny_export), "--address", head]
    # Ray retries a refused join 20 times a second apart, as if the head were still starting;
    # its own setting for that wait makes each try here take ~3 s instead of ~20 s
    retries = {"RAY_gcs_server_port_wait_time_s": "3"}
    wrong_token, no_token, tokenless_machine = lookalikes(
        home,
        (
            [*arguments, "--output", str(tmp_path / "wrong")],
            {"RAY_AUTH_TOKEN": "not-the-token", **retries},
        ),
        # the cluster does require a token: joined without one (mode chosen: no second try)
        (
            [*arguments, "--output", str(tmp_path / "none")],
            {"RAY_AUTH_MODE": "disabled", **retries},
        ),
        # a machine with no Ray token at all: the cluster is asked first, so this is said
        # before any join is tried
        ([*arguments, "--output", str(tmp_path / "tokenless")], {"HOME": str(tmp_path)}),
    )
    assert wrong_token.returncode == EXIT_UNREACHABLE, wrong_token.stderr[-3000:]
    last = wrong_token.stderr.strip().splitlines()[-1]
    assert last.startswith(f"lookalike: cannot join the Ray cluster at {head}"), last
    assert "ray get-auth-token" in last
    assert not list((tmp_path / "wrong").glob("parts/*.parquet"))
    assert no_token.returncode == EXIT_UNREACHABLE, no_token.stderr[-3000:]
    assert "RAY_AUTH_MODE=disabled" in no_token.stderr
    assert tokenless_machine.returncode == EXIT_UNREACHABLE, tokenless_machine.stderr[-3000:]
    last = tokenless_machine.stderr.strip().splitlines()[-1]
    assert "it requires a Ray token" in last, last
    assert "copy its head node's ~/.ray/auth_token" in last
