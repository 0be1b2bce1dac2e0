"""A server listening beyond loopback without a token says so once at start, naming each port
that anyone who can reach it may use; one on loopback, or with a token, says nothing."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from tests.server.serving import config_for, running_server

WARNING = "without a token: anyone who can reach"


def warnings_at_start(
    tiny_export: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    host: str,
    token: str | None = None,
) -> tuple[list[str], dict[str, int]]:
    """The server's warnings about its exposure while it starts, and the ports it bound."""
    config = config_for(tiny_export, tmp_path, http_port=0, metrics_port=0, token=token)
    with (
        caplog.at_level(logging.WARNING, logger="lookalike.server"),
        running_server(dataclasses.replace(config, host=host), load=False) as running,
    ):
        assert running.server.http is not None
        assert running.server.http.port is not None
        ports = {
            "gRPC": running.port,
            "HTTP": running.server.http.port,
            "metrics": running.metrics_port,
        }
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()], ports


def test_a_server_open_to_the_network_without_a_token_warns_naming_each_port(
    tiny_export: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (warning,), ports = warnings_at_start(tiny_export, tmp_path, caplog, "0.0.0.0")
    named = ", ".join(f"{name} port {port}" for name, port in ports.items())
    assert warning == (
        f"listening on 0.0.0.0 without a token: anyone who can reach {named} can read and "
        "change the collection; pass --token (and --tls-cert/--tls-key), or --host 127.0.0.1"
    )


@pytest.mark.parametrize(
    ("host", "token"), [("127.0.0.1", None), ("localhost", None), ("0.0.0.0", "s3cret")]
)
def test_a_server_on_loopback_or_with_a_token_does_not_warn(
    tiny_export: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    host: str,
    token: str | None,
) -> None:
    warnings, _ = warnings_at_start(tiny_export, tmp_path, caplog, host, token)
    assert warnings == []
