"""A server that cannot start says why in one line and exits non-zero."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lookalike.export.manifest import MANIFEST_FILE, Manifest, Precision
from tests.reliability.process import ServerProcess, clean_env, server_command


def start(model_dir: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        server_command(model_dir, data_dir, "--grace-s", "1"),
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )


@pytest.fixture
def package(tiny_export: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_export, tmp_path / "model"))


def int8_file(package: Path) -> Path:
    return package / Manifest.load(package).graphs["image"].variants[Precision.INT8].file


def test_missing_model_file(package: Path, tmp_path: Path) -> None:
    int8_file(package).unlink()
    result = start(package, tmp_path / "data")
    assert result.returncode == 2
    assert "cannot start" in result.stderr
    assert "image_int8.onnx is missing" in result.stderr


def test_corrupted_model_file(package: Path, tmp_path: Path) -> None:
    with int8_file(package).open("r+b") as stream:
        stream.seek(1000)
        stream.write(b"\x00" * 64)
    result = start(package, tmp_path / "data")
    assert result.returncode == 2
    assert "sha256" in result.stderr


def test_a_directory_that_is_not_a_clip_export(tmp_path: Path) -> None:
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / MANIFEST_FILE).write_text(json.dumps({"model": "bert"}))
    result = start(tmp_path / "not-a-model", tmp_path / "data")
    assert result.returncode == 2
    assert "not a Lookalike manifest" in result.stderr


def test_no_model_directory_at_all(tmp_path: Path) -> None:
    result = start(tmp_path / "nowhere", tmp_path / "data")
    assert result.returncode == 2
    assert "lookalike-export" in result.stderr


def test_a_second_server_on_the_same_port_refuses_to_start(
    tiny_export: Path, tmp_path: Path
) -> None:
    """gRPC's default SO_REUSEPORT would let both listen and split the calls between them."""
    first = ServerProcess(tiny_export, tmp_path / "one", tmp_path / "one.log")
    try:
        result = subprocess.run(
            [*server_command(tiny_export, tmp_path / "two"), "--port", str(first.port)],
            capture_output=True,
            text=True,
            timeout=120,
            env=clean_env(),
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert f"cannot listen on 127.0.0.1:{first.port}" in result.stderr
        assert "port is in use" in result.stderr
        assert "listening on" not in result.stderr
    finally:
        first.stop()


def test_a_second_server_on_the_same_data_directory_refuses_to_start(
    tiny_export: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = ServerProcess(tiny_export, data, tmp_path / "one.log")
    try:
        result = start(tiny_export, data)
        assert result.returncode == 2, result.stderr
        assert f"data directory {data} is in use" in result.stderr
        assert f"pid {first.process.pid}" in result.stderr
    finally:
        first.stop()
    # released on a clean stop, and by the kernel after a crash
    second = ServerProcess(tiny_export, data, tmp_path / "two.log")
    second.kill()
    ServerProcess(tiny_export, data, tmp_path / "three.log").stop()
