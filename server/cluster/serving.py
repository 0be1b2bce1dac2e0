"""A built index served by Ray Serve: one deployment per shard, and the repository that fans a
query out to them.

Each shard is a Serve application of its own (`shard-00003`), so that its replica count is set
per shard and a version switch can replace shards one by one. A replica opens its one shard
(checked against the manifest, memory-mapped: replicas on one node share the page cache) and
answers with `ShardSearcher`. `ClusterRepository` satisfies the `Repository` protocol through
the deployments' handles: the transport-free core runs on it unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from lookalike.server.built_index import (
    IndexManifest,
    check_model,
    open_shards,
    read_manifest,
)
from lookalike.server.engine import ModelIdentity
from lookalike.server.errors import LookalikeError
from lookalike.server.index import IndexSettings
from lookalike.server.items import (
    SearchResult,
    StoredItem,
)
from lookalike.server.shard_search import ShardAnswer, ShardSearcher, merge_matches
from lookalike.server.sharded_repository import BuiltIndexRepository

__all__ = [
    "ShardReplica",
    "deploy_shards",
    "ClusterRepository",
    "ClusterSettings",
    "shard_app_name",
]

T = TypeVar("T")
# Requests a replica takes at once: Serve's default (5) queued a burst of 200 queries behind
# each other, 10 queries/s against 200 with this (measured on the 2-node test cluster)
MAX_ONGOING_REQUESTS = 256


def shard_app_name(number: int) -> str:
    return f"shard-{number:05d}"


class ShardReplica:
    """One replica of one shard (the class Serve deploys)."""

    def __init__(self, index_dir: str, version: str, number: int, search: IndexSettings) -> None:
        """The shard `number` of that `version` (not the current one: a version published
        while the shards start must not mix in)."""
        manifest = read_manifest(Path(index_dir), version)
        one = dataclasses.replace(manifest, shards=[manifest.shards[number]])
        (shard,) = open_shards(Path(index_dir), one, manifest.search_settings(search))
        self.searcher = ShardSearcher(shard)

    async def search(
        self,
        query: np.ndarray,
        k: int,
        filter_pairs: Mapping[str, str] | None,
        min_score: float | None,
        exclude_id: str | None,
    ) -> ShardAnswer:
        return await asyncio.to_thread(
            self.searcher.search,
            query,
            k,
            filter_pairs=filter_pairs,
            min_score=min_score,
            exclude_id=exclude_id,
        )

    async def get(self, item_id: str, with_vector: bool) -> StoredItem:
        return await asyncio.to_thread(self.searcher.get, item_id, with_vector=with_vector)


def deploy_shards(
    index_dir: Path,
    manifest: IndexManifest,
    search: IndexSettings,
    *,
    replicas: int = 1,
    cpus_per_replica: float = 0.25,
) -> None:
    """Run every shard of this version of the index on the connected Ray cluster."""
    from ray import serve

    deployment = serve.deployment(
        max_ongoing_requests=MAX_ONGOING_REQUESTS,
        ray_actor_options={"num_cpus": cpus_per_replica},
    )(ShardReplica)
    for entry in manifest.shards:
        name = shard_app_name(entry.number)
        application = deployment.options(name=name, num_replicas=replicas).bind(
            str(index_dir.resolve()), manifest.name, entry.number, search
        )
        serve.run(application, name=name, route_prefix=None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterSettings:
    address: str | None = None  # a Ray cluster; None: RAY_ADDRESS, else a local Ray
    replicas: int = 1  # per shard


async def _answer(response: Awaitable[T]) -> T:
    """A replica's answer; its own error as it raised it (Ray wraps it in a `RayTaskError`
    that also subclasses it, with the replica's traceback in its message)."""
    try:
        return await response
    except LookalikeError as error:
        cause = getattr(error, "cause", None)
        raise (cause if isinstance(cause, LookalikeError) else error) from None


class ClusterRepository(BuiltIndexRepository):
    """The `Repository` of an index whose shards run as Serve deployments on a Ray cluster:
    opening it connects to the cluster and deploys (or updates) the shards of the index's
    current version; closing it leaves them running for other fronts, unless it started a
    local Ray for itself."""

    def __init__(
        self,
        index_dir: Path,
        identity: ModelIdentity,
        search: IndexSettings,
        cluster: ClusterSettings,
    ) -> None:
        super().__init__(index_dir, identity, search)
        self._cluster = cluster
        self._handles: list[Any] = []
        self._own_ray = False

    async def open(self) -> int:
        return await asyncio.to_thread(self._open)

    def _open(self) -> int:
        import ray
        from ray import serve

        manifest = read_manifest(self.index_dir)
        check_model(manifest, self.identity, self.index_dir)
        if not ray.is_initialized():
            address = self._cluster.address or os.environ.get("RAY_ADDRESS")
            ray.init(address=address, include_dashboard=False)
            self._own_ray = not address
        deploy_shards(
            self.index_dir, manifest, self._search_settings, replicas=self._cluster.replicas
        )
        self._handles = [serve.get_app_handle(shard_app_name(e.number)) for e in manifest.shards]
        self._manifest = manifest
        return manifest.items

    async def close(self) -> None:
        self._handles = []
        if self._own_ray:
            import ray

            ray.shutdown()

    async def get(self, item_id: str, *, with_vector: bool = False) -> StoredItem:
        handle = self._handles[self._shard_for(item_id)]
        return await _answer(handle.get.remote(item_id, with_vector))

    async def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        filter_pairs: Mapping[str, str] | None = None,
        min_score: float | None = None,
        exclude_id: str | None = None,
    ) -> SearchResult:
        calls = [
            handle.search.remote(vector, k, dict(filter_pairs or {}), min_score, exclude_id)
            for handle in self._handles
        ]
        return merge_matches(await asyncio.gather(*map(_answer, calls)), k)
