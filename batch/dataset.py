"""An ingested dataset on disk: Parquet parts by partition, written so that reruns are cheap.

    DATASET_DIR/dataset.json              format, model identity, partitions, vector dtype
    DATASET_DIR/parts/part-00007.parquet  id, vector, metadata (JSON), source, and (made with
                                          --regions) regions: [{region (JSON), vector}]: one
                                          partition's images; file metadata: model identity,
                                          the model package's manifest sha256, the digest of
                                          its ids
    DATASET_DIR/errors/errors-00007.parquet  id, source, reason: its images that failed
    DATASET_DIR/listing/listing-00000.parquet  the images the last run was given (id, uri,
                                          metadata), streamed there by the driver

An image belongs to partition `sha256(id) mod partitions`, fixed when the dataset is created.
A partition is written whole, as temporary files renamed into place (errors first, then the
part), so after any crash each part file is complete or absent. A partition is done when its
part file exists and records the digest (`IdsDigest`) of exactly the ids the sources now put
in it: a rerun
skips those, recomputes the others whole, and can neither duplicate nor drop an image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lookalike.client.files import SOURCE_PATH_KEY
from lookalike.export.durable import fsync_directory, fsync_file, write_atomically
from lookalike.export.manifest import ModelIdentity

__all__ = [
    "DatasetError",
    "Dataset",
    "partition_of",
    "id_hash",
    "IdsDigest",
    "item_metadata",
    "unit_vectors",
    "region_vectors",
    "regions_array",
    "VECTOR_DTYPES",
    "REGION_COLUMN",
    "REGIONS_COLUMN",
]

DATASET_FILE = "dataset.json"
LISTING_DIR = "listing"  # the last run's list of images (listing.py), rewritten by each run
FORMAT_VERSION = 1
VECTOR_DTYPES = {"f16": pa.float16(), "f32": pa.float32()}
MODEL_KEY = b"lookalike.model"
MANIFEST_KEY = b"lookalike.manifest_sha256"  # the exact model package that made the vectors
DIGEST_KEY = b"lookalike.ids_digest"
REGIONS_COLUMN = "regions"  # a part's column of each image's regions (and the embedding key)
REGION_COLUMN = "region"  # a region's box (Region JSON) in it, and in ingest's rows


class DatasetError(Exception):
    """The output directory holds another dataset (other model, partitions or dtype)."""


def id_hash(item_id: str) -> bytes:
    return hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).digest()


def partition_of(item_id: str, partitions: int, *, hashed: bytes | None = None) -> int:
    """The id's partition (pass `hashed`, its `id_hash`, when it is at hand)."""
    return int.from_bytes((hashed or id_hash(item_id))[:8], "big") % partitions


def unit_vectors(rows: pa.Table | pa.RecordBatch, dims: int) -> np.ndarray:
    """The rows' `vector` column as float32[N, dims] of unit norm (f16 storage rounds the
    norm a little)."""
    column = rows.column("vector")
    flat = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    vectors = np.asarray(flat.flatten(), dtype=np.float32).reshape(len(rows), dims)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def region_vectors(
    rows: pa.Table | pa.RecordBatch, dims: int
) -> list[list[tuple[str, np.ndarray]]]:
    """Each row's regions as (Region JSON, unit vector), in the order stored; none for every
    row of a dataset made without regions."""
    if REGIONS_COLUMN not in rows.column_names:
        return [[] for _ in range(len(rows))]
    column = rows.column(REGIONS_COLUMN)
    regions = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = np.asarray(pc.list_value_length(regions), dtype=np.int64)
    flat = regions.flatten()
    vectors = np.asarray(flat.field("vector").flatten(), dtype=np.float32).reshape(-1, dims)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)  # (arrow's is read-only)
    boxes = flat.field(REGION_COLUMN).to_pylist()
    ends = np.cumsum(lengths)
    return [
        list(zip(boxes[end - length : end], vectors[end - length : end], strict=True))
        for length, end in zip(lengths, ends, strict=True)
    ]


def regions_array(
    per_row: list[list[tuple[str, np.ndarray]]], dtype: pa.DataType, dims: int
) -> pa.ListArray:
    """The `regions` column for rows with these (Region JSON, vector) lists."""
    flat = [region for regions in per_row for region in regions]
    vectors = np.array([v for _, v in flat], dtype=np.float32).reshape(len(flat), dims)
    values = pa.array(vectors.reshape(-1).astype(dtype.to_pandas_dtype()), type=dtype)
    regions = pa.StructArray.from_arrays(
        [
            pa.array([box for box, _ in flat], pa.string()),
            pa.FixedSizeListArray.from_arrays(values, dims),
        ],
        names=[REGION_COLUMN, "vector"],
    )
    offsets = np.concatenate([[0], np.cumsum([len(regions) for regions in per_row])])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), regions)


def item_metadata(metadata_json: str, source: str) -> dict[str, str]:
    """A row's metadata as it is served: its own, and where its image came from."""
    return {**json.loads(metadata_json), SOURCE_PATH_KEY: source}


class IdsDigest:
    """What a partition's part must hold to count as done: a digest of its ids that does not
    depend on their order (the count and the sum of their sha256 values), so the driver
    computes it as the listing streams by."""

    def __init__(self) -> None:
        self.count, self._total = 0, 0

    def add(self, hashed: bytes) -> None:
        self.count += 1
        self._total = (self._total + int.from_bytes(hashed, "big")) % (1 << 256)

    def hexdigest(self) -> str:
        return f"{self.count}:{self._total:064x}"

    @classmethod
    def of(cls, ids: Iterable[str]) -> str:
        digest = cls()
        for item_id in ids:
            digest.add(id_hash(item_id))
        return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Dataset:
    directory: Path
    identity: ModelIdentity  # embeddings of other models cannot be mixed in
    partitions: int
    vector_dtype: str
    embedding: dict[str, str]  # how the vectors were made: precision, preprocess mode

    @property
    def model(self) -> str:
        return self.identity.describe()

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        identity: ModelIdentity,
        partitions: int,
        vector_dtype: str,
        embedding: dict[str, str],
    ) -> Dataset:
        """Create the dataset, or reopen one made the same way: same model, embedding and
        dtype (the partitions of an existing dataset win)."""
        if (directory / DATASET_FILE).is_file():
            for leftover in directory.glob("*/.*.tmp"):  # a run killed while writing
                leftover.unlink(missing_ok=True)
            stored = cls.read(directory)
            asked = cls(directory, identity, stored.partitions, vector_dtype, embedding)
            if asked != stored:
                raise DatasetError(
                    f"{directory} holds vectors made as {stored.describe()}; this run makes "
                    f"{asked.describe()}: use another --output"
                )
            return stored
        if directory.exists() and {p.name for p in directory.iterdir()} - {LISTING_DIR}:
            raise DatasetError(f"{directory} is not empty and holds no {DATASET_FILE}")
        dataset = cls(directory, identity, partitions, vector_dtype, embedding)
        dataset.parts_directory.mkdir(parents=True, exist_ok=True)
        (directory / "errors").mkdir(exist_ok=True)
        document = {
            "format_version": FORMAT_VERSION,
            "model": dataset.model,
            "model_source": identity.source,
            "dims": identity.dims,
            "model_family": identity.family,
            "manifest_sha256": identity.manifest_sha256,
            "partitions": partitions,
            "vector_dtype": vector_dtype,
            "embedding": embedding,
        }
        write_atomically(directory / DATASET_FILE, json.dumps(document, indent=2).encode())
        return dataset

    @classmethod
    def refuse_other_model(cls, directory: Path, identity: ModelIdentity) -> None:
        """DatasetError if `directory` holds a dataset embedded with another model: checked
        before anything is listed, read or embedded."""
        if not (directory / DATASET_FILE).is_file():
            return
        stored = cls.read(directory).identity
        if stored != identity:
            raise DatasetError(
                f"{directory} holds embeddings of {stored.describe()}, but this run embeds "
                f"with {identity.describe()}: embeddings of different models cannot be mixed "
                "(use another --output, or move the collection to the new model: see the "
                "README's 'Moving to a new model')"
            )

    @classmethod
    def read(cls, directory: Path) -> Dataset:
        """An existing dataset, as `lookalike ingest` made it."""
        try:
            stored = json.loads((directory / DATASET_FILE).read_text())
            identity = ModelIdentity(
                stored["model_source"],
                int(stored["dims"]),
                stored.get("model_family", "clip"),  # datasets before families were CLIP's
                stored.get("manifest_sha256", ""),
            )
            return cls(
                directory,
                identity,
                int(stored["partitions"]),
                stored["vector_dtype"],
                dict(stored["embedding"]),
            )
        except (OSError, ValueError, KeyError) as exc:
            raise DatasetError(
                f"{directory} is not a dataset made by lookalike ingest ({exc})"
            ) from exc

    def describe(self) -> str:
        how = ", ".join(f"{k} {v}" for k, v in sorted(self.embedding.items()))
        return f"{self.model}, {how}, {self.vector_dtype} vectors"

    def parts(self) -> dict[str, str]:
        """Every complete part file's name -> the digest of the ids it holds."""
        found = {}
        for path in sorted(self.parts_directory.glob("part-*.parquet")):
            metadata = pq.read_schema(path).metadata or {}
            if metadata.get(MODEL_KEY) == self.model.encode() and DIGEST_KEY in metadata:
                found[path.name] = metadata[DIGEST_KEY].decode()
        return found

    def part_path(self, partition: int) -> Path:
        return self.parts_directory / f"part-{partition:05d}.parquet"

    @property
    def parts_directory(self) -> Path:
        return self.directory / "parts"

    def errors_path(self, partition: int) -> Path:
        return self.directory / "errors" / f"errors-{partition:05d}.parquet"

    def failed_in(self, partition: int) -> int:
        """How many of a written partition's images failed (its errors file's rows)."""
        path = self.errors_path(partition)
        return pq.ParquetFile(path).metadata.num_rows if path.is_file() else 0

    def is_done(self, partition: int, digest: str) -> bool:
        path = self.part_path(partition)
        if not path.is_file():
            return False
        metadata = pq.read_schema(path).metadata or {}
        return metadata.get(MODEL_KEY) == self.model.encode() and (
            metadata.get(DIGEST_KEY) == digest.encode()
        )

    def write_partition(
        self,
        partition: int,
        digest: str,
        stored: pa.Table,
        failed: pa.Table,
        *,
        manifest_sha256: str,
    ) -> None:
        """Errors first, then the part (the marker that the partition is done), each atomic."""
        _write_table(self.errors_path(partition), failed)
        metadata = {
            MODEL_KEY: self.model.encode(),
            MANIFEST_KEY: manifest_sha256.encode(),
            DIGEST_KEY: digest.encode(),
        }
        _write_table(self.part_path(partition), stored.replace_schema_metadata(metadata))


def _write_table(path: Path, table: pa.Table) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, temporary)
    fsync_file(temporary)
    os.replace(temporary, path)
    fsync_directory(path.parent)
