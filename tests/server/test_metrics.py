"""Prometheus metrics on their own port: requests by method and code, stages, batches."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import grpc
import pytest

from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.server.images import jpeg
from tests.server.serving import config_for, connected


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_metrics_count_requests_codes_stages_and_batches(tiny_export: Path, tmp_path: Path) -> None:
    port = free_port()
    with connected(config_for(tiny_export, tmp_path, metrics_port=port)) as (_, channel):
        stub = pb_grpc.ImageSearchStub(channel)
        stub.Add(pb.AddRequest(id="a", image=jpeg(64, 64)))
        stub.Search(pb.SearchRequest(id="a", k=1))
        with pytest.raises(grpc.RpcError):
            stub.Get(pb.GetRequest(id="missing"))
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        )
    assert 'lookalike_requests_total{code="OK",method="Add"} 1.0' in text
    assert 'lookalike_requests_total{code="NOT_FOUND",method="Get"} 1.0' in text
    for stage in ("preprocess", "inference", "search", "commit"):
        assert f'lookalike_stage_seconds_count{{stage="{stage}"}}' in text
    assert "lookalike_batch_size_count" in text
    assert "lookalike_queue_depth" in text
