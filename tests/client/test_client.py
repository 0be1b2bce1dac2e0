"""The Python client against a real server on loopback: every call, errors as typed exceptions."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from lookalike.cli import main
from lookalike.cli.common import EXIT_UNREACHABLE
from lookalike.client import (
    Client,
    InvalidRequestError,
    ItemNotFoundError,
    NewItem,
    ServerUnavailableError,
    UnauthenticatedError,
)
from tests.reliability.process import clean_env
from tests.server.images import jpeg
from tests.server.serving import config_for, running_server

TOKEN = "client-test-token"


@pytest.fixture(scope="module")
def address(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = config_for(tiny_export, tmp_path_factory.mktemp("data"), token=TOKEN)
    with running_server(config) as server:
        yield server.address


@pytest.fixture
def client(address: str) -> Iterator[Client]:
    with Client(address, token=TOKEN, timeout=30) as connected:
        yield connected


def test_every_call(client: Client, tmp_path: Path) -> None:
    picture = tmp_path / "picture.jpg"
    picture.write_bytes(jpeg(160, 120, seed=1))
    embeddings = client.embed([picture, jpeg(90, 90, seed=2)])
    assert embeddings.shape == (2, 16)
    assert embeddings.dtype == np.float32

    assert client.add("picture", image=picture, metadata={"kind": "photo"}) is False
    assert client.add("picture", image=picture, metadata={"kind": "photo", "v": "2"}) is True
    assert client.add("vec", vector=embeddings[1], metadata={"kind": "vector"}) is False

    matches = client.search(image=picture, k=2)
    assert matches[0].id == "picture"
    assert matches[0].score >= 0.999
    assert matches[0].metadata == {"kind": "photo", "v": "2"}
    assert client.search(vector=embeddings[1], k=1)[0].id == "vec"
    assert [m.id for m in client.search(id="vec", k=5, exclude_self=True)] == ["picture"]
    assert [m.id for m in client.search(id="vec", k=5, filter={"kind": "photo"})] == ["picture"]

    item = client.get("vec", include_vector=True)
    assert item.metadata == {"kind": "vector"}
    assert item.vector is not None
    np.testing.assert_allclose(item.vector, embeddings[1], atol=1e-6)

    outcomes = list(
        client.add_many(
            [NewItem(f"bulk-{i}", image=jpeg(64, 64, seed=10 + i)) for i in range(3)]
            + [NewItem("bulk-bad", image=b"not an image")]
        )
    )
    assert [o.ok for o in outcomes] == [True, True, True, False]
    assert outcomes[-1].code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not an image" in outcomes[-1].error

    deleted = client.delete(["bulk-0", "never-there"])
    assert (deleted.deleted, deleted.missing) == (1, ["never-there"])

    stats = client.stats()
    assert stats.items == 4  # picture, vec, bulk-1, bulk-2
    assert stats.dims == 16
    assert stats.random_weights
    assert stats.index["metric"] == "cos"


def test_errors_are_typed_and_carry_the_status(client: Client) -> None:
    with pytest.raises(ItemNotFoundError) as info:
        client.get("missing")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert "missing" in str(info.value)
    with pytest.raises(InvalidRequestError, match="k must be"):
        client.search(vector=np.ones(16), k=0)
    with pytest.raises(ValueError, match="or positives="):
        client.search(k=3)
    with pytest.raises(ValueError, match="not several"):
        client.search(text="a", id="b")


def test_wrong_token_is_unauthenticated(address: str) -> None:
    with Client(address, token="wrong") as client, pytest.raises(UnauthenticatedError):
        client.stats()


def test_unreachable_server_names_the_address() -> None:
    with Client("127.0.0.1:1", timeout=5) as client, pytest.raises(ServerUnavailableError) as info:
        client.stats()
    assert "127.0.0.1:1" in str(info.value)


def test_the_cli_reaches_a_tls_server_through_a_trusted_ca_and_only_so(
    tiny_export: Path,
    tmp_path: Path,
    certificate: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--ca-cert` trusts the given CA; `--tls` trusts the system's roots (gRPC reads them from
    GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, where the certificate is installed for one run); a client
    that trusts neither, or speaks plaintext, cannot reach the server (exit code 3)."""
    cert, key = certificate
    config = config_for(tiny_export, tmp_path / "data", tls_cert=cert, tls_key=key)
    with running_server(config) as server:
        stats = ["--server", server.address, "--timeout", "10", "stats", "--json"]
        assert main([*stats, "--ca-cert", str(cert)]) == 0
        assert json.loads(capsys.readouterr().out)["dims"] == 16
        system_roots = {**clean_env(), "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(cert)}
        with_tls = subprocess.run(
            [sys.executable, "-m", "lookalike.cli", *stats, "--tls"],
            capture_output=True,
            text=True,
            env=system_roots,
            timeout=60,
            check=False,
        )
        assert with_tls.returncode == 0, with_tls.stderr
        assert json.loads(with_tls.stdout)["dims"] == 16
        unreachable = f"lookalike: cannot reach a Lookalike server at {server.address} "
        for untrusting, why in ((["--tls"], "CERTIFICATE_VERIFY_FAILED"), ([], "")):
            assert main([*stats, *untrusting]) == EXIT_UNREACHABLE
            said = capsys.readouterr().err
            assert said.startswith(unreachable)
            assert why in said  # with --tls, the handshake is what failed
