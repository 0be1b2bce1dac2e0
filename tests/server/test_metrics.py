"""Prometheus metrics on their own port: requests by method and code, stages, batches."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import grpc
import pytest

from lookalike.server.errors import AddressInUseError
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.server.images import jpeg
from tests.server.serving import config_for, connected, running_server


def test_metrics_count_requests_codes_stages_and_batches(tiny_export: Path, tmp_path: Path) -> None:
    with connected(config_for(tiny_export, tmp_path, metrics_port=0)) as (server, channel):
        stub = pb_grpc.ImageSearchStub(channel)
        stub.Add(pb.AddRequest(id="a", image=jpeg(64, 64)))
        stub.Search(pb.SearchRequest(id="a", k=1))
        with pytest.raises(grpc.RpcError):
            stub.Get(pb.GetRequest(id="missing"))
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10)
            .read()
            .decode()
        )
    assert 'lookalike_requests_total{code="OK",method="Add"} 1.0' in text
    assert 'lookalike_requests_total{code="NOT_FOUND",method="Get"} 1.0' in text
    for stage in ("preprocess", "inference", "search", "commit"):
        assert f'lookalike_stage_seconds_count{{stage="{stage}"}}' in text
    assert "lookalike_batch_size_count" in text
    assert "lookalike_queue_depth" in text


def test_the_metrics_port_listens_from_start_to_stop(tiny_export: Path, tmp_path: Path) -> None:
    config = config_for(tiny_export, tmp_path, metrics_port=0)
    with running_server(config, load=False) as server:
        port = server.metrics_port
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert "lookalike_index_items" in scrape.read().decode()
    with socket.create_server(("127.0.0.1", port)):  # closed at stop: free to bind again
        pass


def test_a_busy_metrics_port_fails_at_start_and_releases_the_data_directory(
    tiny_export: Path, tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        config = config_for(tiny_export, tmp_path / "data", metrics_port=busy)
        with (
            pytest.raises(AddressInUseError, match=f"127.0.0.1:{busy}.*--metrics-port"),
            running_server(config, load=False),
        ):
            pass
    with running_server(config_for(tiny_export, tmp_path / "data"), load=False) as server:
        assert server.port > 0
