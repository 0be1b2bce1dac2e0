"""Faults aimed at one `lookalike ingest` run's own processes, and what shows they landed:
the run's Ray job (from the GCS job table), the workers of that job busy on a node (as the
node's raylet reports them, which `ray memory` asks too), each checked in /proc at the moment
of the fault; and the run as a driver process of its own, its output kept in a file. Ray's
state API (`ray.util.state`) would need the dashboard, which a head node started on this busy
machine does not always have."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import ray._private.state
from ray._private.internal_api import node_stats
from ray._private.node import Node

T = TypeVar("T")
EMBEDDER = "_Embedder"  # ingest's embedding actor class, in the title Ray gives its process
# ingest's stages that handle images (read and prepare, embed, write), as their workers' titles
# name them; its listing's reads and its progress counter do not
IMAGE_STAGES = ("_prepare_batch", EMBEDDER, "_write_partition")
# how the title of a Ray Data map actor's process ends while it runs a batch
BATCH_METHOD = ".submit"
POLL_S = 0.1  # asking a raylet or the GCS again
BRIEF_POLL_S = 0.02  # looking for what may last a moment: a running task, the first part
JOIN_TIMEOUT_S = 60  # a thread asking a raylet (its timeout: 30 s), once told to stop
DRIVER_PARTITIONS = 16  # the partitions of a dataset `ingest_driver` makes


def process_title(pid: int) -> str:
    """The title process `pid` runs under (a Ray worker's: `ray::IDLE`, `ray::<task or
    actor>`); "" once it has ended (a zombie's is empty too)."""
    with contextlib.suppress(OSError):
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        return command_line.split(b"\0")[0].decode(errors="replace").strip()
    return ""


def written_parts(output: Path) -> list[Path]:
    """The partitions a run has written into the dataset at `output` so far."""
    return sorted((output / "parts").glob("part-*.parquet"))


@dataclasses.dataclass(frozen=True)
class Worker:
    """A worker process of a run's job, as its node's raylet reported it, and its title in
    /proc just after ("" once it has ended)."""

    pid: int
    actor_id: str  # hex; "" for a task's worker
    running: int  # tasks it was running
    title: str

    @property
    def handling_images(self) -> bool:
        """Running one of `IMAGE_STAGES` (an actor: a batch), and alive and titled for it."""
        stage = self.title.startswith("ray::") and any(s in self.title for s in IMAGE_STAGES)
        batch = not self.actor_id or self.title.endswith(BATCH_METHOD)
        return self.running > 0 and stage and batch


def job_workers(nodes: Sequence[Node], job_id: str) -> list[Worker]:
    """The worker processes of job `job_id` that the raylets of `nodes` report."""
    found = []
    for node in nodes:
        reply = node_stats(node.node_ip_address, node.node_manager_port, include_memory_info=False)
        for stats in reply.core_workers_stats:
            if stats.job_id.hex() == job_id:
                actor = "" if set(stats.actor_id) <= {0xFF} else stats.actor_id.hex()
                title = process_title(stats.pid)
                found.append(Worker(stats.pid, actor, stats.num_running_tasks, title))
    return found


def restarts(actor_id: str) -> int:
    """How many times Ray has restarted the actor (the GCS keeps a dead actor's record)."""
    return int(ray._private.state.actors(actor_id=actor_id)["NumRestarts"])


@dataclasses.dataclass(frozen=True)
class Driver:
    """`lookalike ingest` as a driver process of its own, all its output in `log`."""

    process: subprocess.Popen[bytes]
    log: Path

    def said(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(
        self, what: str, probe: Callable[[], T], timeout: float = 120, every: float = POLL_S
    ) -> T:
        """What `probe` returns once that is truthy, asked `every` so many seconds while the
        driver runs; fails, with the driver's output, once the driver has ended or `timeout`
        has passed."""
        deadline = time.monotonic() + timeout
        while not (found := probe()):
            assert self.process.poll() is None, (
                f"the driver ended (exit status {self.process.returncode}) before {what}:\n"
                f"{self.said()}"
            )
            assert time.monotonic() < deadline, f"no {what} in {timeout} s:\n{self.said()}"
            time.sleep(every)
        return found

    def job_id(self) -> str:
        """The Ray job of this driver, once it has joined the cluster this process has."""

        def jobs() -> list[str]:
            listed = ray._private.state.jobs()
            return [job["JobID"] for job in listed if job["DriverPid"] == self.process.pid]

        return self.wait_for("the driver's Ray job", jobs)[-1]


@contextlib.contextmanager
def ingest_driver(
    folder: Path, model: Path, output: Path, address: str, log: Path
) -> Iterator[Driver]:
    """`lookalike ingest` of `folder` on the cluster at `address` (`DRIVER_PARTITIONS`, f32
    vectors), as a separate driver process; SIGKILLed on the way out if still running."""
    command = [
        str(Path(sys.executable).parent / "lookalike"),
        *("ingest", str(folder), "--model-dir", str(model), "-o", str(output)),
        *("--partitions", str(DRIVER_PARTITIONS), "--vector-dtype", "f32", "--address", address),
    ]
    with log.open("wb") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
    try:
        yield Driver(process, log)
    finally:
        process.kill()  # nothing, once it has ended
        process.wait(30)


@dataclasses.dataclass(frozen=True)
class Kill:
    """A SIGKILL that found its victim alive and at work: the worker, when
    (`time.monotonic()`), and how many partitions the run had written by then."""

    victim: Worker
    at: float
    parts_written: int


class EmbedderKiller:
    """While its block runs, a thread SIGKILLs one embedding actor of job `job_id` on `nodes`
    (not one there on entry: an earlier run's) while it embeds a batch, as its raylet reports
    and its title in /proc says at that moment; the block's end stops the thread and joins
    it."""

    def __init__(self, nodes: Sequence[Node], job_id: str, output: Path) -> None:
        self.nodes, self.job_id, self.output = nodes, job_id, output
        self.kill: Kill | None = None
        self.error: Exception | None = None
        self._spared: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="embedder-killer", daemon=True)

    def __enter__(self) -> EmbedderKiller:
        self._spared = {worker.actor_id for worker in self._embedders()}
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT_S)
        assert not self._thread.is_alive(), "the killer thread did not stop"
        if self.error is not None and value is None:
            raise self.error

    def _embedders(self) -> list[Worker]:
        return [w for w in job_workers(self.nodes, self.job_id) if EMBEDDER in w.title]

    def _run(self) -> None:
        try:
            while not self._stop.wait(POLL_S):
                for worker in self._embedders():
                    embedding = worker.handling_images and worker.actor_id not in self._spared
                    if embedding and self._sigkill(worker):
                        return
        except Exception as exc:  # raised in the test's thread, by __exit__
            self.error = exc

    def _sigkill(self, worker: Worker) -> bool:
        if process_title(worker.pid) != worker.title:  # done with that batch, or ended
            return False
        try:
            os.kill(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        at = time.monotonic()
        # counted after the kill: a part written before it is surely among them
        self.kill = Kill(worker, at, len(written_parts(self.output)))
        return True
