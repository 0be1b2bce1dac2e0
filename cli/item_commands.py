"""`lookalike stats`, `get ID` and `delete ID...`: what a server runs and holds, one item,
and removing items."""

from __future__ import annotations

import argparse
import dataclasses
import json

from lookalike.cli.common import key_value_pairs
from lookalike.cli.connection import server_command
from lookalike.client.api import Client
from lookalike.client.report import describe_region

__all__ = ["add_commands", "stats_command", "get_command", "delete_command"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    stats = server_command(commands, "stats", "what the server runs and holds", stats_command)
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    get = server_command(commands, "get", "one item's metadata", get_command)
    get.add_argument("id", help="the item's id (for `index`: its path relative to the folder)")
    get.add_argument("--json", action="store_true", help="print one JSON object")
    delete = server_command(commands, "delete", "remove items", delete_command)
    delete.add_argument("ids", nargs="+", metavar="ID", help="ids of the items to remove")
    tag = server_command(
        commands,
        "tag",
        "set or remove metadata on stored items (their vectors stay), in one durable commit",
        tag_command,
    )
    tag.add_argument("ids", nargs="+", metavar="ID", help="ids of the items to change")
    tag.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a pair to set; repeat"
    )
    tag.add_argument(
        "--remove", action="append", default=[], metavar="KEY", help="a key to remove; repeat"
    )


def stats_command(client: Client, args: argparse.Namespace) -> int:
    stats = client.stats()
    if args.json:
        print(json.dumps(dataclasses.asdict(stats)))
        return 0
    weights = "RANDOM WEIGHTS (results carry no meaning)" if stats.random_weights else "trained"
    print(f"server      {client.target} (lookalike {stats.version})")
    print(f"items       {stats.items} ({stats.vectors} vectors: whole images and regions)")
    print(f"disk        {stats.disk_bytes / 2**20:,.1f} MiB")
    revision = f"@{stats.model_revision}" if stats.model_revision else ""
    print(
        f"model       {stats.model_id}{revision} ({stats.model_family}), {stats.dims}-d, "
        f"{weights}; manifest sha256 {stats.manifest_sha256[:16]}"
    )
    if stats.score_scale:
        scale = stats.score_scale
        print(
            f"probability {scale['kind']}(cosine * {scale['scale']:.4g} {scale['bias']:+.4g}) "
            "for an image and a text"
        )
    providers = ", ".join(stats.providers)
    print(f"engine      {stats.precision} on {providers}, preprocess {stats.preprocess_mode}")
    text = (
        f"{stats.text_precision}, queue {stats.text_queue_depth}" if stats.text_enabled else "off"
    )
    print(f"text        {text}")
    print(f"index       {', '.join(f'{k}={v}' for k, v in stats.index.items())}")
    if stats.index_version:
        print(f"version     {stats.index_version}, {len(stats.shards)} shards")
        for shard in stats.shards:
            print(
                f"  shard {shard['number']:<5} {shard['items']} items, {shard['vectors']} "
                f"vectors, {shard['replicas']} replicas answering"
            )
    print(
        f"batching    {stats.batches} batches, mean size {stats.mean_batch_size:.1f}, "
        f"queue {stats.queue_depth}"
    )
    print(f"uptime      {stats.uptime_seconds:.0f}s")
    return 0


def get_command(client: Client, args: argparse.Namespace) -> int:
    item = client.get(args.id)
    if args.json:
        regions = [dataclasses.asdict(region) for region in item.regions]
        print(json.dumps({"id": item.id, "metadata": item.metadata, "regions": regions}))
    else:
        print(item.id)
        for key, value in sorted(item.metadata.items()):
            print(f"  {key} = {value}")
        for region in item.regions:
            print(f"  {describe_region(region)}")
    return 0


def tag_command(client: Client, args: argparse.Namespace) -> int:
    pairs = key_value_pairs(args.set, "--set")
    result = client.update_metadata(args.ids, set=pairs, remove=args.remove)
    print(f"updated {result.updated}")
    for item_id in result.missing:
        print(f"  not found  {item_id}")
    return 0


def delete_command(client: Client, args: argparse.Namespace) -> int:
    result = client.delete(args.ids)
    print(f"deleted {result.deleted}")
    for item_id in result.missing:
        print(f"  not found  {item_id}")
    return 0
