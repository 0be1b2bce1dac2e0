"""The offline jobs against a Ray cluster started the way users start one: `ray start --head`
with token authentication on (as it is where a Ray token exists) on 127.0.0.1, joined by
address from another process that knows nothing but the address and this machine's token
file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from benchmarks.common import free_port
from lookalike.client.cli import EXIT_UNREACHABLE
from tests.server.images import natural

IMAGES = 6
RAY_VARIABLES = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home of its own: `ray start` writes the token to ~/.ray/auth_token there."""
    return tmp_path_factory.mktemp("home")


def environment(home: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in RAY_VARIABLES}
    return {**clean, "HOME": str(home), **extra}


@pytest.fixture(scope="module")
def head(home: Path) -> Iterator[str]:
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert ray is not None, "the cluster extra installs the `ray` command"
    # As Ray's security guide says: a token, then the head, which then requires it (Ray 2.60
    # also turns token mode on for any cluster started where a token already exists, such as
    # one a local `ray.init()` left behind)
    subprocess.run(
        [ray, "get-auth-token", "--generate"],
        env=environment(home),
        capture_output=True,
        timeout=120,
        check=True,
    )
    port = free_port()
    command = [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    options = ["--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"]
    subprocess.run(
        [*command, *options], env=environment(home), capture_output=True, timeout=180, check=True
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(
            [ray, "stop"], env=environment(home), capture_output=True, timeout=120, check=False
        )


def ingest(address: str, home: Path, model: Path, folder: Path, output: Path, **extra: str):
    command = [sys.executable, "-m", "lookalike.cli", "ingest", str(folder)]
    command += ["--model-dir", str(model), "--output", str(output), "--address", address]
    return subprocess.run(
        [*command, "--actors", "1"],
        env=environment(home, **extra),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_ingest_joins_a_ray_start_cluster_with_its_default_token(
    head: str, home: Path, tiny_export: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for n in range(IMAGES):
        natural(200, 150, seed=n).save(folder / f"photo-{n}.jpg", quality=90)
    result = ingest(head, home, tiny_export, folder, tmp_path / "dataset")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pq.ParquetDataset(tmp_path / "dataset" / "parts").read().to_pylist()
    assert sorted(row["id"] for row in rows) == [f"photo-{n}.jpg" for n in range(IMAGES)]


def test_a_wrong_token_is_refused_with_what_to_check(
    head: str, home: Path, tiny_export: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    natural(200, 150, seed=1).save(folder / "photo.jpg", quality=90)
    result = ingest(
        head, home, tiny_export, folder, tmp_path / "dataset", RAY_AUTH_TOKEN="not-the-token"
    )
    assert result.returncode == EXIT_UNREACHABLE, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"lookalike: cannot join the Ray cluster at {head}"), last
    assert "ray get-auth-token" in last
    assert not list((tmp_path / "dataset").glob("parts/*.parquet"))
    # the head does require a token: joined without one (mode chosen: no second try), refused
    result = ingest(head, home, tiny_export, folder, tmp_path / "dataset", RAY_AUTH_MODE="disabled")
    assert result.returncode == EXIT_UNREACHABLE, result.stderr[-3000:]
    assert "RAY_AUTH_MODE=disabled" in result.stderr
