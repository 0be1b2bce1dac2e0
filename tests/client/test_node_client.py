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

SCRIPT = r"""
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");
const [protoRoot, address] = process.argv.slice(2);
const definition = loader.loadSync("lookalike/v1/lookalike.proto", {
  includeDirs: [protoRoot], keepCase: true, longs: Number, defaults: true,
});
const { ImageSearch } = grpc.loadPackageDefinition(definition).lookalike.v1;
const client = new ImageSearch(address, grpc.credentials.createInsecure());
const call = (method, request) => new Promise((resolve, reject) =>
  client[method](request, { deadline: Date.now() + 20000 }, (error, reply) =>
    error ? reject(error) : resolve(reply)));
(async () => {
  const values = Array.from({ length: 16 }, (_, i) => (i === 3 ? 1 : 0.01 * i));
  const item = { id: "from-node", vector: { values }, metadata: { lang: "js" } };
  const added = await call("Add", item);
  const found = await call("Search", { vector: { values }, k: 1 });
  const deleted = await call("Delete", { ids: ["from-node", "absent"] });
  let code = null;
  try { await call("Get", { id: "from-node" }); } catch (error) { code = error.code; }
  console.log(JSON.stringify({ added, found, deleted, code }));
})().catch((error) => { console.error(error); process.exit(1); });
"""


@pytest.fixture(scope="module")
def node_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    project = tmp_path_factory.mktemp("node-client")
    installed = subprocess.run(
        [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            "@grpc/grpc-js@1",
            "@grpc/proto-loader@0",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if installed.returncode != 0:
        pytest.skip(f"npm could not install @grpc/grpc-js: {installed.stderr.strip()[-300:]}")
    (project / "client.js").write_text(SCRIPT)
    return project


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
