"""The embedding deployment as a front uses it: the model's engines and batch queues in Ray
Serve replicas (`replicas.EmbedderReplica`; CPU or GPU, autoscaled on the calls they hold),
reached through `Embedder`s that the core uses as it would a local batch queue.

The front sends a request's images or texts in one call, and each image of a bulk add as a
call of its own (the replica's batch queue gathers calls into batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from lookalike.server.batcher import BatcherStats
from lookalike.server.cluster.calls import ask
from lookalike.server.cluster.deployments import deploy_embedder, replicas_running, silent_apps
from lookalike.server.cluster.settings import EmbedPlacement
from lookalike.server.config import ServerConfig
from lookalike.server.embedders import TextSide
from lookalike.server.engine import ModelInfo
from lookalike.server.errors import OverloadedError

__all__ = ["RemoteEmbedder", "RemoteEmbedders"]

log = logging.getLogger(__name__)

Input = TypeVar("Input")


class RemoteEmbedder(Generic[Input]):
    """The `Embedder` of one tower of the embedding deployment, seen from the front: it admits
    up to `max_queue` inputs in flight and refuses more (RESOURCE_EXHAUSTED) as a local queue
    does."""

    def __init__(
        self, app: str, handle: Any, method: str, *, max_queue: int, timeout_s: float, kind: str
    ) -> None:
        self._app, self._handle, self._method = app, handle, method
        self._max_queue, self._timeout_s, self._kind = max_queue, timeout_s, kind
        self._pending = self._calls = self._inputs = 0

    def has_room(self, count: int) -> bool:
        return self._pending + count <= self._max_queue

    def submit(self, inputs: Sequence[Input]) -> list[asyncio.Future[np.ndarray]]:
        self._admit(len(inputs))
        return [asyncio.ensure_future(self._first(self._call([one]))) for one in inputs]

    async def embed(self, inputs: Sequence[Input]) -> np.ndarray:
        self._admit(len(inputs))
        return await self._call(list(inputs))

    def stats(self) -> BatcherStats:
        mean = self._inputs / self._calls if self._calls else 0.0
        return BatcherStats(self._pending, self._calls, self._inputs, mean, healthy=True)

    def _admit(self, count: int) -> None:
        if not self.has_room(count):
            raise OverloadedError(
                f"server is at capacity ({self._pending} {self._kind}s on their way to the "
                f"embedder, limit {self._max_queue}); retry with backoff"
            )
        self._pending += count

    async def _call(self, inputs: list[Input]) -> np.ndarray:
        """Embed admitted inputs through the deployment; they leave the count when answered."""
        try:
            method = getattr(self._handle, self._method)
            vectors = await ask(
                self._app, lambda: method.remote(inputs), self._timeout_s, "the embedder"
            )
        finally:
            self._pending -= len(inputs)
        self._calls, self._inputs = self._calls + 1, self._inputs + len(inputs)
        return vectors

    @staticmethod
    async def _first(vectors: Any) -> np.ndarray:
        return (await vectors)[0]


class RemoteEmbedders:
    """The embedding deployment as a front uses it: run (or found running) at `open`, its two
    towers as `Embedder`s, and its replicas watched: health reports "embedder" in trouble
    while none runs."""

    def __init__(
        self,
        config: ServerConfig,
        placement: EmbedPlacement,
        *,
        timeout_s: float,
        watch_interval_s: float,
        on_health_change: Callable[[str | None], None],
    ) -> None:
        self._config, self._placement, self._timeout_s = config, placement, timeout_s
        self._watch_interval_s, self._on_health_change = watch_interval_s, on_health_change
        self._watcher: asyncio.Task[None] | None = None
        self._trouble: str | None = None
        self._image: RemoteEmbedder[bytes] | None = None
        self._model: ModelInfo | None = None
        self.text: TextSide | None = None
        self.no_text_reason = ""

    @property
    def model(self) -> ModelInfo:
        assert self._model is not None, "not open"
        return self._model

    @property
    def image(self) -> RemoteEmbedder[bytes]:
        assert self._image is not None, "not open"
        return self._image

    async def open(self) -> None:
        from ray import serve

        app = await asyncio.to_thread(deploy_embedder, self._config, self._placement)
        handle = serve.get_app_handle(app)
        described = await ask(
            app, lambda: handle.describe.remote(), self._timeout_s, "the embedder"
        )
        settings = {"timeout_s": self._timeout_s}
        self._model, self.no_text_reason = described.model, described.no_text_reason
        self._image = RemoteEmbedder(
            app,
            handle,
            "embed_images",
            max_queue=self._config.batcher.max_queue,
            kind="image",
            **settings,
        )
        if described.text_model is not None:
            texts: RemoteEmbedder[str] = RemoteEmbedder(
                app,
                handle,
                "embed_texts",
                max_queue=self._config.text_batcher.max_queue,
                kind="text",
                **settings,
            )
            self.text = TextSide(described.text_model, texts)
        self._watcher = asyncio.create_task(self._watch(app))

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def _watch(self, app: str) -> None:
        while True:
            await asyncio.sleep(self._watch_interval_s)
            try:
                found = await asyncio.to_thread(replicas_running, [app])
            except Exception:  # the cluster may be restarting: look again next time
                log.exception("watching the embedder's replicas failed; trying again")
                continue
            trouble = silent_apps(found, {app: "the embedder"})
            if trouble != self._trouble:
                self._trouble = trouble
                self._on_health_change(trouble)
