"""The `lookalike` command end to end against a real server on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from client.cli import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_UNREACHABLE, main
from tests.server.images import natural
from tests.server.serving import config_for, running_server


@pytest.fixture(scope="module")
def server_address(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(config_for(tiny_export, tmp_path_factory.mktemp("data"))) as server:
        yield server.address


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good images (one in a subfolder), a broken one, and a byte-identical duplicate."""
    root = tmp_path_factory.mktemp("photos")
    (root / "nested").mkdir()
    for i in range(5):
        natural(200 + 20 * i, 150, seed=i).save(root / f"photo-{i}.jpg", quality=92)
    natural(120, 160, seed=9).save(root / "nested" / "deep.png")
    (root / "copy-of-photo-2.jpg").write_bytes((root / "photo-2.jpg").read_bytes())
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "notes.txt").write_text("not an image file; ignored")
    return root


def run(capsys: pytest.CaptureFixture[str], address: str, *argv: str) -> tuple[int, str, str]:
    code = main(["--server", address, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_index_search_stats_get_delete(
    server_address: str, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, server_address, "index", str(folder), "-r", "-m", "album=test")
    assert code == 0
    assert "7 stored, 0 already indexed, 1 failed (of 8 image files" in out
    assert "failed  broken.jpg: " in out

    code, out, _ = run(capsys, server_address, "index", str(folder), "--recursive")
    assert "0 stored, 7 already indexed, 1 failed" in out  # only the broken one is retried

    code, out, _ = run(capsys, server_address, "search", str(folder / "photo-3.jpg"), "--json")
    assert code == 0
    results = json.loads(out)  # nothing but the JSON array on stdout
    assert results[0]["id"] == "photo-3.jpg"
    assert results[0]["score"] >= 0.999
    assert results[0]["metadata"]["album"] == "test"

    code, out, _ = run(capsys, server_address, "search", str(folder / "photo-2.jpg"), "-k", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "score", "id", "metadata"]
    assert {lines[1].split()[2], lines[2].split()[2]} == {"photo-2.jpg", "copy-of-photo-2.jpg"}

    page = tmp_path / "results.html"
    code, out, _ = run(
        capsys,
        server_address,
        "search",
        "--id",
        "nested/deep.png",
        "-k",
        "3",
        "--html",
        str(page),
        "--filter",
        "album=test",
    )
    assert code == 0
    html = page.read_text()
    assert "id nested/deep.png" in html  # the query
    assert html.count("data:image/jpeg;base64,") == 4  # query + 3 results, from their files
    assert "nested/deep.png" not in out.split("\n", 1)[1].split()[:3]  # itself excluded

    vector_file = tmp_path / "query.npy"
    np.save(vector_file, np.ones(16, dtype=np.float32))
    code, out, _ = run(capsys, server_address, "search", "--vector", str(vector_file), "-k", "1")
    assert code == 0
    assert len(out.splitlines()) == 2

    code, out, _ = run(capsys, server_address, "stats", "--json")
    assert json.loads(out)["items"] == 7
    code, out, _ = run(capsys, server_address, "get", "photo-1.jpg", "--json")
    assert json.loads(out)["metadata"]["album"] == "test"
    code, out, _ = run(capsys, server_address, "delete", "photo-1.jpg", "nope")
    assert "deleted 1" in out
    assert "not found  nope" in out
    code, _, err = run(capsys, server_address, "get", "photo-1.jpg")
    assert code == EXIT_NOT_FOUND
    assert "photo-1.jpg" in err


def test_errors_are_one_line_with_an_exit_code(
    server_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "127.0.0.1:1", "stats")
    assert code == EXIT_UNREACHABLE
    assert err.startswith("lookalike: cannot reach a Lookalike server at 127.0.0.1:1")
    assert len(err.strip().splitlines()) == 1

    code, _, err = run(capsys, server_address, "search", str(tmp_path / "absent.jpg"))
    assert code == EXIT_BAD_INPUT
    assert "cannot read" in err

    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    code, _, err = run(capsys, server_address, "search", str(tmp_path / "bad.jpg"))
    assert code == EXIT_BAD_INPUT
    assert "not an image" in err

    code, _, err = run(capsys, server_address, "search", "--id", "x", "--filter", "oops")
    assert code == EXIT_BAD_INPUT
    assert "KEY=VALUE" in err
