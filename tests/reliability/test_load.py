"""Load and overload over loopback, bounded in count and time."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import grpc
import numpy as np

from lookalike.server.embed.batcher import BatcherSettings
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.reliability.faults import EngineHandle
from tests.reliability.report import ReliabilityReport
from tests.server.images import jpeg
from tests.server.serving import config_for, running_server

CLIENTS = 64
CALLS_PER_CLIENT, SOAK_CALLS_PER_CLIENT = 12, 400


def rss_mb() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def mixed_client(
    stub: pb_grpc.ImageSearchStub,
    client: int,
    images: list[bytes],
    calls: int,
    report: ReliabilityReport,
) -> list[str]:
    """Adds, searches and embeds; returns the ids it was told are stored."""
    rng = random.Random(client)
    added = []
    for call in range(calls):
        started = time.monotonic()
        item_id = f"c{client}-{call}"
        choice = rng.random()
        if choice < 0.4:
            vector = np.random.default_rng(client * 100 + call).normal(size=16)
            await stub.Add(pb.AddRequest(id=item_id, vector=pb.Vector(values=vector)), timeout=60)
            added.append(item_id)
        elif choice < 0.6:
            await stub.Add(pb.AddRequest(id=item_id, image=rng.choice(images)), timeout=60)
            added.append(item_id)
        elif choice < 0.8:
            await stub.Embed(pb.EmbedRequest(images=[rng.choice(images)]), timeout=60)
        else:
            await stub.Search(
                pb.SearchRequest(vector=pb.Vector(values=[1.0] * 16), k=5), timeout=60
            )
        report.record("OK", time.monotonic() - started)
    return added


def test_64_concurrent_clients_mixing_calls(
    tiny_export: Path, tmp_path: Path, soak: bool, report: ReliabilityReport
) -> None:
    calls = SOAK_CALLS_PER_CLIENT if soak else CALLS_PER_CLIENT
    images = [jpeg(96 + 8 * i, 80, seed=i) for i in range(6)]
    with running_server(config_for(tiny_export, tmp_path)) as server:
        before = rss_mb()

        async def load() -> list[list[str]]:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = pb_grpc.ImageSearchStub(channel)
                return await asyncio.gather(
                    *(
                        mixed_client(stub, client, images, calls, report)
                        for client in range(CLIENTS)
                    )
                )

        started = time.monotonic()
        acknowledged = [i for ids in asyncio.run(load()) for i in ids]  # any error fails here
        elapsed = time.monotonic() - started
        after = rss_mb()
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageSearchStub(channel)
            assert stub.Stats(pb.StatsRequest()).items == len(acknowledged)
            for item_id in acknowledged:
                hits = stub.Search(pb.SearchRequest(id=item_id, k=1)).matches
                assert hits[0].score > 0.999  # itself, or a byte-identical image stored twice
            report.items_verified += len(acknowledged)
    print(
        f"{CLIENTS * CALLS_PER_CLIENT} calls in {elapsed:.1f}s; RSS {before:.0f} -> {after:.0f} MB"
    )
    assert after < before + 300  # bounded: no per-request leak of any size


def test_burst_beyond_capacity_is_refused_fast_and_the_server_recovers(
    tiny_export: Path, tmp_path: Path
) -> None:
    handle = EngineHandle()
    config = config_for(tiny_export, tmp_path, batcher=BatcherSettings(max_queue=4, max_batch=2))
    with running_server(config, engine_factory=handle) as server:
        assert handle.engine is not None
        handle.engine.delay_s = 0.3  # a slow device: the queue fills
        image = jpeg(64, 64)

        async def burst() -> list[tuple[str, float]]:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = pb_grpc.ImageSearchStub(channel)

                async def one() -> tuple[str, float]:
                    started = time.monotonic()
                    try:
                        await stub.Embed(pb.EmbedRequest(images=[image]), timeout=60)
                        return "OK", time.monotonic() - started
                    except grpc.aio.AioRpcError as error:
                        return error.code().name, time.monotonic() - started

                return await asyncio.gather(*(one() for _ in range(24)))

        outcomes = asyncio.run(burst())
        codes = [code for code, _ in outcomes]
        assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}
        assert codes.count("OK") >= 4
        refusals = [seconds for code, seconds in outcomes if code == "RESOURCE_EXHAUSTED"]
        assert max(refusals) < 0.25  # refused at once, not after waiting (a batch takes 0.3 s)
        handle.engine.delay_s = 0.0
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageSearchStub(channel)
            assert stub.Embed(pb.EmbedRequest(images=[image] * 4), timeout=30).embeddings
            assert stub.Stats(pb.StatsRequest()).queue_depth == 0
