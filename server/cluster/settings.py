"""How a front serves on Ray: where the shards' and the embedder's replicas go, and how the
front watches them. Plain settings, importable without Ray."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

__all__ = ["ShardPlacement", "EmbedPlacement", "ClusterSettings"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardPlacement:
    replicas: int = 1  # per shard
    replicas_of: Mapping[int, int] = dataclasses.field(default_factory=dict)  # shard -> its own
    cpus: float = 0.25  # per replica
    # Reserve the shard's size of Ray's `memory` resource per replica, so that Ray places
    # replicas only on nodes with room for their shard (shared page cache aside).
    reserve_memory: bool = True

    def replicas_for(self, shard: int) -> int:
        return self.replicas_of.get(shard, self.replicas)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbedPlacement:
    """The embedding deployment: `replicas` of them, or autoscaled between `replicas` and
    `max_replicas` on the calls each holds (Serve's autoscaler aims at `target_calls`)."""

    replicas: int = 1
    max_replicas: int = 0  # above `replicas`: autoscale; else a fixed count
    cpus: float = 1.0  # per replica
    gpus: float = 0.0  # per replica (with --provider cuda)
    target_calls: int = 32  # inputs in flight per replica the autoscaler aims at


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterSettings:
    address: str | None = None  # a Ray cluster; None: RAY_ADDRESS, else a local Ray
    placement: ShardPlacement = dataclasses.field(default_factory=ShardPlacement)
    embedding: EmbedPlacement | None = None  # None: the front embeds queries itself
    shard_timeout_s: float = 10.0  # a shard that has not answered by then: UNAVAILABLE
    embed_timeout_s: float = 60.0  # the embedder, likewise
    watch_interval_s: float = 2.0  # how often replicas' health and CURRENT are looked at
    retire_after_s: float = 60.0  # a replaced version's shards keep running this long
