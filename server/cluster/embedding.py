"""The embedding deployment as a front uses it: the model's engines and batch queues in Ray
Serve replicas (`replicas.EmbedderReplica`; CPU or GPU, autoscaled on the calls they hold),
reached through `Embedder`s that the core uses as it would a local batch queue.

The front sends a request's images or texts in one call, and each image of a bulk add as a
call of its own (the replica's batch queue gathers calls into batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from lookalike.server.cluster.calls import ask
from lookalike.server.cluster.deployments import deploy_embedder, replicas_running, silent_apps
from lookalike.server.cluster.settings import EmbedPlacement
from lookalike.server.embed.batcher import BatcherStats
from lookalike.server.embed.embedders import TextSide
from lookalike.server.embed.engine import ModelInfo
from lookalike.server.embed.preprocess import ImageInput
from lookalike.server.embed.settings import EmbedSettings
from lookalike.server.errors import OverloadedError
from lookalike.server.metrics import Metrics

__all__ = ["EmbedderDeployment", "RemoteEmbedder", "RemoteEmbedders"]

log = logging.getLogger(__name__)

Input = TypeVar("Input")


@dataclasses.dataclass(frozen=True)
class EmbedderDeployment:
    """The embedding application, called through its handle."""

    app: str
    handle: Any  # DeploymentHandle
    timeout_s: float
    metrics: Metrics

    async def call(self, method: str, *args: Any) -> Any:
        remote = getattr(self.handle, method).remote
        return await ask(
            self.app,
            lambda: remote(*args),
            timeout_s=self.timeout_s,
            what="the embedder",
            metrics=self.metrics,
        )


class RemoteEmbedder(Generic[Input]):
    """The `Embedder` of one tower of the embedding deployment, seen from the front: it admits
    up to `max_queue` inputs in flight and refuses more (RESOURCE_EXHAUSTED) as a local queue
    does."""

    def __init__(
        self, deployment: EmbedderDeployment, method: str, *, max_queue: int, kind: str
    ) -> None:
        self._deployment, self._method = deployment, method
        self._max_queue, self._kind = max_queue, kind
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
            vectors: np.ndarray = await self._deployment.call(self._method, inputs)
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
        settings: EmbedSettings,
        placement: EmbedPlacement,
        *,
        timeout_s: float,
        watch_interval_s: float,
        on_health_change: Callable[[str | None], None],
        metrics: Metrics,
    ) -> None:
        self._settings, self._placement, self._timeout_s = settings, placement, timeout_s
        self._metrics = metrics
        self._watch_interval_s, self._on_health_change = watch_interval_s, on_health_change
        self._watcher: asyncio.Task[None] | None = None
        self._trouble: str | None = None
        self._image: RemoteEmbedder[ImageInput] | None = None
        self._model: ModelInfo | None = None
        self.text: TextSide | None = None
        self.no_text_reason = ""

    @property
    def model(self) -> ModelInfo:
        assert self._model is not None, "not open"
        return self._model

    @property
    def image(self) -> RemoteEmbedder[ImageInput]:
        assert self._image is not None, "not open"
        return self._image

    async def open(self) -> None:
        from ray import serve

        app = await asyncio.to_thread(deploy_embedder, self._settings, self._placement)
        deployment = EmbedderDeployment(
            app, serve.get_app_handle(app), self._timeout_s, self._metrics
        )
        described = await deployment.call("describe")
        self._model, self.no_text_reason = described.model, described.no_text_reason
        self._image = RemoteEmbedder(
            deployment, "embed_images", max_queue=self._settings.batcher.max_queue, kind="image"
        )
        if described.text_model is not None:
            texts: RemoteEmbedder[str] = RemoteEmbedder(
                deployment,
                "embed_texts",
                max_queue=self._settings.text_batcher.max_queue,
                kind="text",
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
            self._metrics.replicas_running.labels(app).set(found[app][0])
            trouble = silent_apps(found, {app: "the embedder"})
            if trouble != self._trouble:
                self._trouble = trouble
                self._on_health_change(trouble)
