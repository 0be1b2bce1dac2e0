"""An engine that raises on every batch: callers get UNAVAILABLE, health follows, it recovers."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookalike.server.embed.batcher import BatcherSettings
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.reliability.faults import EngineHandle
from tests.server.images import jpeg
from tests.server.serving import config_for, connected

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_for_health(channel: grpc.Channel, status: int, timeout: float = 10) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health.Check(health_pb2.HealthCheckRequest()).status == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"health never became {status}")


def test_failing_engine_fails_requests_turns_health_off_and_recovers(
    tiny_export: Path, tmp_path: Path
) -> None:
    handle = EngineHandle()
    config = config_for(
        tiny_export, tmp_path, batcher=BatcherSettings(unhealthy_after=2), engine_probe_s=0.1
    )
    with connected(config, engine_factory=handle) as (_, channel):
        stub = pb_grpc.ImageSearchStub(channel)
        image = jpeg(64, 64)
        assert stub.Embed(pb.EmbedRequest(images=[image]), timeout=10).embeddings
        wait_for_health(channel, SERVING)
        assert handle.engine is not None
        handle.engine.failing.set()
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as info:
                stub.Embed(pb.EmbedRequest(images=[image]), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "injected device fault" in info.value.details()
        wait_for_health(channel, NOT_SERVING)
        stub.Add(pb.AddRequest(id="v", vector=pb.Vector(values=[1.0] * 16)))  # no engine needed
        assert stub.Search(pb.SearchRequest(id="v", k=1)).matches[0].id == "v"
        handle.engine.failing.clear()  # the device comes back: the self-test probe notices
        wait_for_health(channel, SERVING)
        assert stub.Embed(pb.EmbedRequest(images=[image]), timeout=10).embeddings
