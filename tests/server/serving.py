"""A real Lookalike server on 127.0.0.1, in a thread with its own event loop, for tests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc

from lookalike.server.app import LookalikeServer
from lookalike.server.config import ServerConfig
from lookalike.server.embed.settings import EmbedSettings
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc

START_TIMEOUT = 120


class RunningServer:
    def __init__(self, server: LookalikeServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server, self.loop = server, loop

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    @property
    def metrics_port(self) -> int:
        assert self.server.metrics_port is not None
        return self.server.metrics_port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stub(self, channel: grpc.Channel) -> pb_grpc.ImageSearchStub:
        return pb_grpc.ImageSearchStub(channel)

    def call(self, coroutine):  # run a coroutine on the server's loop, from the test thread
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(START_TIMEOUT)


@contextlib.contextmanager
def running_server(
    config: ServerConfig, *, load: bool = True, **options: Any
) -> Iterator[RunningServer]:
    """Start (and by default load) a server; stop it gracefully on exit.

    `options` go to LookalikeServer (e.g. an `engine_factory` that injects faults).
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-server", daemon=True)
    thread.start()
    created: Future[LookalikeServer] = asyncio.run_coroutine_threadsafe(
        _create(config, options), loop
    )
    server = created.result(START_TIMEOUT)
    running = RunningServer(server, loop)
    try:
        running.call(server.start())
        if load:
            running.call(server.load())
        yield running
    finally:
        running.call(server.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT)
        loop.close()


@contextlib.contextmanager
def connected(
    config: ServerConfig, *, load: bool = True, **options: Any
) -> Iterator[tuple[RunningServer, grpc.Channel]]:
    """A running server and an insecure loopback channel to it."""
    with (
        running_server(config, load=load, **options) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        yield server, channel


async def _create(config: ServerConfig, options: dict[str, Any]) -> LookalikeServer:
    return LookalikeServer(config, **options)


def config_for(model_dir: Path, data_dir: Path | None, **overrides: object) -> ServerConfig:
    """Loopback, a free port; `data_dir` None with `index_dir=` in `overrides` serves an index."""
    embed_fields = {field.name for field in dataclasses.fields(EmbedSettings)}
    embed = {name: overrides.pop(name) for name in list(overrides) if name in embed_fields}
    return ServerConfig(
        embed=EmbedSettings(model_dir=model_dir, **embed),  # type: ignore[arg-type]
        data_dir=data_dir,
        host="127.0.0.1",
        port=0,
        grace_s=2.0,
        **overrides,  # type: ignore[arg-type]
    )
