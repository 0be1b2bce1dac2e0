"""The Ray Serve applications a front runs: one per shard of each index version served, and
the embedder.

An application is named after the index, the version and the shard
(`lookalike-1a2b3c4d-v00002-shard-00003`), so that two versions run side by side while a front
switches from one to the other, and a second front on the same index finds the first one's
applications running instead of redeploying them; the same holds for the embedder (named
after the model package and the settings it runs with). Serve runs without HTTP proxies: the
gRPC front reaches the replicas through their handles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lookalike.server.cluster.settings import EmbedPlacement, ShardPlacement
from lookalike.server.embed.settings import EmbedSettings
from lookalike.server.index.built_index import IndexManifest
from lookalike.server.index.settings import IndexSettings

__all__ = [
    "shard_app_names",
    "deploy_version",
    "retire",
    "embedder_app_name",
    "deploy_embedder",
    "replicas_running",
    "silent_apps",
]

# Requests a replica takes at once: Serve's default (5) queued a burst of 200 queries behind
# each other, 10 queries/s against 200 with this (measured on the 2-node test cluster)
MAX_ONGOING_REQUESTS = 256
# How often Serve's controller checks each replica, so how soon a crashed one is replaced:
# Serve's default (10 s) left a shard whose lone replica was killed unanswered for about 10 s
HEALTH_CHECK_PERIOD_S = 2.0
REPLICA_NAME_PREFIX = "SERVE_REPLICA::"


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

    from lookalike.server.cluster.replicas import ShardReplica

    names = shard_app_names(index_dir, manifest)
    running = serve.status().applications
    deployment = serve.deployment(
        max_ongoing_requests=MAX_ONGOING_REQUESTS, health_check_period_s=HEALTH_CHECK_PERIOD_S
    )(ShardReplica)
    targets = []
    for entry, name in zip(manifest.shards, names, strict=True):
        if name in running:
            continue
        options: dict[str, float] = {"num_cpus": placement.cpus}
        if placement.reserve_memory:
            options["memory"] = float(entry.index.bytes + entry.table.bytes)
        application = deployment.options(
            name="shard",
            num_replicas=placement.replicas_for(entry.number),
            ray_actor_options=options,
        ).bind(str(index_dir.resolve()), manifest.name, entry.number, search)
        targets.append(serve.RunTarget(application, name=name, route_prefix=None))
    if targets:
        serve.start(proxy_location="Disabled")  # handles only; no HTTP proxy on any node
        serve.run_many(targets)
    return names


def embedder_replica_settings(settings: EmbedSettings) -> EmbedSettings:
    """What an embedding replica runs with: the front's embedding settings (nothing of its
    store, address or secrets), the model package by its absolute path."""
    return dataclasses.replace(settings, model_dir=settings.model_dir.resolve())


def embedder_app_name(settings: EmbedSettings) -> str:
    """One embedding application per model package and embedding settings: fronts that
    agree share it (the settings hashed in a canonical form, not as their Python repr)."""
    fields = dataclasses.asdict(embedder_replica_settings(settings))
    canonical = json.dumps(fields, sort_keys=True, default=str)
    tag = hashlib.sha256(canonical.encode()).hexdigest()[:8]
    return f"lookalike-{tag}-embedder"


def deploy_embedder(settings: EmbedSettings, placement: EmbedPlacement) -> str:
    """Run the embedding deployment (unless it runs) and wait for its replicas; its name."""
    from ray import serve

    from lookalike.server.cluster.replicas import EmbedderReplica

    name = embedder_app_name(settings)
    if name in serve.status().applications:
        return name
    scaling: dict[str, Any] = (
        {
            "autoscaling_config": {
                "min_replicas": placement.replicas,
                "max_replicas": placement.max_replicas,
                "target_ongoing_requests": placement.target_calls,
            }
        }
        if placement.max_replicas > placement.replicas
        else {"num_replicas": placement.replicas}
    )
    deployment = serve.deployment(
        name="embedder",
        max_ongoing_requests=settings.batcher.max_queue,
        health_check_period_s=HEALTH_CHECK_PERIOD_S,
        ray_actor_options={"num_cpus": placement.cpus, "num_gpus": placement.gpus},
        **scaling,
    )(EmbedderReplica)
    serve.start(proxy_location="Disabled")
    serve.run(deployment.bind(embedder_replica_settings(settings)), name=name, route_prefix=None)
    return name


def retire(names: list[str]) -> None:
    """Delete these applications (their replicas stop after finishing what they hold)."""
    from ray import serve

    running = serve.status().applications
    for name in names:
        if name in running:
            serve.delete(name, _blocking=False)


def replicas_running(names: list[str]) -> dict[str, tuple[int, str]]:
    """Each application's running replicas, and its state in words (for a log line).

    A replica counts while Serve's controller says RUNNING *and* its actor is alive: the
    controller notices a crashed replica only at its next health check (9.4 s after a kill,
    measured with Serve's default period), the cluster's actor table at once; counting on the
    controller alone, a call whose lone replica died was asked again and waited for the
    replacement instead of failing UNAVAILABLE.

    The live actors are listed *before* the controller is asked: the other way round, a
    replacement created in between (alive, still starting) made up for the dead replica the
    controller had still called RUNNING, and health said SERVING seconds too early."""
    from ray import serve

    alive = _live_replicas()
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
        dead = states.get("RUNNING", 0) - alive.get(name, 0)
        if dead > 0:
            states["RUNNING"] -= dead
            states["DEAD (not yet replaced)"] = dead
        words = ", ".join(f"{state} {count}" for state, count in sorted(states.items()) if count)
        found[name] = (states.get("RUNNING", 0), words or str(application.status))
    return found


def _live_replicas() -> Counter[str]:
    """Live replica actors per Serve application, from the cluster's named actors (a replica
    is named `SERVE_REPLICA::<application>#<deployment>#<id>`; a dead actor's name is gone)."""
    import ray

    alive: Counter[str] = Counter()
    for actor in ray.util.list_named_actors(all_namespaces=True):
        name = actor["name"]
        if name.startswith(REPLICA_NAME_PREFIX):
            alive[name[len(REPLICA_NAME_PREFIX) :].split("#", 1)[0]] += 1
    return alive


def silent_apps(found: Mapping[str, tuple[int, str]], labels: Mapping[str, str]) -> str | None:
    """ "no replica answering for shard 2 (STARTING 1)", or None when each labelled
    application has a replica running."""
    silent = [f"{label} ({found[app][1]})" for app, label in labels.items() if found[app][0] == 0]
    return f"no replica answering for {', '.join(silent)}" if silent else None
