"""A built index on disk (`lookalike build-index`): versions of a set of immutable shards.

    INDEX_DIR/CURRENT                      the name of the version being served: "v00003"
    INDEX_DIR/versions/v00003.json         the manifest: model, settings, dataset parts, shards
    INDEX_DIR/shards/shard-00001-<id>.usearch   one shard's vectors (USearch HNSW, cosine)
    INDEX_DIR/shards/shard-00001-<id>.sqlite    its table: vector key -> item id, item metadata

An item lives in shard `shard_of(id)`, a stable hash of its id. A shard's files are written
once under a fresh name and never changed: a new version lists new files for the shards it
changed and the old files for the others, so versions share untouched shards. A version exists
once its manifest is renamed into place and CURRENT names it (both fsynced): a half-built index
is never current. The manifest records each file's size and sha256; a file that differs is
refused when the index is opened.

Vector keys, not item ids, are in the USearch index: `shard << 40 | n`, unique across shards, so
an item may own several vectors (regions) without a new layout.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.export.durable import write_atomically
from lookalike.export.manifest import ModelIdentity, sha256_file
from lookalike.server.errors import DataDirError
from lookalike.server.index.repository import StoredItem, VectorOwner
from lookalike.server.index.settings import IndexSettings
from lookalike.server.index.sql import in_chunks
from lookalike.server.index.vector_index import SnapshotError, VectorIndex
from lookalike.server.regions import Region

__all__ = [
    "KEY_BITS",
    "BuiltIndexError",
    "ShardFile",
    "ShardEntry",
    "IndexManifest",
    "ShardTable",
    "OpenShard",
    "shard_of",
    "shard_key",
    "read_manifest",
    "check_model",
    "publish",
    "open_shards",
    "FORMAT_VERSION",
    "list_versions",
    "make_current",
]

FORMAT_VERSION = 2  # 2: the model's family and manifest sha256 beside its id
CURRENT_FILE = "CURRENT"
VERSIONS_DIR = "versions"
SHARDS_DIR = "shards"
KEY_BITS = 40  # a shard's own vector numbers; the shard number sits above them
VERSION_NAME = re.compile(r"v\d{5,}")

TABLE_SCHEMA = """
CREATE TABLE items (id TEXT PRIMARY KEY, metadata TEXT NOT NULL, source TEXT NOT NULL,
                    part TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE vectors (key INTEGER PRIMARY KEY, id TEXT NOT NULL, region TEXT);
CREATE INDEX vectors_by_id ON vectors(id);
CREATE INDEX items_by_part ON items(part);
CREATE TABLE metadata (name TEXT NOT NULL, value TEXT NOT NULL, id TEXT NOT NULL,
                       PRIMARY KEY (name, value, id)) WITHOUT ROWID;
"""


class BuiltIndexError(DataDirError):
    """No index, an unreadable or damaged one, or one this Lookalike cannot read."""


def shard_of(item_id: str, shards: int) -> int:
    """The item's shard: bytes of its id's sha256 other than those that pick its dataset
    partition, so that one partition's items spread over every shard."""
    digest = hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[8:16], "big") % shards


def shard_key(shard: int, number: int) -> int:
    return (shard << KEY_BITS) | number


@dataclasses.dataclass(frozen=True)
class ShardFile:
    name: str  # relative to INDEX_DIR/shards
    bytes: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> ShardFile:
        return cls(path.name, path.stat().st_size, sha256_file(path))

    def check(self, directory: Path) -> Path:
        """The file's path, if it is there with the recorded size and checksum."""
        path = directory / SHARDS_DIR / self.name
        if not path.is_file():
            raise BuiltIndexError(f"shard file {path} is missing")
        if path.stat().st_size != self.bytes or sha256_file(path) != self.sha256:
            raise BuiltIndexError(
                f"shard file {path} is damaged: its size or sha256 differs from the index "
                "manifest's; rebuild the index (lookalike build-index) or restore the file"
            )
        return path


@dataclasses.dataclass(frozen=True)
class ShardEntry:
    number: int
    vectors: int
    items: int
    next_key: int  # the next vector number: keys are never handed out twice
    index: ShardFile
    table: ShardFile

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> ShardEntry:
        files = {name: ShardFile(**document[name]) for name in ("index", "table")}
        return cls(**{**document, **files})


@dataclasses.dataclass(frozen=True)
class IndexManifest:
    version: int
    model: str  # ModelIdentity.source: only this model's queries make sense here
    dims: int
    settings: IndexSettings  # dtype, connectivity and expansions the shards were built with
    dataset: str  # the dataset directory it was built from
    embedding: dict[str, str]  # how the dataset's vectors were made: precision, preprocess
    parts: dict[str, str]  # dataset part file -> the ids digest it had when it was built in
    shards: list[ShardEntry]
    created: float = dataclasses.field(default_factory=time.time)
    family: str = "clip"  # the model's, recorded (format 1 indexes were all CLIP)
    manifest_sha256: str = ""  # of the model package the dataset was embedded with

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.model, self.dims, self.family, self.manifest_sha256)

    @property
    def name(self) -> str:
        return f"v{self.version:05d}"

    @property
    def items(self) -> int:
        return sum(shard.items for shard in self.shards)

    def search_settings(self, server: IndexSettings) -> IndexSettings:
        """The settings a server searches the shards with: the index's build settings, the
        server's search-time ones (expansion_search, exact_search_below)."""
        return dataclasses.replace(
            self.settings,
            expansion_search=server.expansion_search,
            exact_search_below=server.exact_search_below,
        )

    @property
    def vectors(self) -> int:
        return sum(shard.vectors for shard in self.shards)

    def to_json(self) -> str:
        document = dataclasses.asdict(self)
        del document["settings"]["exact_search_below"]  # a search setting, not a build one
        return json.dumps({"format_version": FORMAT_VERSION, **document}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> IndexManifest:
        document: dict[str, Any] = json.loads(text)
        if int(document.pop("format_version")) > FORMAT_VERSION:
            raise BuiltIndexError(
                "the index was built by a newer Lookalike (format "
                f"{document.get('format_version')}); upgrade lookalike to serve it"
            )
        shards = [ShardEntry.from_dict(entry) for entry in document.pop("shards")]
        settings = IndexSettings(**document.pop("settings"))
        return cls(**document, settings=settings, shards=shards)


def read_manifest(directory: Path, version: str | None = None) -> IndexManifest:
    """The manifest of `version` ("v00003"), by default of the current one."""
    current = directory / CURRENT_FILE
    if version is None and not current.is_file():
        raise BuiltIndexError(
            f"{directory} holds no built index (no {CURRENT_FILE} file): build one with "
            "lookalike build-index DATASET_DIR --output " + str(directory)
        )
    name = version or current.read_text().strip()
    if not VERSION_NAME.fullmatch(name):
        raise BuiltIndexError(f"{current} names no version ({name!r})")
    try:
        return IndexManifest.from_json((directory / VERSIONS_DIR / f"{name}.json").read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BuiltIndexError(
            f"the manifest of version {name} in {directory} is unreadable: {exc}"
        ) from exc


def check_model(manifest: IndexManifest, identity: ModelIdentity, directory: Path) -> None:
    """Refuse to mix the index's embeddings with those of another model (a server's queries,
    a dataset's new vectors)."""
    if manifest.identity != identity:
        raise BuiltIndexError(
            f"{directory} holds embeddings of {manifest.identity.describe()}, not of "
            f"{identity.describe()}: embeddings of different models cannot be mixed (serve "
            "the index with the model it was built with, or build into another --output)"
        )


def list_versions(directory: Path) -> list[IndexManifest]:
    """Every version the index keeps, oldest first."""
    manifests = sorted((directory / VERSIONS_DIR).glob("v*.json"))
    names = [path.stem for path in manifests if VERSION_NAME.fullmatch(path.stem)]
    if not names:
        raise BuiltIndexError(f"{directory} holds no built index (no versions)")
    return [read_manifest(directory, name) for name in names]


def make_current(directory: Path, version: str) -> IndexManifest:
    """Serve a kept `version` again (a rollback, or forward again): its shard files are
    checked, then CURRENT names it."""
    manifest = read_manifest(directory, version)
    for entry in manifest.shards:
        entry.index.check(directory)
        entry.table.check(directory)
    write_atomically(directory / CURRENT_FILE, f"{manifest.name}\n".encode())
    return manifest


def publish(directory: Path, manifest: IndexManifest) -> None:
    """Make `manifest` the current version: its manifest file first, then CURRENT."""
    versions = directory / VERSIONS_DIR
    versions.mkdir(parents=True, exist_ok=True)
    write_atomically(versions / f"{manifest.name}.json", manifest.to_json().encode())
    write_atomically(directory / CURRENT_FILE, f"{manifest.name}\n".encode())


class ShardTable:
    """One shard's items: vector key -> item id, metadata and source. Read-only once built."""

    def __init__(self, path: Path, *, writable: bool = False) -> None:
        self.path = path
        uri = f"file:{path}?mode={'rwc' if writable else 'ro'}{'' if writable else '&immutable=1'}"
        self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        if writable and not self._db.execute("SELECT 1 FROM sqlite_master").fetchone():
            self._db.executescript(TABLE_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add(
        self,
        rows: Iterable[tuple[int, str, str, str, str]],
        regions: Iterable[tuple[int, str, str]] = (),
    ) -> None:
        """(key, id, metadata JSON, source, part) rows, the key of each item's whole image, and
        (key, id, Region JSON) rows of their regions' vectors, in one commit."""
        rows = list(rows)
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", [r[1:] for r in rows])
            self._db.executemany("INSERT INTO vectors VALUES (?, ?, NULL)", [r[:2] for r in rows])
            self._db.executemany("INSERT INTO vectors VALUES (?, ?, ?)", regions)
            self._db.executemany(
                "INSERT INTO metadata VALUES (?, ?, ?)",
                [(k, v, r[1]) for r in rows for k, v in json.loads(r[2]).items()],
            )

    def remove(self, ids: Sequence[str]) -> np.ndarray:
        """Delete these items in one commit; return the keys of their vectors."""
        keys: list[int] = []
        with self._db:
            self._db.execute("BEGIN")
            for part, marks in in_chunks(ids):
                rows = self._db.execute(f"SELECT key FROM vectors WHERE id IN ({marks})", part)
                keys += [int(row[0]) for row in rows]
                for table in ("vectors", "metadata", "items"):
                    self._db.execute(f"DELETE FROM {table} WHERE id IN ({marks})", part)
        return np.array(keys, dtype=np.uint64)

    def ids_of_part(self, part: str) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT id FROM items WHERE part = ?", (part,))}

    def counts(self) -> tuple[int, int]:
        """(items, vectors)."""
        items = self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        vectors = self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        return int(items), int(vectors)

    def keys_of(self, item_id: str) -> list[int]:
        rows = self._db.execute("SELECT key FROM vectors WHERE id = ? ORDER BY key", (item_id,))
        return [int(r[0]) for r in rows]

    def get(self, item_id: str) -> StoredItem | None:
        row = self._db.execute("SELECT metadata FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            return None
        regions = self._db.execute(
            "SELECT region FROM vectors WHERE id = ? AND region IS NOT NULL ORDER BY key",
            (item_id,),
        )
        return StoredItem(
            item_id, json.loads(row[0]), regions=tuple(Region.from_json(r) for (r,) in regions)
        )

    def by_keys(self, keys: Sequence[int]) -> dict[int, VectorOwner]:
        found: dict[int, VectorOwner] = {}
        for part, marks in in_chunks(keys):
            rows = self._db.execute(
                "SELECT key, id, metadata, region FROM vectors JOIN items USING (id) "
                f"WHERE key IN ({marks})",
                part,
            )
            found.update((int(k), VectorOwner.from_row(i, m, r)) for k, i, m, r in rows)
        return found

    def keys_matching(self, pairs: Mapping[str, str]) -> np.ndarray:
        ids, parameters = _ids_matching(pairs)
        rows = self._db.execute(f"SELECT key FROM vectors WHERE id IN ({ids})", parameters)
        return np.fromiter((r[0] for r in rows), np.uint64)

    def whole_images_from(
        self, first_key: int, count: int, pairs: Mapping[str, str] | None = None
    ) -> list[tuple[int, str]]:
        """Up to `count` (key, id) of whole-image vectors from `first_key` on, in key order,
        of the items whose metadata holds every pair."""
        condition, parameters = "", list[str]()
        if pairs:
            ids, parameters = _ids_matching(pairs)
            condition = f" AND id IN ({ids})"
        rows = self._db.execute(
            f"SELECT key, id FROM vectors WHERE key >= ? AND region IS NULL{condition} "
            "ORDER BY key LIMIT ?",
            [first_key, *parameters, count],
        )
        return [(int(key), item_id) for key, item_id in rows]


def _ids_matching(pairs: Mapping[str, str]) -> tuple[str, list[str]]:
    """A subquery of the ids whose metadata holds every pair, and its parameters."""
    ids = " INTERSECT ".join("SELECT id FROM metadata WHERE name = ? AND value = ?" for _ in pairs)
    return ids, [part for pair in pairs.items() for part in pair]


@dataclasses.dataclass
class OpenShard:
    entry: ShardEntry
    index: VectorIndex  # memory-mapped read-only
    table: ShardTable


def open_shards(
    directory: Path, manifest: IndexManifest, settings: IndexSettings
) -> list[OpenShard]:
    """Every shard of the version, each file's checksum checked first (in parallel: hashing
    releases the GIL), then memory-mapped."""

    def open_one(entry: ShardEntry) -> OpenShard:
        index_path, table_path = entry.index.check(directory), entry.table.check(directory)
        try:
            index = VectorIndex.load(index_path, manifest.dims, settings, view=True)
        except SnapshotError as exc:
            raise BuiltIndexError(f"{exc}: build the index again") from exc
        try:
            table = ShardTable(table_path)
            table.counts()
        except sqlite3.DatabaseError as exc:
            raise BuiltIndexError(f"shard table {table_path} is unreadable: {exc}") from exc
        return OpenShard(entry, index, table)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(open_one, manifest.shards))
