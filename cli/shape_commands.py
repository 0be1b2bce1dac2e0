"""`lookalike clusters` and `lookalike outliers`: the shape of a collection without a query,
as the web app's Overview shows it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from lookalike.cli.common import Progress
from lookalike.cli.connection import server_command
from lookalike.client.api import Client

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    clusters = server_command(
        commands,
        "clusters",
        "groups of similar items without a query, largest first, each with the items nearest "
        "its centre",
        clusters_command,
    )
    clusters.add_argument("--count", type=int, default=12, help="groups (1 to 100)")
    clusters.add_argument("--per-cluster", type=int, default=4, help="items shown per group")
    clusters.add_argument(
        "--sample", type=int, default=10_000, help="whole images clustered at most (uniformly)"
    )
    clusters.add_argument("--json", action="store_true", help="print one JSON object")
    outliers = server_command(
        commands,
        "outliers",
        "the most unusual items: those farthest from their nearest other item",
        outliers_command,
    )
    outliers.add_argument("-n", type=int, default=20, help="how many, most unusual first")
    outliers.add_argument("--json", action="store_true", help="print one JSON object")


def clusters_command(client: Client, args: argparse.Namespace) -> int:
    found = client.clusters(args.count, per_cluster=args.per_cluster, sample=args.sample)
    if args.json:
        print(json.dumps(dataclasses.asdict(found)))
        return 0
    for number, cluster in enumerate(found.clusters, 1):
        share = cluster.size / max(found.sampled, 1)
        print(f"group {number}: {cluster.size} items ({share:.0%})")
        for match in cluster.representatives:
            print(f"  {match.score:.4f}  {match.id}")
    of = "" if found.sampled == found.total else f" (a sample of {found.sampled:,})"
    print(f"{len(found.clusters)} groups of {found.total:,} items{of}")
    return 0


def outliers_command(client: Client, args: argparse.Namespace) -> int:
    """Each item's nearest other (the neighbour scan at k=1, page by page), lowest first."""
    nearest: list[tuple[float, str, str]] = []
    scanned = 0
    progress = Progress(unit="item", desc="scanning", file=sys.stderr, disable=None)
    try:
        for page in client.neighbours(-1.0, k=1):
            progress.total = page.total
            progress.update(page.scanned - scanned)
            scanned = page.scanned
            nearest += [(near[0][1], item, near[0][0]) for item, near in page.neighbours.items()]
    finally:
        progress.close()
    nearest.sort()
    shown = nearest[: args.n]
    if args.json:
        rows = [{"id": i, "nearest": other, "score": score} for score, i, other in shown]
        print(json.dumps({"scanned": scanned, "outliers": rows}))
        return 0
    for score, item_id, other in shown:
        print(f"  {score:.4f}  {item_id}  (nearest: {other})")
    print(f"the {len(shown)} items least like any other, of {scanned:,} scanned")
    return 0
