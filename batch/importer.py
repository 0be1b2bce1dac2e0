"""`lookalike import`: an ingested dataset's vectors into a server's data directory, no
re-embedding.

The server must be stopped: import holds the data directory's lock, as the server does. Each
batch of rows is one durable SQLite commit (the store's bulk upsert: ids already stored are
replaced), so an interrupted import keeps every batch it reported and a rerun completes it.
The search index is then caught up from the store and saved as the snapshot the server loads,
with the server's default index settings (a server started with others rebuilds it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from lookalike.batch.dataset import (
    Dataset,
    item_metadata,
    region_vectors,
    unit_vectors,
)
from lookalike.server.index.datadir import DataDirLock
from lookalike.server.index.local_repository import DATABASE_FILE, LocalRepository
from lookalike.server.index.repository import EmbeddedItem, RegionVector
from lookalike.server.index.settings import IndexSettings
from lookalike.server.index.store import ItemStore
from lookalike.server.regions import Region

__all__ = ["ImportSummary", "import_dataset", "BATCH_ROWS"]

BATCH_ROWS = 10_000  # rows per durable commit


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    vectors: int
    store_seconds: float  # reading the dataset and committing it durably
    index_seconds: float  # catching the search index up and saving its snapshot
    items: int  # stored in the data directory afterwards

    def describe(self) -> str:
        rate = self.vectors / self.store_seconds if self.store_seconds else 0.0
        return (
            f"{self.vectors} vectors stored durably in {self.store_seconds:.1f}s "
            f"({rate:,.0f} vectors/s); search index built in {self.index_seconds:.1f}s; "
            f"the data directory holds {self.items} items"
        )


def import_dataset(
    dataset_dir: Path,
    data_dir: Path,
    *,
    index: IndexSettings | None = None,
    on_commit: Callable[[int], None] = lambda count: None,
) -> ImportSummary:
    """`on_commit(n)` follows every durable commit of n more vectors."""
    dataset = Dataset.read(dataset_dir)
    identity = dataset.identity  # the store refuses a data directory of another model
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        started = time.perf_counter()
        # the lock made the directory
        vectors = _store(dataset, ItemStore(data_dir / DATABASE_FILE, identity), on_commit)
        stored = time.perf_counter()
        repository = LocalRepository(data_dir, identity, index or IndexSettings())
        items = asyncio.run(_catch_up(repository))
        return ImportSummary(vectors, stored - started, time.perf_counter() - stored, items)
    finally:
        lock.release()


def _store(dataset: Dataset, store: ItemStore, on_commit: Callable[[int], None]) -> int:
    count = 0
    try:
        for part in dataset.parts():
            parquet = pq.ParquetFile(dataset.parts_directory / part)
            for batch in parquet.iter_batches(BATCH_ROWS):
                dims = dataset.identity.dims
                regions = [
                    tuple(RegionVector(Region.from_json(box), v) for box, v in made)
                    for made in region_vectors(batch, dims)
                ]
                columns = zip(
                    batch.column("id").to_pylist(),
                    unit_vectors(batch, dims),
                    batch.column("metadata").to_pylist(),
                    batch.column("source").to_pylist(),
                    regions,
                    strict=True,
                )
                store.upsert(
                    [EmbeddedItem(i, v, item_metadata(m, s), r) for i, v, m, s, r in columns]
                )
                vectors = batch.num_rows + sum(len(made) for made in regions)
                count += vectors
                on_commit(vectors)
    finally:
        store.close()
    return count


async def _catch_up(repository: LocalRepository) -> int:
    try:
        items = await repository.open()  # adds every stored vector the snapshot lacks
        await repository.save_snapshot()
        return items
    finally:
        await repository.close()
