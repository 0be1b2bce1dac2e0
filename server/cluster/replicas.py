"""The classes Ray Serve deploys: what one replica holds and answers.

A shard replica opens one shard of one version of a built index (checked against the manifest,
memory-mapped read-only: replicas on one node share the page cache) and answers for it alone
with `ShardSearcher`; the front merges the shards' answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np

from lookalike.server.built_index import open_shards, read_manifest
from lookalike.server.index import IndexSettings
from lookalike.server.items import StoredItem
from lookalike.server.shard_search import Query, ShardAnswer, ShardSearcher

__all__ = ["ShardReplica"]


class ShardReplica:
    def __init__(self, index_dir: str, version: str, number: int, search: IndexSettings) -> None:
        """The shard `number` of that `version` (named, not the current one: a version
        published while the shards start must not mix in)."""
        manifest = read_manifest(Path(index_dir), version)
        one = dataclasses.replace(manifest, shards=[manifest.shards[number]])
        (shard,) = open_shards(Path(index_dir), one, manifest.search_settings(search))
        self.searcher = ShardSearcher(shard)

    async def search(self, vector: np.ndarray, k: int, query: Query) -> ShardAnswer:
        return await asyncio.to_thread(self.searcher.search, vector, k, query)

    async def get(self, item_id: str, with_vector: bool) -> StoredItem:
        return await asyncio.to_thread(self.searcher.get, item_id, with_vector=with_vector)
