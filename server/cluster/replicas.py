"""The classes Ray Serve deploys: what one replica holds and answers (imported where Ray is).

A shard replica opens one shard of one version of a built index (checked against the manifest,
memory-mapped read-only: replicas on one node share the page cache) and answers for it alone
with `ShardSearcher`; the front merges the shards' answers. An embedder replica loads the
model package exactly as a server does (`LocalEmbedders`: same engine, precision,
preprocessing and batch queue), so an embedding does not depend on which replica, or which
server, computed it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np

from lookalike.server.embed.embedders import LocalEmbedders
from lookalike.server.embed.engine import ModelInfo
from lookalike.server.embed.onnx_engine import OnnxEngine
from lookalike.server.embed.preprocess import ImageInput
from lookalike.server.embed.settings import EmbedSettings
from lookalike.server.errors import EngineError, TextUnavailableError
from lookalike.server.index.built_index import open_shards, read_manifest
from lookalike.server.index.repository import StoredItem
from lookalike.server.index.settings import IndexSettings
from lookalike.server.index.shard_search import Query, ShardAnswer, ShardItems, ShardSearcher
from lookalike.server.metrics import Metrics

__all__ = ["ShardReplica", "EmbedderReplica", "Described"]


class ShardReplica:
    def __init__(self, index_dir: str, version: str, number: int, search: IndexSettings) -> None:
        """The shard `number` of that `version` (named, not the current one: a version
        published while the shards start must not mix in)."""
        manifest = read_manifest(Path(index_dir), version)
        one = dataclasses.replace(manifest, shards=[manifest.shards[number]])
        (shard,) = open_shards(Path(index_dir), one, manifest.search_settings(search))
        self.searcher = ShardSearcher(shard)

    async def search_many(
        self, vectors: np.ndarray, ks: list[int], queries: list[Query]
    ) -> list[ShardAnswer]:
        """The queries a front sent together, answered in one index call where they allow."""
        return await asyncio.to_thread(self.searcher.search_many, vectors, ks, queries)

    async def get(self, item_id: str, with_vector: bool) -> StoredItem:
        return await asyncio.to_thread(self.searcher.get, item_id, with_vector=with_vector)

    async def whole_images_from(
        self, first_key: int, count: int, filter_pairs: dict[str, str]
    ) -> ShardItems:
        """A page of this shard's items for a Neighbours scan."""
        return await asyncio.to_thread(
            self.searcher.whole_images_from, first_key, count, filter_pairs
        )


@dataclasses.dataclass(frozen=True)
class Described:
    """What an embedder replica says of the model it runs."""

    model: ModelInfo
    text_model: ModelInfo | None  # None without a text tower
    no_text_reason: str


class EmbedderReplica:
    async def __init__(self, settings: EmbedSettings) -> None:  # type: ignore[misc]
        """Serve awaits an async constructor: the model loads and warms up here."""
        self._embedders = LocalEmbedders()
        await self._embedders.load(settings, Metrics.create(), OnnxEngine)

    def describe(self) -> Described:
        embedders = self._embedders
        text = embedders.text.model if embedders.text else None
        return Described(embedders.model, text, embedders.no_text_reason)

    async def embed_images(self, images: list[ImageInput]) -> np.ndarray:
        return await self._embedders.image.embed(images)

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        if self._embedders.text is None:
            raise TextUnavailableError(self._embedders.no_text_reason)
        return await self._embedders.text.embedder.embed(texts)

    def check_health(self) -> None:
        """Serve calls this periodically and replaces a replica whose engine keeps failing."""
        if not self._embedders.image.healthy:
            raise EngineError("the engine keeps failing")
