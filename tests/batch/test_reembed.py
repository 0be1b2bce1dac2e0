"""`lookalike reembed`: a CLIP data directory moved to SigLIP while its server keeps serving;
every item embedded once with the new model, its metadata and regions kept, what cannot be
moved reported; resumed after an interruption; refused when there is nothing to move."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import numpy as np
import pytest

from lookalike.batch.reembed import FAILURES_FILE, ReembedSettings, reembed
from lookalike.cli import main
from lookalike.cli.common import EXIT_BAD_INPUT, EXIT_SOME_FAILED
from lookalike.client import Client, Region
from lookalike.client.files import SOURCE_PATH_KEY
from lookalike.server import core
from lookalike.server.errors import DataDirError
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.server.images import natural
from tests.server.serving import config_for, running_server

PHOTOS = 7


class StopRunError(Exception):
    """Raised from the progress callback: the run stops there, as on Ctrl-C."""


@pytest.fixture
def old_collection(tiny_export: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A CLIP data directory made the usual way: `lookalike index` of a folder (one image with
    a box), one item added as a vector, and one whose file is gone since."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(PHOTOS):
        natural(200 + 16 * i, 160, seed=i).save(folder / f"photo-{i}.jpg", quality=90)
    data = tmp_path / "old"
    with running_server(config_for(tiny_export, data)) as server:
        assert main(["--server", server.address, "index", str(folder), "-m", "set=a"]) == 0
        with Client(server.address) as client:
            client.add(
                "boxed",
                image=folder / "photo-0.jpg",
                metadata={SOURCE_PATH_KEY: str(folder / "photo-0.jpg")},
                regions=[Region(0.0, 0.0, 0.5, 0.5, "corner")],
            )
            client.add("as-vector", vector=np.ones(16, np.float32))
    (folder / f"photo-{PHOTOS - 1}.jpg").unlink()  # its item stays, its file is gone
    return folder, data


def test_a_collection_moves_to_a_new_model_while_the_old_one_serves(
    old_collection: tuple[Path, Path],
    tiny_export: Path,
    siglip_export: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder, old = old_collection
    new = tmp_path / "new"
    with running_server(config_for(tiny_export, old)) as serving:  # the old server serves on
        code = main(["reembed", str(old), "--model-dir", str(siglip_export), "-o", str(new)])
        out = capsys.readouterr().out
        assert code == EXIT_SOME_FAILED, out
        assert "random-init:tiny (clip, 16-d) -> random-init:siglip-tiny (siglip, 32-d)" in out
        assert f"{PHOTOS} embedded" in out  # 6 photos and the boxed one
        assert "2 not moved" in out
        with grpc.insecure_channel(serving.address) as channel:
            still = pb_grpc.ImageSearchStub(channel).Search(
                pb.SearchRequest(id="photo-1.jpg", k=3), timeout=30
            )
        assert still.matches[0].id == "photo-1.jpg"
    failures = {
        row["id"]: row for row in map(json.loads, (new / FAILURES_FILE).read_text().splitlines())
    }
    assert set(failures) == {"as-vector", f"photo-{PHOTOS - 1}.jpg"}
    assert "nothing to embed" in failures["as-vector"]["error"]
    assert "No such file" in failures[f"photo-{PHOTOS - 1}.jpg"]["error"]

    with running_server(config_for(siglip_export, new)) as server, Client(server.address) as client:
        assert client.stats().items == PHOTOS
        for i in range(PHOTOS - 1):
            item = client.get(f"photo-{i}.jpg", include_vector=True)
            assert item.metadata["set"] == "a"
            (expected,) = client.embed([folder / f"photo-{i}.jpg"])
            np.testing.assert_allclose(item.vector, expected, atol=1e-6)
        boxed = client.get("boxed")
        assert [(r.x1, r.y1, r.label) for r in boxed.regions] == [(0.5, 0.5, "corner")]
        found = client.search(image=folder / "photo-0.jpg", box=Region(0, 0, 0.5, 0.5), k=1)
        assert (found[0].id, found[0].region) == ("boxed", boxed.regions[0])

    again = main(["reembed", str(old), "--model-dir", str(siglip_export), "-o", str(new)])
    out = capsys.readouterr().out
    assert again == EXIT_SOME_FAILED  # the same two still cannot move
    assert "0 embedded in" in out
    assert f"{PHOTOS} already there" in out


def test_an_interrupted_move_resumes_and_embeds_each_item_once(
    old_collection: tuple[Path, Path],
    siglip_export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, old = old_collection
    settings = ReembedSettings(source=old, model_dir=siglip_export, output=tmp_path / "new")
    monkeypatch.setattr(core, "COMMIT_GROUP", 2)  # durable commits of two items, so that the
    monkeypatch.setattr(core, "STREAM_WINDOW", 2)  # interruption falls between two of them
    handled = []

    def interrupt_after_three(count: int) -> None:
        handled.append(count)
        if len(handled) == 3:
            raise StopRunError

    with pytest.raises(StopRunError):
        asyncio.run(reembed(settings, on_item=interrupt_after_three))
    summary = asyncio.run(reembed(settings))
    assert summary.already + summary.embedded == PHOTOS
    assert 2 <= summary.already < PHOTOS  # what was committed stayed; the rest was left
    assert summary.failed == 2


def test_moving_to_the_same_model_is_refused(
    old_collection: tuple[Path, Path], tiny_export: Path, tmp_path: Path
) -> None:
    _, old = old_collection
    settings = ReembedSettings(source=old, model_dir=tiny_export, output=tmp_path / "new")
    with pytest.raises(DataDirError, match="nothing to move"):
        asyncio.run(reembed(settings))
    code = main(["reembed", str(old), "--model-dir", str(tiny_export), "-o", str(old)])
    assert code == EXIT_BAD_INPUT
