"""A real server with its HTTP listener on 127.0.0.1 (port 0), for the JSON API and the web app."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from lookalike.export.manifest import Precision
from lookalike.server.embed.onnx_engine import EngineSettings
from tests.server.serving import RunningServer, config_for, running_server

TIMEOUT = 60.0


@contextlib.contextmanager
def http_server(
    model_dir: Path, data_dir: Path, **overrides: Any
) -> Iterator[tuple[RunningServer, str]]:
    """A loaded server answering gRPC and HTTP; yields it and its HTTP base URL. fp32 so that
    vectors do not depend on the image's batch (`overrides` go to ServerConfig)."""
    overrides.setdefault("engine", EngineSettings(precision=Precision.FP32, intra_op_threads=1))
    config = config_for(model_dir, data_dir, http_port=0, **overrides)
    with running_server(config) as server:
        assert server.server.http is not None
        assert server.server.http.port is not None
        yield server, f"http://127.0.0.1:{server.server.http.port}"


@contextlib.contextmanager
def http_client(base_url: str, token: str | None = None) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=base_url, headers=headers, timeout=TIMEOUT) as client:
        yield client
