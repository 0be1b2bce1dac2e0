"""Datasets as `lookalike ingest` writes them, from known vectors: for measuring `build-index`
and `import` at sizes a 2-core machine cannot embed, and for tests that need exact answers.
Written through the dataset module itself, so the files are the ones ingest makes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from lookalike.batch.dataset import Dataset, IdsDigest, partition_of
from lookalike.export.manifest import ModelIdentity

__all__ = ["unit_rows", "write_dataset"]

NO_FAILURES = pa.table({name: pa.array([], pa.string()) for name in ("id", "source", "reason")})


def unit_rows(count: int, dims: int, seed: int) -> np.ndarray:
    """Random unit vectors, float32[count, dims]."""
    vectors = np.random.default_rng(seed).standard_normal((count, dims)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_dataset(
    directory: Path,
    identity: ModelIdentity,
    ids: Sequence[str],
    vectors: np.ndarray,
    *,
    partitions: int = 8,
) -> Dataset:
    """Every partition's part (f16 vectors, metadata {"parity": row % 2}), written whole; a
    dataset already there gets new parts for the ids given."""
    dataset = Dataset.open(
        directory,
        identity=identity,
        partitions=partitions,
        vector_dtype="f16",
        embedding={"precision": "synthetic", "preprocess": "synthetic"},
    )
    by_partition = np.array([partition_of(item_id, dataset.partitions) for item_id in ids])
    for partition in range(dataset.partitions):
        rows = np.flatnonzero(by_partition == partition)
        part_ids = [ids[row] for row in rows]
        flat = pa.array(vectors[rows].reshape(-1).astype(np.float16), pa.float16())
        stored = pa.table(
            {
                "id": pa.array(part_ids, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, identity.dims),
                "metadata": [json.dumps({"parity": str(row % 2)}) for row in rows],
                "source": [f"synthetic://{item_id}" for item_id in part_ids],
            }
        )
        dataset.write_partition(
            partition, IdsDigest.of(part_ids), stored, NO_FAILURES, manifest_sha256="synthetic"
        )
    return dataset
