"""The Ray Serve applications of a built index: one per shard of each version served.

An application is named after the index, the version and the shard
(`lookalike-1a2b3c4d-v00002-shard-00003`), so that two versions run side by side while a front
switches from one to the other, and a second front on the same index finds the first one's
applications running instead of redeploying them. Serve runs without HTTP proxies: the gRPC
front reaches the replicas through their handles.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from lookalike.server.built_index import IndexManifest
from lookalike.server.cluster.replicas import ShardReplica
from lookalike.server.index import IndexSettings

__all__ = ["ShardPlacement", "shard_app_names", "deploy_version", "retire", "replicas_running"]

# Requests a replica takes at once: Serve's default (5) queued a burst of 200 queries behind
# each other, 10 queries/s against 200 with this (measured on the 2-node test cluster)
MAX_ONGOING_REQUESTS = 256


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardPlacement:
    replicas: int = 1  # per shard
    cpus: float = 0.25  # per replica
    # Reserve the shard's size of Ray's `memory` resource per replica, so that Ray places
    # replicas only on nodes with room for their shard (shared page cache aside).
    reserve_memory: bool = True


def shard_app_names(index_dir: Path, manifest: IndexManifest) -> list[str]:
    """The Serve application of each shard of this version, by shard number."""
    tag = hashlib.sha256(str(index_dir.resolve()).encode()).hexdigest()[:8]
    return [f"lookalike-{tag}-{manifest.name}-shard-{e.number:05d}" for e in manifest.shards]


def deploy_version(
    index_dir: Path, manifest: IndexManifest, search: IndexSettings, placement: ShardPlacement
) -> list[str]:
    """Run every shard of this version (those not running yet) on the connected Ray cluster
    and wait until each has its replicas; return the applications' names."""
    from ray import serve

    names = shard_app_names(index_dir, manifest)
    running = serve.status().applications
    deployment = serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS)(ShardReplica)
    targets = []
    for entry, name in zip(manifest.shards, names, strict=True):
        if name in running:
            continue
        options: dict[str, float] = {"num_cpus": placement.cpus}
        if placement.reserve_memory:
            options["memory"] = float(entry.index.bytes + entry.table.bytes)
        application = deployment.options(
            name="shard", num_replicas=placement.replicas, ray_actor_options=options
        ).bind(str(index_dir.resolve()), manifest.name, entry.number, search)
        targets.append(serve.RunTarget(application, name=name, route_prefix=None))
    if targets:
        serve.start(proxy_location="Disabled")  # handles only; no HTTP proxy on any node
        serve.run_many(targets)
    return names


def retire(names: list[str]) -> None:
    """Delete these applications (their replicas stop after finishing what they hold)."""
    from ray import serve

    running = serve.status().applications
    for name in names:
        if name in running:
            serve.delete(name, _blocking=False)


def replicas_running(names: list[str]) -> dict[str, tuple[int, str]]:
    """Each application's running replicas, and its state in words (for a log line)."""
    from ray import serve

    applications = serve.status().applications
    found: dict[str, tuple[int, str]] = {}
    for name in names:
        application = applications.get(name)
        if application is None:
            found[name] = (0, "not deployed")
            continue
        states: dict[str, int] = {}
        for deployment in application.deployments.values():
            for state, count in deployment.replica_states.items():
                key = str(getattr(state, "value", state))  # an enum of str
                states[key] = states.get(key, 0) + count
        words = ", ".join(f"{state} {count}" for state, count in sorted(states.items()))
        found[name] = (states.get("RUNNING", 0), words or str(application.status))
    return found
