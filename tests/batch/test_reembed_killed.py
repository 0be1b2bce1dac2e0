"""`lookalike reembed` killed with SIGKILL mid-move (no cleanup of any kind runs), then run
again: the groups it committed stay, the rerun moves exactly the rest, and the new directory
serves every item once, its index rebuilt from the database (the killed run saved none)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from lookalike.batch.reembed import PAGE
from lookalike.cli import main
from lookalike.server.core import COMMIT_GROUP, STREAM_WINDOW
from lookalike.server.index.local_repository import DATABASE_FILE
from lookalike.server.index.store import StoreReader
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.reliability.process import clean_env
from tests.server.images import jpeg
from tests.server.serving import config_for, running_server

ITEMS = STREAM_WINDOW + 12  # the source read at STREAM_WINDOW blocks after one durable group
KILL_WITHIN_S = 120  # generous: the model loads and a group embeds on a loaded machine


def ids_in(data_dir: Path) -> list[str]:
    """Every item's id, in the order `reembed` reads them (row order)."""
    return [item.id for item in StoreReader(data_dir / DATABASE_FILE).items(PAGE)]


def wait_for_reader(fifo: Path, process: subprocess.Popen[bytes]) -> int:
    """Open `fifo` for writing once a reader has it open (the move is blocked reading it there);
    the descriptor keeps that reader blocked until closed."""
    deadline = time.monotonic() + KILL_WITHIN_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "reembed ended before reading the blocked source"
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: nobody reads it yet
                raise
        time.sleep(0.02)
    raise TimeoutError("reembed never read the blocked source")


def test_a_killed_move_leaves_its_committed_groups_and_a_rerun_moves_each_item_once(
    tiny_export: Path, siglip_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, old, new = tmp_path / "photos", tmp_path / "old", tmp_path / "new"
    folder.mkdir()
    for i in range(ITEMS):
        (folder / f"photo-{i:03d}.jpg").write_bytes(jpeg(40 + i % 9, 32, seed=i))
    with running_server(config_for(tiny_export, old)) as server:
        assert main(["--server", server.address, "index", str(folder)]) == 0
    capsys.readouterr()
    moved = ids_in(old)  # in the order reembed reads them
    # the item at STREAM_WINDOW reads its source from a FIFO: the move blocks there, with the
    # first COMMIT_GROUP items committed and the next ones embedded but not
    blocked = folder / moved[STREAM_WINDOW]
    blocked.rename(tmp_path / "kept.jpg")
    os.mkfifo(blocked)
    command = [sys.executable, "-m", "lookalike.cli", "reembed", str(old)]
    command += ["--model-dir", str(siglip_export), "-o", str(new)]
    with (tmp_path / "killed.log").open("w") as log:
        killed = subprocess.Popen(command, stdout=log, stderr=log, env=clean_env())
    try:
        writer = wait_for_reader(blocked, killed)
        killed.kill()
        os.close(writer)
    finally:
        killed.kill()
        killed.wait(60)
    assert ids_in(new) == moved[:COMMIT_GROUP]
    blocked.unlink()
    (tmp_path / "kept.jpg").rename(blocked)

    assert main(["reembed", str(old), "--model-dir", str(siglip_export), "-o", str(new)]) == 0
    said = capsys.readouterr().out
    assert f"{ITEMS - COMMIT_GROUP} embedded in" in said
    assert f"{COMMIT_GROUP} already there" in said
    assert sorted(ids_in(new)) == sorted(moved)  # each once
    with (
        running_server(config_for(siglip_export, new)) as served,
        grpc.insecure_channel(served.address) as channel,
    ):
        stub = pb_grpc.ImageSearchStub(channel)
        stats = stub.Stats(pb.StatsRequest(), timeout=30)
        assert (stats.items, stats.vectors) == (ITEMS, ITEMS)  # no vector twice, none orphaned
        for item_id in (moved[0], moved[-1]):  # moved by the killed run, and by the rerun
            stored = stub.Get(pb.GetRequest(id=item_id, include_vector=True), timeout=30)
            image = (folder / item_id).read_bytes()
            (fresh,) = stub.Embed(pb.EmbedRequest(images=[image]), timeout=30).embeddings
            np.testing.assert_allclose(stored.vector.values, fresh.values, atol=1e-6)
