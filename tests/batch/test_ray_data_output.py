"""The offline commands' quiet mode: what Ray's driver would print on stdout for a raylet (its
warnings, e.g. "N PYTHON worker processes have been started ...", which came between
`build-index`'s result lines in a CI run) stays off it; workers' lines and verbose mode are
untouched."""

from __future__ import annotations

import pytest
from ray._private import worker

from lookalike.batch.ray_data_output import quiet_ray_data

RAYLET_WARNING = {"lines": ["WARNING: 4 PYTHON worker processes"], "pid": "raylet", "is_err": False}
WORKER_LINE = {"lines": ["a worker's line"], "pid": 4242, "ip": "127.0.0.1", "is_err": False}


def printed(quiet: bool, data: dict, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    with quiet_ray_data(quiet):
        worker.print_to_stdstream(dict(data), ignore_prefix=False)
    return capsys.readouterr().out


def test_quiet_mode_keeps_raylet_warnings_off_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert printed(True, RAYLET_WARNING, capsys) == ""
    assert "4 PYTHON worker processes" in printed(False, RAYLET_WARNING, capsys)
    assert "a worker's line" in printed(True, WORKER_LINE, capsys)
    # Ray's own function is back once the block ends (another text: Ray holds back lines like
    # one it printed a moment ago, numbers aside)
    other = {**RAYLET_WARNING, "lines": ["the object store is full"]}
    assert "the object store is full" in printed(False, other, capsys)
