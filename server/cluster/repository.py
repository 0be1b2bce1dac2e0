"""A built index served by Ray Serve: the repository that fans a query out to the shards'
deployments (`cluster.deployments`), follows the index's current version, and watches that
every shard has a replica answering.

`ClusterRepository` satisfies the `Repository` protocol through the deployments' handles, so
the transport-free core and the gRPC front run on it unchanged. A call pins one version: its
answer never mixes two. A replica that dies holding a call is asked again through another;
a shard with no replica answering makes the call fail with `ReplicaUnavailableError`
(UNAVAILABLE), never with a partial answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from lookalike.export.manifest import ModelIdentity
from lookalike.server.cluster.calls import ask, unavailable
from lookalike.server.cluster.deployments import (
    deploy_version,
    replicas_running,
    retire,
    silent_apps,
)
from lookalike.server.cluster.settings import ClusterSettings
from lookalike.server.cluster.shard_queues import SendBatch, ShardQueue
from lookalike.server.errors import LookalikeError
from lookalike.server.index.built_index import IndexManifest, check_model, read_manifest
from lookalike.server.index.repository import SearchResult, StoredItem
from lookalike.server.index.settings import IndexSettings
from lookalike.server.index.shard_search import Query, ShardItems, merge_matches
from lookalike.server.index.sharded_repository import BuiltIndexRepository
from lookalike.server.metrics import Metrics

__all__ = ["ClusterRepository", "HealthListener"]

log = logging.getLogger(__name__)

HealthListener = Callable[[str | None], None]  # None: every shard answers; else why not
T = TypeVar("T")
# Calls a front keeps in flight to a shard per replica; queries arriving meanwhile wait and go
# together in the next call (cluster.shard_queues)
CALLS_PER_REPLICA = 2


@dataclasses.dataclass(frozen=True)
class _Deployed:
    """One version's shards as Serve applications, by shard number."""

    manifest: IndexManifest
    apps: list[str]
    handles: list[Any]  # DeploymentHandle
    queues: list[ShardQueue]  # searches bound for each shard, sent in batches


class ClusterRepository(BuiltIndexRepository[_Deployed]):
    """The `Repository` of an index whose shards run as Serve deployments on a Ray cluster.

    Opening it deploys the current version's shards on the connected cluster (or finds them
    running); while open it switches to each version `build-index` publishes, once that
    version's shards run, and retires the replaced shards `retire_after_s` later. Closing it
    leaves the current shards running for other fronts.
    """

    def __init__(
        self,
        index_dir: Path,
        identity: ModelIdentity,
        search: IndexSettings,
        cluster: ClusterSettings,
        *,
        metrics: Metrics,
        on_health_change: HealthListener | None = None,
    ) -> None:
        super().__init__(index_dir, identity, search)
        self._cluster, self._on_health_change = cluster, on_health_change
        self._metrics = metrics
        self._running: dict[str, int] = {}  # application -> replicas running, at the last look
        self._trouble: str | None = None
        self._retiring: list[tuple[float, list[str]]] = []  # (when, applications)
        self._refused_version: str | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def open(self) -> int:
        manifest = await asyncio.to_thread(read_manifest, self.index_dir)
        check_model(manifest, self.identity, self.index_dir)
        self._served = await asyncio.to_thread(self._deploy, manifest)
        await self._look()
        self._watcher = asyncio.create_task(self._watch())
        return manifest.items

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for _, apps in self._retiring:  # nobody is left to use them
            await asyncio.to_thread(retire, apps)
        self._retiring, self._served = [], None

    # -- answering -------------------------------------------------------------------------

    async def _get(self, served: _Deployed, item_id: str, with_vector: bool) -> StoredItem:
        number = self._shard_for(served, item_id)
        app, handle = self._answering(served, number)
        return await self._ask(
            app,
            lambda: handle.get.remote(item_id, with_vector),
            _shard_words(served.manifest, number),
        )

    async def _search(
        self, served: _Deployed, vector: np.ndarray, k: int, query: Query
    ) -> SearchResult:
        for number in range(len(served.apps)):
            self._answering(served, number)
        answers = await asyncio.gather(*(queue.search(vector, k, query) for queue in served.queues))
        return merge_matches(answers, k)

    async def _whole_images(
        self,
        served: _Deployed,
        shard: int,
        first_key: int,
        count: int,
        filter_pairs: Mapping[str, str],
    ) -> ShardItems:
        app, handle = self._answering(served, shard)
        wanted = dict(filter_pairs)
        return await self._ask(
            app,
            lambda: handle.whole_images_from.remote(first_key, count, wanted),
            _shard_words(served.manifest, shard),
        )

    def _replicas(self, served: _Deployed) -> list[int]:
        return [self._running.get(app, 0) for app in served.apps]

    def _answering(self, served: _Deployed, number: int) -> tuple[str, Any]:
        """The shard's application and handle; UNAVAILABLE at once while the last look saw no
        replica of it running."""
        app = served.apps[number]
        if self._running.get(app, 0) == 0:
            self._metrics.replica_failures.labels(app, "unavailable").inc()
            raise unavailable(_shard_words(served.manifest, number), "no replica running")
        return app, served.handles[number]

    async def _ask(self, app: str, call: Callable[[], Awaitable[T]], what: str) -> T:
        return await ask(
            app, call, timeout_s=self._cluster.shard_timeout_s, what=what, metrics=self._metrics
        )

    # -- watching: health, new versions, retirement ----------------------------------------

    def _deploy(self, manifest: IndexManifest) -> _Deployed:
        from ray import serve

        settings, placement = (
            manifest.search_settings(self._search_settings),
            self._cluster.placement,
        )
        apps = deploy_version(self.index_dir, manifest, settings, placement)
        handles = [serve.get_app_handle(app) for app in apps]
        queues = [
            ShardQueue(
                self._batch_sender(app, handle, _shard_words(manifest, n)),
                in_flight=CALLS_PER_REPLICA * placement.replicas_for(n),
            )
            for n, (app, handle) in enumerate(zip(apps, handles, strict=True))
        ]
        return _Deployed(manifest, apps, handles, queues)

    def _batch_sender(self, app: str, handle: Any, what: str) -> SendBatch:
        async def send(vectors: np.ndarray, ks: list[int], queries: list[Query]) -> Any:
            return await self._ask(
                app, lambda: handle.search_many.remote(vectors, ks, queries), what
            )

        return send

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._cluster.watch_interval_s)
            try:
                await self._look()
                await self._follow_current_version()
                await self._retire_due()
            except Exception:  # the cluster may be restarting: look again next time
                log.exception("watching the index's shards on Ray failed; trying again")

    async def _look(self) -> None:
        """Count the running replicas of each shard served (a replaced version's too, for the
        calls still on it); health follows the current version's."""
        served = self._pin()
        apps = served.apps + [app for _, retiring in self._retiring for app in retiring]
        found = await asyncio.to_thread(replicas_running, apps)
        self._running = {app: running for app, (running, _) in found.items()}
        for app, running in self._running.items():
            self._metrics.replicas_running.labels(app).set(running)
        labels = {app: f"shard {number}" for number, app in enumerate(served.apps)}
        silent = silent_apps(found, labels)
        trouble = f"index version {served.manifest.name}: {silent}" if silent else None
        if trouble != self._trouble:
            self._trouble = trouble
            if self._on_health_change is not None:
                self._on_health_change(trouble)

    async def _follow_current_version(self) -> None:
        """Serve the version CURRENT names, once all its shards run (a call that started on
        the previous version finishes there)."""
        served = self._pin()
        manifest = await asyncio.to_thread(read_manifest, self.index_dir)
        if manifest.name in (served.manifest.name, self._refused_version):
            return
        try:
            check_model(manifest, self.identity, self.index_dir)
        except LookalikeError as exc:
            self._refused_version = manifest.name
            log.error("not switching to version %s: %s", manifest.name, exc)
            return
        started = time.monotonic()
        log.info("index version %s published: starting its shards", manifest.name)
        deployed = await asyncio.to_thread(self._deploy, manifest)
        found = await asyncio.to_thread(replicas_running, deployed.apps)
        self._running.update({app: running for app, (running, _) in found.items()})
        self._served = deployed
        replaced = [app for app in served.apps if app not in deployed.apps]
        self._retiring.append((time.monotonic() + self._cluster.retire_after_s, replaced))
        await self._look()
        log.info(
            "now serving index version %s (%d items; switched in %.1fs); version %s retires in %gs",
            manifest.name,
            manifest.items,
            time.monotonic() - started,
            served.manifest.name,
            self._cluster.retire_after_s,
        )

    async def _retire_due(self) -> None:
        now = time.monotonic()
        due = [apps for when, apps in self._retiring if when <= now]
        self._retiring = [(when, apps) for when, apps in self._retiring if when > now]
        for apps in due:
            await asyncio.to_thread(retire, apps)
            for app in apps:
                self._metrics.replicas_running.remove(app)


def _shard_words(manifest: IndexManifest, number: int) -> str:
    return f"shard {number} of index version {manifest.name}"
