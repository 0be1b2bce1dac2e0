"""`lookalike build-index`: an ingested dataset -> the shards of a built index, as Ray tasks.

A first build reads every part and writes every shard. A later build into the same directory
makes the next version: it compares the dataset's parts with those the current version was
built from (by their ids digest), adds the ids a changed part gained, removes those it lost and
the ids given to `delete`, and rewrites only the shards those ids hash to; the others are shared
with the previous version. The layout is in `lookalike.server.index.built_index`.

Ray Data reads the changed parts, keeps the rows to add and groups them by shard; each group
becomes one task that writes its shard (the previous version's shard plus its changes, or a
new one). Shards that only lose items, or get none, are written by plain Ray tasks.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lookalike.batch.dataset import (
    REGIONS_COLUMN,
    Dataset,
    item_metadata,
    region_vectors,
    unit_vectors,
)
from lookalike.batch.ray_data_output import quiet_ray_data
from lookalike.export.durable import fsync_directory, fsync_file
from lookalike.server.cluster.ray_session import ray_session
from lookalike.server.index.built_index import (
    CURRENT_FILE,
    SHARDS_DIR,
    VERSIONS_DIR,
    BuiltIndexError,
    IndexManifest,
    ShardEntry,
    ShardFile,
    ShardTable,
    check_model,
    publish,
    read_manifest,
    shard_key,
    shard_of,
)
from lookalike.server.index.settings import BUILT_INDEX_SETTINGS, IndexSettings
from lookalike.server.index.vector_index import VectorIndex
from lookalike.server.item_ids import lookup_ids

__all__ = ["BuildSettings", "BuildSummary", "build_index"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuildSettings:
    dataset: Path
    output: Path
    shards: int = 0  # 0: as many as the current version has (a new index: 1)
    index: IndexSettings = BUILT_INDEX_SETTINGS  # used when the index is new
    delete: Sequence[str] = ()  # ids to remove from the index, looked up as `lookup_ids` says
    address: str | None = None  # a Ray cluster; None: RAY_ADDRESS, else a local Ray
    # Ray's and Ray Data's own output (progress lines, worker logs) on the terminal; else it
    # stays in Ray's log folder
    verbose: bool = False


@dataclasses.dataclass(frozen=True)
class BuildSummary:
    version: str
    items: int
    shards: int
    written: list[int]  # shards this version wrote; the others it shares
    added: int
    removed: int
    seconds: float

    @property
    def vectors_per_s(self) -> float:
        return self.added / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        if not self.written:
            return f"version {self.version} is current: nothing changed ({self.items} items)"
        shared = self.shards - len(self.written)
        return (
            f"version {self.version}: {self.items} items in {self.shards} shards "
            f"({len(self.written)} written, {shared} shared with the previous version); "
            f"{self.added} added, {self.removed} removed in {self.seconds:.1f}s "
            f"({self.vectors_per_s:.0f} vectors/s)"
        )


@dataclasses.dataclass(frozen=True)
class _Changes:
    """What a version changes: rows to add by part, ids to remove by shard."""

    adds: dict[str, set[str] | None]  # part -> the ids to add from it (None: all of them)
    removes: dict[int, list[str]]

    def shards(self, shards: int) -> set[int]:
        touched = set(self.removes)
        for ids in self.adds.values():
            if ids is None:
                return set(range(shards))
            touched.update(shard_of(i, shards) for i in ids)
        return touched


def build_index(settings: BuildSettings) -> BuildSummary:
    started = time.perf_counter()
    dataset = Dataset.read(settings.dataset)
    previous = _previous_version(settings.output, dataset)
    shards = _shard_count(settings, previous)
    parts = dataset.parts()
    changes = _changes(settings.output, dataset, parts, previous, settings.delete, shards)
    touched = changes.shards(shards) if previous else set(range(shards))  # new: every shard
    if previous and not touched:
        return BuildSummary(previous.name, previous.items, shards, [], 0, 0, 0.0)
    index_settings = previous.settings if previous else settings.index
    _remove_unreferenced_files(settings.output)
    (settings.output / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    job = _ShardJob(settings.output, dataset.identity.dims, index_settings, shards)
    quiet = not settings.verbose
    with ray_session(settings.address, quiet=quiet), quiet_ray_data(quiet):
        written = _write_shards(job, dataset, changes, touched, previous)
    entries = {entry.number: entry for entry in previous.shards} if previous else {}
    entries.update(written)
    manifest = IndexManifest(
        version=previous.version + 1 if previous else 1,
        model=dataset.identity.source,
        dims=dataset.identity.dims,
        family=dataset.identity.family,
        manifest_sha256=dataset.identity.manifest_sha256,
        settings=index_settings,
        dataset=str(settings.dataset.resolve()),
        embedding=dataset.embedding,
        parts=parts,
        shards=[entries[n] for n in range(shards)],
    )
    publish(settings.output, manifest)
    removed = sum(len(ids) for ids in changes.removes.values())
    return BuildSummary(
        version=manifest.name,
        items=manifest.items,
        shards=shards,
        written=sorted(written),
        added=manifest.items - (previous.items if previous else 0) + removed,
        removed=removed,
        seconds=time.perf_counter() - started,
    )


def _previous_version(output: Path, dataset: Dataset) -> IndexManifest | None:
    """The current version in `output`, if any; refuses a directory holding something else."""
    if (output / CURRENT_FILE).is_file():
        previous = read_manifest(output)
        check_model(previous, dataset.identity, output)
        return previous
    if output.exists() and {p.name for p in output.iterdir()} - {SHARDS_DIR, VERSIONS_DIR}:
        raise BuiltIndexError(f"{output} is not empty and holds no built index")
    return None


def _shard_count(settings: BuildSettings, previous: IndexManifest | None) -> int:
    if previous is None:
        return settings.shards or 1
    if settings.shards and settings.shards != len(previous.shards):
        raise BuiltIndexError(
            f"{settings.output} has {len(previous.shards)} shards; an index keeps its shard "
            f"count across versions: build {settings.shards} shards into another --output"
        )
    return len(previous.shards)


def _changes(
    output: Path,
    dataset: Dataset,
    parts: dict[str, str],
    previous: IndexManifest | None,
    delete: Sequence[str],
    shards: int,
) -> _Changes:
    """Rows to add and ids to remove, from the parts whose ids changed since `previous`."""
    if previous is None:
        return _Changes({part: None for part in parts}, {})
    every = set(parts) | set(previous.parts)
    changed = sorted(part for part in every if parts.get(part) != previous.parts.get(part))
    tables = [ShardTable(output / SHARDS_DIR / entry.table.name) for entry in previous.shards]
    try:
        adds: dict[str, set[str] | None] = {}
        gone: set[str] = set()
        for part in changed:
            before = set().union(*(table.ids_of_part(part) for table in tables))
            now = set(_part_ids(dataset, part)) if part in parts else set()
            adds[part] = now - before
            gone |= before - now
        for item_id in delete:  # as a server looks it up: the first of its forms stored
            forms = lookup_ids(item_id)
            stored = [f for f in forms if tables[shard_of(f, shards)].get(f) is not None]
            gone.update(stored[:1])
    finally:
        for table in tables:
            table.close()
    removes: dict[int, list[str]] = {}
    for item_id in sorted(gone):
        removes.setdefault(shard_of(item_id, shards), []).append(item_id)
    return _Changes({part: ids for part, ids in adds.items() if ids}, removes)


def _part_ids(dataset: Dataset, part: str) -> list[str]:
    table = pq.read_table(dataset.parts_directory / part, columns=["id"])
    return table.column("id").to_pylist()


def _remove_unreferenced_files(output: Path) -> None:
    """Shard files no version names: left by a build that crashed before publishing."""
    directory = output / SHARDS_DIR
    if not directory.is_dir():
        return
    named: set[str] = set()
    for manifest in (output / VERSIONS_DIR).glob("v*.json"):
        shards = IndexManifest.from_json(manifest.read_text()).shards
        named |= {f.name for entry in shards for f in (entry.index, entry.table)}
    for path in directory.iterdir():
        if path.name not in named:
            path.unlink()


@dataclasses.dataclass(frozen=True)
class _ShardJob:
    """What every shard task needs to know."""

    output: Path
    dims: int
    settings: IndexSettings
    shards: int


def _write_shards(
    job: _ShardJob,
    dataset: Dataset,
    changes: _Changes,
    touched: set[int],
    previous: IndexManifest | None,
) -> dict[int, ShardEntry]:
    import ray
    import ray.data

    before = {entry.number: entry for entry in previous.shards} if previous else {}
    written: dict[int, ShardEntry] = {}
    if changes.adds:
        paths = [str(dataset.parts_directory / part) for part in sorted(changes.adds)]
        columns = ["id", "vector", "metadata", "source", "path"]
        if REGIONS_COLUMN in dataset.embedding:  # made with --regions: each part has them
            columns.append(REGIONS_COLUMN)
        rows = ray.data.read_parquet(paths, include_paths=True).select_columns(columns)
        rows = rows.map_batches(
            functools.partial(_rows_to_add, adds=changes.adds, shards=job.shards),
            batch_format="pyarrow",
        )
        most = ray.data.DataContext.get_current().default_hash_shuffle_parallelism
        grouped = rows.groupby("shard", num_partitions=min(job.shards, most)).map_groups(
            functools.partial(_write_group, job=job, removes=changes.removes, before=before),
            batch_format="pyarrow",
        )
        for row in grouped.take_all():
            entry = _entry_from_row(row)
            written[entry.number] = entry
    rest = sorted(touched - set(written))
    write = ray.remote(_write_shard)
    for entry in ray.get(
        [write.remote(job, n, None, changes.removes.get(n, []), before.get(n)) for n in rest]
    ):
        written[entry.number] = entry
    return written


def _rows_to_add(table: pa.Table, adds: dict[str, set[str] | None], shards: int) -> pa.Table:
    """Keep the rows to add; name each row's part and shard."""
    parts = [Path(path).name for path in table.column("path").to_pylist()]
    ids = table.column("id").to_pylist()
    rows = list(zip(parts, ids, strict=True))
    keep = [_wanted(adds[part], item_id) for part, item_id in rows]
    kept = [row for row, wanted in zip(rows, keep, strict=True) if wanted]
    return (
        table.filter(pa.array(keep, pa.bool_()))
        .drop_columns(["path"])
        .append_column("part", pa.array([part for part, _ in kept], pa.string()))
        .append_column("shard", pa.array([shard_of(i, shards) for _, i in kept], pa.int64()))
    )


def _wanted(ids: set[str] | None, item_id: str) -> bool:
    return ids is None or item_id in ids


def _write_group(
    group: pa.Table, job: _ShardJob, removes: dict[int, list[str]], before: dict[int, ShardEntry]
) -> pa.Table:
    number = int(group.column("shard")[0].as_py())
    entry = _write_shard(job, number, group, removes.get(number, []), before.get(number))
    return pa.table({"entry": [json.dumps(dataclasses.asdict(entry))]})


def _entry_from_row(row: dict[str, Any]) -> ShardEntry:
    return ShardEntry.from_dict(json.loads(row["entry"]))


def _write_shard(
    job: _ShardJob,
    number: int,
    rows: pa.Table | None,
    removes: list[str],
    previous: ShardEntry | None,
) -> ShardEntry:
    """The previous version's shard (or an empty one) with `removes` taken out and `rows` added,
    under a fresh name: the previous version's files stay as they are."""
    directory = job.output / SHARDS_DIR
    name = f"shard-{number:05d}-{uuid.uuid4().hex[:12]}"
    table_path, index_path = directory / f"{name}.sqlite", directory / f"{name}.usearch"
    building = table_path.with_name(f".{table_path.name}.tmp")
    if previous is not None:
        shutil.copyfile(directory / previous.table.name, building)
        index = VectorIndex.load(directory / previous.index.name, job.dims, job.settings)
    else:
        index = VectorIndex(job.dims, job.settings)
    next_key = previous.next_key if previous else 0
    table = ShardTable(building, writable=True)
    try:
        index.remove(table.remove(removes))
        if rows is not None and rows.num_rows:
            # the same rows in the same order, on one thread: the same shard, byte for byte,
            # whichever order the shuffle delivered them in (and the task holds one CPU)
            rows = rows.sort_by("id")
            ids, sources = rows.column("id").to_pylist(), rows.column("source").to_pylist()
            keys: list[int] = []  # every vector's: each item's whole image, then its regions
            vectors: list[np.ndarray] = []
            wholes: list[int] = []
            regions: list[tuple[int, str, str]] = []  # (key, id, Region JSON)
            made = region_vectors(rows, job.dims)
            for item_id, whole, its in zip(ids, unit_vectors(rows, job.dims), made, strict=True):
                for region, vector in [(None, whole), *its]:
                    key = shard_key(number, next_key + len(keys))
                    keys.append(key)
                    vectors.append(vector)
                    if region is None:
                        wholes.append(key)
                    else:
                        regions.append((key, item_id, region))
            index.add(np.array(keys, np.uint64), np.stack(vectors), threads=1)
            metadata = [
                json.dumps(item_metadata(m, s))
                for m, s in zip(rows.column("metadata").to_pylist(), sources, strict=True)
            ]
            parts = rows.column("part").to_pylist()
            table.add(zip(wholes, ids, metadata, sources, parts, strict=True), regions)
            next_key += len(keys)
        items, vectors_stored = table.counts()
    finally:
        table.close()
    fsync_file(building)
    building.replace(table_path)
    index.save(index_path)  # atomic and fsynced, the directory too
    fsync_directory(directory)
    return ShardEntry(
        number=number,
        vectors=vectors_stored,
        items=items,
        next_key=next_key,
        index=ShardFile.of(index_path),
        table=ShardFile.of(table_path),
    )
