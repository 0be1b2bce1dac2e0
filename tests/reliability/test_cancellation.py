"""Callers that leave, time out or stall: their work stops and nobody else waits for them."""

from __future__ import annotations

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
from tests.ray_commands import wait_for
from tests.reliability.faults import EngineHandle
from tests.server.images import jpeg
from tests.server.serving import RunningServer, config_for, connected


def vectors(count: int) -> Iterator[pb.AddRequest]:
    rng = np.random.default_rng(0)
    for i in range(count):
        yield pb.AddRequest(id=f"s{i}", vector=pb.Vector(values=rng.normal(size=16)))
        time.sleep(0.001)


def calls_ended(server: RunningServer, method: str, code: str) -> float:
    """How many `method` calls the server has ended with `code` (counted as each one ends)."""
    labels = {"method": method, "code": code}
    return server.server.metrics.registry.get_sample_value("lookalike_requests_total", labels) or 0


def test_a_cancelled_add_stream_stored_what_it_acknowledged(
    tiny_export: Path, tmp_path: Path
) -> None:
    with connected(config_for(tiny_export, tmp_path)) as (server, channel):
        stub = pb_grpc.ImageSearchStub(channel)
        call = stub.AddStream(vectors(5000), timeout=60)
        acknowledged = []
        for response in call:
            acknowledged += [r.id for r in response.results if r.code == 0]
            if len(acknowledged) >= 2 * COMMIT_GROUP:
                call.cancel()
                break
        # the server has ended the call, and with it the stream's embedding; 30 s: generous
        wait_for(lambda: calls_ended(server, "AddStream", "CANCELLED") == 1, seconds=30)
        after = pb.AddRequest(id="after", vector=pb.Vector(values=[1.0] * 16))
        # writes run one at a time on the data thread: once this one is stored, so is any
        # commit the cancelled stream had begun
        stub.Add(after)
        stored = stub.Stats(pb.StatsRequest()).items - 1
        assert len(acknowledged) == 2 * COMMIT_GROUP
        for item_id in acknowledged:
            assert stub.Get(pb.GetRequest(id=item_id)).id == item_id
        # at most the group being committed when the cancel arrived went unacknowledged
        assert len(acknowledged) <= stored <= len(acknowledged) + COMMIT_GROUP
        stub.Add(after)
        assert stub.Stats(pb.StatsRequest()).items == stored + 1  # and then it stopped


def test_an_expired_deadline_frees_its_slot_and_is_not_inferred(
    tiny_export: Path, tmp_path: Path
) -> None:
    handle = EngineHandle()
    config = config_for(tiny_export, tmp_path, batcher=BatcherSettings(max_batch=1, max_delay_ms=0))
    with connected(config, engine_factory=handle) as (_, channel):
        engine = handle.engine
        assert engine is not None
        stub = pb_grpc.ImageSearchStub(channel)
        engine.rows_inferred = 0
        engine.hold()
        first = stub.Embed.future(pb.EmbedRequest(images=[jpeg(64, 64, seed=1)]), timeout=60)
        assert engine.holding.wait(30)  # the first is in inference, held there
        with pytest.raises(grpc.RpcError) as info:
            stub.Embed(pb.EmbedRequest(images=[jpeg(64, 64, seed=2)]), timeout=0.2)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # only the first holds a slot, once the server has seen the deadline pass (its own
        # clock, a moment after the caller's); 30 s: generous
        wait_for(lambda: stub.Stats(pb.StatsRequest()).queue_depth == 1, seconds=30)
        engine.release()
        assert first.result().embeddings
        # one batch at a time, in order: had the expired one stayed queued, it would run first
        stub.Embed(pb.EmbedRequest(images=[jpeg(64, 64, seed=3)]), timeout=30)
        assert engine.rows_inferred == 2  # the first and the last: the expired one never ran


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
            # 40 calls take well under a second here; one held up behind the stalled stream
            # would wait for its release (30 s), and fail at its own 5 s timeout first
            assert time.monotonic() - started < 10
        finally:
            release.set()
            list(stream)
