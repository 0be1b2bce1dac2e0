"""A non-Python client: Node's @grpc/grpc-js loads the .proto at run time and calls the server."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.serving import config_for, running_server

PROTO_ROOT = Path(__file__).resolve().parents[2] / "protos"
# package.json pins the exact releases, package-lock.json their whole tree (with hashes);
# the set-up installs them (scripts/test.sh: `npm ci` here): the test itself never installs
NODE_PROJECT = Path(__file__).resolve().parent / "node"
INSTALL = f"npm ci --ignore-scripts --prefix {NODE_PROJECT.relative_to(PROTO_ROOT.parent)}"


@pytest.fixture(scope="module")
def node_project() -> Path:
    if shutil.which("node") is None:
        pytest.skip("needs Node.js (apt install nodejs npm; .ci/run installs them)")
    for package in ("@grpc/grpc-js", "@grpc/proto-loader"):
        if not (NODE_PROJECT / "node_modules" / package / "package.json").is_file():
            pytest.skip(f"{package} is not installed: {INSTALL} (scripts/test.sh runs it)")
    return NODE_PROJECT


@pytest.fixture(scope="module")
def address(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(config_for(tiny_export, tmp_path_factory.mktemp("data"))) as server:
        yield server.address


def test_node_client_adds_searches_and_deletes(node_project: Path, address: str) -> None:
    result = subprocess.run(
        ["node", "client.js", str(PROTO_ROOT), address],
        cwd=node_project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["added"] == {"id": "from-node", "replaced": False}
    (match,) = reply["found"]["matches"]
    assert match["id"] == "from-node"
    assert match["score"] == pytest.approx(1.0, abs=1e-5)
    assert match["metadata"] == {"lang": "js"}
    assert reply["deleted"] == {"deleted": 1, "missing": ["absent"]}
    assert reply["code"] == 5  # NOT_FOUND after the delete
