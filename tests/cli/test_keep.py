"""`lookalike duplicates --keep RULE [--delete [--dry-run]]`: the copy each group keeps, by the
image sizes the server recorded, and the deletion of the rest, against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as photographs

from lookalike.cli import main
from lookalike.cli.common import EXIT_BAD_INPUT
from lookalike.client import Client
from tests.server.images import encode
from tests.server.serving import config_for, running_server

THRESHOLD = 0.99  # random weights: the copies score 0.995+, the other photo 0.58


def rocket() -> Image.Image:
    return Image.fromarray(photographs.rocket()).convert("RGB")  # 640 x 427


def add_copies(client: Client) -> dict[str, bytes]:
    """The original named last alphabetically, a half-size copy, a recompressed copy (same
    pixels, a smaller file), and an unrelated photo."""
    images = {
        "z-original.jpg": encode(rocket(), "JPEG", quality=95),
        "a-half.jpg": encode(rocket().resize((320, 213)), "JPEG", quality=95),
        "m-recompressed.jpg": encode(rocket(), "JPEG", quality=40),
        "other.jpg": encode(Image.fromarray(photographs.coffee()), "JPEG"),
    }
    for item_id, image in images.items():
        client.add(item_id, image=image)
    return images


def test_keep_largest_plans_deletes_and_leaves_the_best_copy(
    tiny_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_server(config_for(tiny_export, tmp_path / "data")) as server:
        with Client(server.address) as client:
            images = add_copies(client)
        base = ["--server", server.address, "duplicates", "--threshold", str(THRESHOLD)]

        assert main([*base, "--keep", "largest"]) == 0  # a plan, nothing deleted
        out = capsys.readouterr().out
        assert "keeping the largest image: most pixels, then the largest file:" in out
        assert (
            f"  keep    z-original.jpg  640x427 px, {len(images['z-original.jpg']):,} bytes" in out
        )
        assert "  delete  a-half.jpg  320x213 px" in out
        assert "2 copies to delete in 1 groups" in out
        assert "nothing deleted (add --delete to delete them)" in out

        assert main([*base, "--keep", "first", "--delete", "--dry-run"]) == 0
        plan = json.loads(capsys.readouterr().out)
        assert plan["keep"] == "first"
        assert plan["deleted"] == 0
        (group,) = plan["groups"]
        assert group["keep"] == "a-half.jpg"  # what "mark all but the first" kept
        assert group["images"]["z-original.jpg"] == {
            "width": 640,
            "height": 427,
            "bytes": len(images["z-original.jpg"]),
        }
        assert main([*base, "--keep", "smallest", "--json"]) == 0
        copies = [i for i in images if i != "other.jpg"]
        smallest = min(copies, key=lambda i: len(images[i]))
        assert json.loads(capsys.readouterr().out)["groups"][0]["keep"] == smallest

        with Client(server.address) as client:
            assert client.stats().items == 4  # the dry runs deleted nothing
            assert main([*base, "--keep", "largest", "--delete"]) == 0
            assert "deleted 2 copies in 1 groups" in capsys.readouterr().out
            assert sorted(m.id for m in client.search(id="other.jpg", k=10)) == [
                "other.jpg",
                "z-original.jpg",
            ]


def test_delete_needs_a_rule(
    tiny_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_server(config_for(tiny_export, tmp_path / "data")) as server:
        base = ["--server", server.address, "duplicates", "--threshold", str(THRESHOLD)]
        assert main([*base, "--delete"]) == EXIT_BAD_INPUT
        assert "--delete needs --keep RULE" in capsys.readouterr().err
        assert main([*base, "--keep", "largest", "--dry-run"]) == EXIT_BAD_INPUT
        assert "--dry-run goes with --delete" in capsys.readouterr().err
