"""The images a run will ingest, listed once to Parquet files: the driver never holds them all.

Listing a source (a folder walk, an object-store listing, a list file, tar shards) streams into
`DATASET/listing/listing-NNNNN.parquet` (id, uri, metadata JSON), a file per
`ROWS_PER_FILE` rows. The driver then reads back only the ids, a batch at a time, to count each
partition and digest its ids; the workers read the files themselves. Driver memory is one batch
plus one digest per partition, whether the sources name a thousand images or a hundred million.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lookalike.batch.dataset import LISTING_DIR, IdsDigest, id_hash, partition_of
from lookalike.batch.sources import SourceImage

__all__ = ["Listing", "LISTING_DIR", "ROWS_PER_FILE"]

ROWS_PER_FILE = 100_000
SCHEMA = pa.schema([("id", pa.string()), ("uri", pa.string()), ("metadata", pa.string())])


@dataclasses.dataclass(frozen=True)
class Listing:
    files: list[Path]
    count: int

    @classmethod
    def write(cls, directory: Path, images: Iterable[SourceImage]) -> Listing:
        """Stream `images` into listing files in `directory` (emptied first)."""
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        files, count = [], 0
        for number, chunk in enumerate(_chunks(images, ROWS_PER_FILE)):
            path = directory / f"listing-{number:05d}.parquet"
            table = pa.table(
                {
                    "id": [image.id for image in chunk],
                    "uri": [image.uri for image in chunk],
                    "metadata": [json.dumps(image.metadata) for image in chunk],
                },
                schema=SCHEMA,
            )
            pq.write_table(table, path)
            files.append(path)
            count += len(chunk)
        return cls(files, count)

    def digests(self, partitions: int) -> dict[int, IdsDigest]:
        """Each non-empty partition's ids digest (and count)."""
        found: dict[int, IdsDigest] = {}
        for path in self.files:
            for batch in pq.ParquetFile(path).iter_batches(columns=["id"]):
                for item_id in batch.column("id").to_pylist():
                    hashed = id_hash(item_id)
                    partition = partition_of(item_id, partitions, hashed=hashed)
                    found.setdefault(partition, IdsDigest()).add(hashed)
        return found


def _chunks(images: Iterable[SourceImage], size: int) -> Iterator[list[SourceImage]]:
    chunk: list[SourceImage] = []
    for image in images:
        chunk.append(image)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
