"""The `lookalike` command end to end against a real server on loopback."""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.cli import build_parser, main
from lookalike.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_NOT_FOUND,
    EXIT_SOME_FAILED,
    EXIT_UNREACHABLE,
    Progress,
)
from lookalike.client import Client, Example, Region
from lookalike.client.report import BOX_COLOUR
from lookalike.server.regions import GRID, grid_regions
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
    assert code == EXIT_SOME_FAILED
    assert "7 stored, 0 already indexed, 1 failed (of 8 image files" in out
    assert "failed  broken.jpg: " in out

    code, out, _ = run(capsys, server_address, "index", str(folder), "--recursive")
    assert "0 stored, 7 already indexed, 1 failed" in out  # only the broken one is retried
    assert code == EXIT_SOME_FAILED  # the same rule on a re-run: the folder is not all indexed

    code, out, _ = run(capsys, server_address, "search", str(folder / "photo-3.jpg"), "--json")
    assert code == 0
    results = json.loads(out)  # nothing but the JSON array on stdout
    assert results[0]["id"] == "photo-3.jpg"
    assert results[0]["score"] >= 0.999
    assert results[0]["metadata"]["album"] == "test"

    code, out, _ = run(capsys, server_address, "search", str(folder / "photo-2.jpg"), "-k", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "score", "id", "matched", "by", "metadata"]
    assert lines[1].split()[3:5] == ["whole", "image"]
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


def test_search_with_several_images_and_one_not_to_find(
    server_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lookalike search a.jpg b.jpg --not c.jpg` searches with normalise(mean(a, b) - 0.5 c):
    the scores printed are those of that vector against each stored one."""
    files = []
    for i in range(4):
        path = tmp_path / f"several-{i}.jpg"
        natural(180 + 10 * i, 140, seed=60 + i).save(path, quality=90)
        files.append(path)
    with Client(server_address) as client:
        for path in files:
            client.add(path.name, image=path, metadata={"set": "several"})
        a, b, c, _ = client.embed(files)
        query = (a + b) / 2 - 0.5 * c
        query /= np.linalg.norm(query)
        stored = {p.name: client.get(p.name, include_vector=True).vector for p in files}
    arguments = [str(files[0]), str(files[1]), "--not", str(files[2]), "-f", "set=several"]
    code, out, _ = run(capsys, server_address, "search", *arguments, "-k", "4", "--json")
    assert code == 0
    got = {match["id"]: match["score"] for match in json.loads(out)}
    assert set(got) == {path.name for path in files}
    for item_id, score in got.items():
        assert score == pytest.approx(float(stored[item_id] @ query), abs=1e-5)
    assert max(got, key=got.__getitem__) in {"several-0.jpg", "several-1.jpg"}
    assert min(got, key=got.__getitem__) == "several-2.jpg"

    code, _, err = run(capsys, server_address, "search", "--not", str(files[2]))
    assert code == EXIT_BAD_INPUT
    assert "give a query" in err


def test_regions_are_indexed_searched_by_box_and_drawn_on_the_page(
    server_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "scenes"
    folder.mkdir()
    for i in range(3):
        natural(240, 180, seed=40 + i).save(folder / f"scene-{i}.png")
    code, out, _ = run(
        capsys, server_address, "index", str(folder), "--regions", "grid", "-m", "set=scenes"
    )
    assert code == 0, out
    code, out, _ = run(capsys, server_address, "get", "scene-1.png", "--json")
    regions = json.loads(out)["regions"]
    assert len(regions) == len(grid_regions(GRID))
    assert regions[0] == {"x0": 0.0, "y0": 0.0, "x1": 0.5, "y1": 0.5, "label": ""}

    query, page = str(folder / "scene-1.png"), tmp_path / "boxed.html"
    arguments = ["search", query, "--box", "0,0,0.5,0.5", "-k", "2", "-f", "set=scenes"]
    code, out, _ = run(capsys, server_address, *arguments, "--json")
    best = json.loads(out)[0]
    assert best["id"] == "scene-1.png"
    assert best["score"] == pytest.approx(1.0, abs=1e-4)
    assert best["region"] == {"x0": 0.0, "y0": 0.0, "x1": 0.5, "y1": 0.5, "label": ""}
    code, out, _ = run(capsys, server_address, *arguments, "--html", str(page))
    assert "region 0,0-0.5,0.5" in out.splitlines()[1]
    html = page.read_text()
    assert "matched by the region 0,0-0.5,0.5" in html
    # the box is drawn on the query's thumbnail and on the first match's
    query_thumb, first_match = (
        Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB")
        for uri in re.findall(r"data:image/jpeg;base64,([^\"]+)", html)[:2]
    )
    for thumbnail in (query_thumb, first_match):
        on_box = np.asarray(thumbnail.getpixel((thumbnail.width // 4, 1)), dtype=int)
        assert np.abs(on_box - BOX_COLOUR).max() < 60, on_box  # the box's top edge
    # a box goes with the first image when there are negatives and more positives too
    several = [query, str(folder / "scene-0.png"), "--not", str(folder / "scene-2.png")]
    options = ["-k", "2", "-f", "set=scenes", "--json"]
    code, out, _ = run(capsys, server_address, "search", *several, "--box", "0,0,0.5,0.5", *options)
    assert code == 0
    with Client(server_address) as client:
        expected = client.search(
            image=folder / "scene-1.png",
            box=Region(0, 0, 0.5, 0.5),
            positives=[Example(image=folder / "scene-0.png")],
            negatives=[Example(image=folder / "scene-2.png")],
            k=2,
            filter={"set": "scenes"},
        )
    assert [(m["id"], m["score"]) for m in json.loads(out)] == [
        (m.id, pytest.approx(m.score, abs=1e-6)) for m in expected
    ]
    whole = run(capsys, server_address, "search", *several, *options)[1]
    assert json.loads(whole) != json.loads(out)  # the box changed the query
    code, _, err = run(capsys, server_address, "search", "--text", "x", "--box", "0,0,1,1")
    assert code == EXIT_BAD_INPUT
    assert "--box goes with a query image" in err
    with pytest.raises(SystemExit) as exit_info:
        run(capsys, server_address, "search", query, "--box", "0,0,1")
    assert exit_info.value.code == 2
    assert "x0,y0,x1,y1" in capsys.readouterr().err
    # the other tests of this module search the whole collection by whole images
    code, out, _ = run(capsys, server_address, "delete", *(f"scene-{i}.png" for i in range(3)))
    assert "deleted 3" in out


def test_search_by_text_prints_the_table_json_and_a_page_with_the_text(
    server_address: str, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(capsys, server_address, "index", str(folder))
    assert code in (0, EXIT_SOME_FAILED)  # broken.jpg fails, and may already be indexed
    query = "a small <b>red</b> boat, at dawn"
    code, out, _ = run(capsys, server_address, "search", "--text", query, "-k", "3", "--json")
    assert code == 0
    results = json.loads(out)
    assert len(results) == 3
    with Client(server_address) as client:  # the scores are cosines to the text's embedding
        (text_vector,) = client.embed(texts=[query])
        stored = client.get(results[0]["id"], include_vector=True).vector
    assert stored is not None
    assert results[0]["score"] == pytest.approx(float(text_vector @ stored), abs=1e-4)

    page = tmp_path / "text.html"
    code, out, _ = run(
        capsys, server_address, "search", "-t", query, "-k", "3", "--html", str(page)
    )
    assert code == 0
    assert out.splitlines()[0].split() == ["rank", "score", "id", "matched", "by", "metadata"]
    html = page.read_text()
    assert '<blockquote class="query-text">a small &lt;b&gt;red&lt;/b&gt; boat, at dawn' in html
    assert html.count("<article") == 3

    code, out, _ = run(capsys, server_address, "stats")
    assert "text        int8" in out
    assert re.search(
        r"^model       tiny \(clip\), 16-d, RANDOM WEIGHTS.*sha256 [0-9a-f]{16}$", out, re.M
    )


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
    assert f"lookalike: {tmp_path / 'bad.jpg'}: not an image" in err

    (tmp_path / "notes.txt").write_text("a vector? no")
    code, _, err = run(capsys, server_address, "search", "--vector", str(tmp_path / "notes.txt"))
    assert code == EXIT_BAD_INPUT
    assert "notes.txt is not a .npy file" in err
    assert "pickle" not in err

    code, _, err = run(capsys, server_address, "search", "--id", "x", "--filter", "oops")
    assert code == EXIT_BAD_INPUT
    assert "KEY=VALUE" in err


def test_an_empty_index_says_so(
    tiny_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    natural(100, 80).save(tmp_path / "query.jpg")
    with running_server(config_for(tiny_export, tmp_path / "data")) as server:
        code, out, _ = run(capsys, server.address, "search", str(tmp_path / "query.jpg"))
    assert code == 0
    assert "no matches: the index is empty" in out


def test_connection_options_work_before_and_after_the_command(
    server_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "127.0.0.1:1", "stats", "--server", server_address, "--json")
    assert code == 0, "the option after the command wins"
    assert json.loads(out)["dims"] > 0
    assert main(["stats", "--server", server_address, "--timeout", "20"]) == 0


def test_every_option_and_command_is_explained(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in [("lookalike", parser), *commands.choices.items()]:
        for action in command._actions:
            if action is not commands:
                assert action.help, f"{name} {action.option_strings or action.dest}"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "7  index: some files failed" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["stats"], ["search", "--id", "photo-3.jpg"]])
def test_a_closed_pipe_ends_quietly(server_address: str, folder: Path, command: list[str]) -> None:
    """`lookalike stats | head -2`: the reader goes away, the command ends without a trace."""
    main(["--server", server_address, "index", str(folder)])
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line is written
    result = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", "--server", server_address, *command],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )
    os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == EXIT_BROKEN_PIPE


def test_index_progress_clock_starts_with_the_first_result() -> None:
    progress = Progress(total=10, disable=False, file=io.StringIO())
    time.sleep(0.5)  # the server warms up and commits its first group
    progress.update(1)
    assert progress.format_dict["elapsed"] < 0.4
    progress.close()


def test_a_server_that_answers_unavailable_is_not_called_unreachable(
    tiny_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Listening but still loading: the server says UNAVAILABLE itself."""
    with running_server(config_for(tiny_export, tmp_path / "data"), load=False) as server:
        code, _, err = run(capsys, server.address, "stats")
    assert code == EXIT_UNREACHABLE
    assert "cannot reach" not in err
    assert f"server {server.address} is unavailable (the server is starting" in err


def test_help_loads_neither_the_index_nor_the_runtime() -> None:
    """`lookalike --help` (and every command's start) stays light: no USearch, no ONNX Runtime,
    no torch, no Ray until a command needs them."""
    code = (
        "import sys\n"
        "from lookalike import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = {'usearch', 'onnxruntime', 'torch', 'ray', 'pyarrow', 'transformers'}\n"
        "print('loaded:', sorted(heavy & {name.split('.')[0] for name in sys.modules}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip().endswith("loaded: []"), result.stdout


def test_get_names_each_region_once(
    server_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "yard.png"
    natural(200, 160, seed=70).save(image)
    with Client(server_address) as client:
        box = Region(0, 0, 0.5, 0.5, label="forklift")
        client.add("yard.png", image=image, metadata={"set": "get"}, regions=[box])
    code, out, _ = run(capsys, server_address, "get", "yard.png")
    assert run(capsys, server_address, "delete", "yard.png")[0] == 0  # the others search all
    assert code == 0
    assert out.splitlines() == ["yard.png", "  set = get", "  region 0,0-0.5,0.5 'forklift'"]


def test_calibration_skips_an_image_the_server_cannot_read_and_says_why(
    server_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "sample"
    folder.mkdir()
    for n in range(4):
        natural(240 + 16 * n, 180, seed=60 + n).save(folder / f"photo-{n}.jpg", quality=92)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    arguments = ["duplicates", "--calibrate", str(folder), "--precision", "0.9"]
    code, out, err = run(capsys, server_address, *arguments)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:3] == [
        "1 of 5 images skipped: the server cannot read them",
        "  skipped  broken.jpg: not an image Pillow can read (JPEG, PNG, WebP, GIF, ...)",
        "24 copies of 4 images, embedded by tiny",
    ]
    code, out, _ = run(capsys, server_address, *arguments, "--json")
    document = json.loads(out)
    assert (document["images"], document["copies"]) == (4, 24)
    assert list(document["skipped"]) == ["broken.jpg"]

    for n in range(1, 4):
        (folder / f"photo-{n}.jpg").unlink()
    code, _, err = run(capsys, server_address, "duplicates", "--calibrate", str(folder))
    assert code == EXIT_BAD_INPUT
    assert err == (
        f"lookalike: {folder}: calibration needs at least 2 images the server can read, and it "
        "reads 1 of 2 (e.g. broken.jpg: not an image Pillow can read (JPEG, PNG, WebP, GIF, "
        "...))\n"
    )


def test_calibration_says_when_no_threshold_separates_the_copies(
    server_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each image twice: a copy scores as high against its original's twin as against its
    original, so every threshold that finds a copy also pairs two images that are not copies
    (precision 0.5 at most); only a threshold above every score reaches 0.99, finding none."""
    folder = tmp_path / "twins"
    folder.mkdir()
    for n in range(3):
        natural(240, 180 + 16 * n, seed=80 + n).save(folder / f"photo-{n}.jpg", quality=92)
        (folder / f"twin-{n}.jpg").write_bytes((folder / f"photo-{n}.jpg").read_bytes())
    code, out, _ = run(capsys, server_address, "duplicates", "--calibrate", str(folder))
    assert code == 0
    assert "recommended" not in out
    assert (
        "no threshold reaches precision 0.99 on these images while finding copies: on this "
        "sample, no threshold separates the copies from the other images"
    ) in out.splitlines()
    code, out, _ = run(capsys, server_address, "duplicates", "--calibrate", str(folder), "--json")
    assert json.loads(out)["recommended"] is None
