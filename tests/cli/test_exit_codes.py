"""The `lookalike` command's exit codes for a refused token (4) and Ctrl-C (130), against a real
server on loopback whose engine the tests can hold."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lookalike.cli import main
from lookalike.cli.common import EXIT_AUTH, EXIT_INTERRUPTED
from tests.reliability.faults import HOLD_LIMIT_S, EngineHandle, FaultyEngine
from tests.reliability.process import clean_env
from tests.server.images import natural
from tests.server.serving import config_for, running_server

TOKEN = "exit-code-token"
PHOTOS = 8
REFUSED = "lookalike: the server refused the token: pass --token or set LOOKALIKE_TOKEN\n"


@pytest.fixture(scope="module")
def server(
    tiny_export: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, FaultyEngine]]:
    """A server that asks for TOKEN; its address and its image engine."""
    handle = EngineHandle()
    config = config_for(tiny_export, tmp_path_factory.mktemp("data"), token=TOKEN)
    with running_server(config, engine_factory=handle) as running:
        assert handle.engine is not None
        yield running.address, handle.engine


@pytest.mark.parametrize("token", [[], ["--token", "wrong"]], ids=["no token", "wrong token"])
def test_a_refused_token_exits_4_with_one_line_saying_so(
    server: tuple[str, FaultyEngine], token: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    address, _ = server
    assert main(["--server", address, *token, "stats"]) == EXIT_AUTH
    assert capsys.readouterr().err == REFUSED
    assert main(["--server", address, "--token", TOKEN, "stats"]) == 0  # the server is fine


def test_ctrl_c_during_index_exits_130_and_says_what_was_stored(
    server: tuple[str, FaultyEngine], tmp_path: Path
) -> None:
    """SIGINT while the server holds the folder's first batch in inference: the command stops
    there, says so and what it stored, with no traceback."""
    address, engine = server
    for i in range(PHOTOS):
        natural(96 + 8 * i, 80, seed=i).save(tmp_path / f"photo-{i}.jpg")
    command = [sys.executable, "-m", "lookalike.cli", "--server", address, "--token", TOKEN]
    engine.hold()
    try:
        index = subprocess.Popen(
            [*command, "index", str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        try:
            assert engine.holding.wait(HOLD_LIMIT_S), "the folder never reached the engine"
            index.send_signal(signal.SIGINT)
            out, err = index.communicate(timeout=60)
        finally:
            index.kill()
    finally:
        engine.release()
    assert index.returncode == EXIT_INTERRUPTED, err
    said = f"interrupted: 0 stored, 0 already indexed, 0 failed (of {PHOTOS} image files in "
    assert out == f"{said}{tmp_path})\n"
    assert "Traceback" not in err
