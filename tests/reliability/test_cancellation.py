"""Callers that leave, time out or stall: their work stops and nobody else waits for them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from lookalike.server.core import COMMIT_GROUP
from lookalike.server.embed.batcher import BatcherSettings
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.reliability.faults import EngineHandle
from tests.server.images import jpeg
from tests.server.serving import config_for, connected


def vectors(count: int) -> Iterator[pb.AddRequest]:
    rng = np.random.default_rng(0)
    for i in range(count):
        yield pb.AddRequest(id=f"s{i}", vector=pb.Vector(values=rng.normal(size=16)))
        time.sleep(0.001)


def test_a_cancelled_add_stream_stored_what_it_acknowledged(
    tiny_export: Path, tmp_path: Path
) -> None:
    with connected(config_for(tiny_export, tmp_path)) as (_, channel):
        stub = pb_grpc.ImageSearchStub(channel)
        call = stub.AddStream(vectors(5000), timeout=60)
        acknowledged = []
        for response in call:
            acknowledged += [r.id for r in response.results if r.code == 0]
            if len(acknowledged) >= 2 * COMMIT_GROUP:
                call.cancel()
                break
        time.sleep(0.5)  # let the server notice
        stored = stub.Stats(pb.StatsRequest()).items
        assert len(acknowledged) == 2 * COMMIT_GROUP
        for item_id in acknowledged:
            assert stub.Get(pb.GetRequest(id=item_id)).id == item_id
        # at most the group being committed when the cancel arrived went unacknowledged
        assert len(acknowledged) <= stored <= len(acknowledged) + COMMIT_GROUP
        time.sleep(0.5)
        assert stub.Stats(pb.StatsRequest()).items == stored  # and then it stopped


def test_an_expired_deadline_frees_its_slot_and_is_not_inferred(
    tiny_export: Path, tmp_path: Path
) -> None:
    handle = EngineHandle()
    config = config_for(tiny_export, tmp_path, batcher=BatcherSettings(max_batch=1, max_delay_ms=0))
    with connected(config, engine_factory=handle) as (_, channel):
        assert handle.engine is not None
        stub = pb_grpc.ImageSearchStub(channel)
        handle.engine.rows_inferred = 0
        handle.engine.delay_s = 0.5
        first = stub.Embed.future(pb.EmbedRequest(images=[jpeg(64, 64, seed=1)]), timeout=30)
        time.sleep(0.1)  # the first is in inference
        with pytest.raises(grpc.RpcError) as info:
            stub.Embed(pb.EmbedRequest(images=[jpeg(64, 64, seed=2)]), timeout=0.2)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert stub.Stats(pb.StatsRequest()).queue_depth == 1  # only the first holds a slot
        assert first.result().embeddings
        handle.engine.delay_s = 0.0
        time.sleep(0.2)
        assert handle.engine.rows_inferred == 1  # the expired one was never inferred


def test_a_stalled_stream_does_not_hold_up_other_callers(tiny_export: Path, tmp_path: Path) -> None:
    release = threading.Event()

    def stalled() -> Iterator[pb.AddRequest]:
        yield pb.AddRequest(id="stalled", vector=pb.Vector(values=[1.0] * 16))
        release.wait(30)  # a client that opened a stream and went quiet

    with connected(config_for(tiny_export, tmp_path)) as (_, channel):
        stub = pb_grpc.ImageSearchStub(channel)
        stream = stub.AddStream(stalled(), timeout=60)
        try:
            started = time.monotonic()
            for i in range(20):
                stub.Add(pb.AddRequest(id=f"other-{i}", image=jpeg(48, 48, seed=i)), timeout=5)
                stub.Search(pb.SearchRequest(id=f"other-{i}", k=3), timeout=5)
            assert time.monotonic() - started < 10
        finally:
            release.set()
            list(stream)


def test_the_token_never_reaches_the_logs(
    tiny_export: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = "tok-5a1f-never-log-me"
    with (
        caplog.at_level(logging.DEBUG),
        connected(config_for(tiny_export, tmp_path, token=token)) as (_, channel),
    ):
        stub = pb_grpc.ImageSearchStub(channel)
        stub.Stats(pb.StatsRequest(), metadata=(("authorization", f"Bearer {token}"),))
        with pytest.raises(grpc.RpcError):
            stub.Stats(pb.StatsRequest(), metadata=(("authorization", f"Bearer {token}x"),))
    assert "Stats OK" in caplog.text  # the per-request debug line was logged
    assert token not in caplog.text
