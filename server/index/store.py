"""The items' source of truth: SQLite in WAL mode, every commit fsynced (synchronous=FULL).

An item (id, metadata) owns vectors; each vector has an integer key, the USearch key: its whole
image's (region NULL) and one per region (region: its box and label as JSON). An item and all
its vectors are written, replaced and deleted in one transaction. Keys only ever grow
(AUTOINCREMENT), so a key in an old index snapshot never names a different vector.
The layout carries a schema version (`PRAGMA user_version`); opening an older database
migrates it in one transaction, a newer one is refused.
Not thread-safe: one owner (the repository's data thread) calls it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from lookalike.export.manifest import ModelIdentity
from lookalike.server.errors import DataDirError, StorageError, StorageFullError
from lookalike.server.index.repository import (
    EmbeddedItem,
    ImageFacts,
    MetadataChange,
    StoredItem,
    VectorOwner,
)
from lookalike.server.index.sql import MAX_PARAMETERS, in_chunks
from lookalike.server.regions import Region

__all__ = ["ItemStore", "ListedItem", "Upserted", "SCHEMA_VERSION", "StoreReader"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5
ITEM_TABLES_V2 = """
CREATE TABLE items (
    item INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    metadata TEXT NOT NULL
);
CREATE TABLE vectors (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    item INTEGER NOT NULL REFERENCES items(item) ON DELETE CASCADE,
    vector BLOB NOT NULL
);
CREATE INDEX vectors_by_item ON vectors(item);
CREATE TABLE metadata (
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    item INTEGER NOT NULL REFERENCES items(item) ON DELETE CASCADE,
    PRIMARY KEY (name, value, item)
) WITHOUT ROWID;
CREATE INDEX metadata_by_item ON metadata(item);
"""
# A new database is made at version 2, then brought forward by the same steps as an old one
# (one definition of each table), silently: nothing of the user's is migrated.
SCHEMA_V2 = "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);" + ITEM_TABLES_V2
# Version 1 (before versioning, user_version 0): `items(key, id, vector, metadata)`, one vector
# per item, keyed by the vector key; `metadata(name, value, key)`.
MIGRATE_1_TO_2 = (
    """
ALTER TABLE items RENAME TO items_v1;
ALTER TABLE metadata RENAME TO metadata_v1;
"""
    + ITEM_TABLES_V2
    + """
INSERT INTO items (item, id, metadata) SELECT key, id, metadata FROM items_v1;
INSERT INTO vectors (key, item, vector) SELECT key, key, vector FROM items_v1;
INSERT INTO metadata (name, value, item) SELECT name, value, key FROM metadata_v1;
-- keys are never reused: both sequences go on from the largest key ever handed out
INSERT INTO sqlite_sequence (name, seq) SELECT 'items', 0
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'items');
INSERT INTO sqlite_sequence (name, seq) SELECT 'vectors', 0
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'vectors');
UPDATE sqlite_sequence SET seq = (SELECT seq FROM sqlite_sequence WHERE name = 'items_v1')
    WHERE name IN ('items', 'vectors')
    AND seq < (SELECT seq FROM sqlite_sequence WHERE name = 'items_v1');
DROP TABLE metadata_v1;
DROP TABLE items_v1;
"""
)
# Version 3: regions. Existing vectors are whole images (NULL).
MIGRATE_2_TO_3 = "ALTER TABLE vectors ADD COLUMN region TEXT"
# Version 4: a thumbnail per item (optional: none for items added as vectors).
MIGRATE_3_TO_4 = """
CREATE TABLE thumbnails (
    item INTEGER PRIMARY KEY REFERENCES items(item) ON DELETE CASCADE,
    jpeg BLOB NOT NULL
)
"""
# Version 5: what the server saw of each added image (NULL: added as a vector, or before).
MIGRATE_4_TO_5 = """
ALTER TABLE items ADD COLUMN width INTEGER;
ALTER TABLE items ADD COLUMN height INTEGER;
ALTER TABLE items ADD COLUMN bytes INTEGER
"""
MIGRATIONS: dict[int, str] = {  # from version N to N + 1
    1: MIGRATE_1_TO_2,
    2: MIGRATE_2_TO_3,
    3: MIGRATE_3_TO_4,
    4: MIGRATE_4_TO_5,
}
IMAGE_COLUMNS = "width, height, bytes"
IDENTITY_SETTING = "model_identity"
SQLITE_FULL = 13  # the result code of a write to a full disk
# A write past the process's file size limit (`ulimit -f`) fails with EFBIG, which SQLite reports
# as this I/O error, not as SQLITE_FULL: the limit is told apart by the files' sizes
SQLITE_IOERR_WRITE = 778


@dataclasses.dataclass(frozen=True)
class Upserted:
    """What one bulk write did, for the index to follow."""

    keys: np.ndarray  # uint64: the vectors written
    vectors: np.ndarray  # float32[len(keys), D], in the order of `keys`
    removed_keys: np.ndarray  # uint64: the vectors of the items replaced
    replaced: list[bool]  # per item: an item with its id was stored before (or earlier in it)
    new_items: int  # how many more items are stored now


class ItemStore:
    def __init__(self, path: Path, identity: ModelIdentity) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._bring_schema_up_to_date()
            self._db.execute("PRAGMA foreign_keys=ON")
            self._check_identity(identity)
        except sqlite3.DatabaseError as exc:
            raise DataDirError(
                f"database {path} is corrupt or not a Lookalike database ({exc}); it was left "
                "untouched: restore it from a backup, or move it away to start empty"
            ) from exc

    def close(self) -> None:
        self._db.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _bring_schema_up_to_date(self) -> None:
        version = self.schema_version
        if version == 0:  # new, or written before the layout carried a version
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master")}
            version = 1 if "items" in tables else 0
        if version > SCHEMA_VERSION:
            raise DataDirError(
                f"database {self.path} has schema version {version}, written by a newer "
                f"Lookalike; this one reads versions up to {SCHEMA_VERSION}. Upgrade lookalike, "
                "or use another --data-dir"
            )
        if version == SCHEMA_VERSION:
            return
        # DDL is transactional in SQLite: a crash leaves the old version or the new, never a mix
        created = version == 0
        with self._transaction():
            if created:
                self._execute_script(SCHEMA_V2)
                version = 2
            for step in range(version, SCHEMA_VERSION):
                if not created:
                    log.info("migrating %s from schema version %d to %d", self.path, step, step + 1)
                self._execute_script(MIGRATIONS[step])
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _execute_script(self, script: str) -> None:
        """Each statement in the open transaction (`executescript` would commit it first)."""
        lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
        for statement in "\n".join(lines).split(";"):
            if statement.strip():
                self._db.execute(statement)

    def _check_identity(self, identity: ModelIdentity) -> None:
        row = self._db.execute(
            "SELECT value FROM settings WHERE name = ?", (IDENTITY_SETTING,)
        ).fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO settings VALUES (?, ?)",
                (IDENTITY_SETTING, json.dumps(dataclasses.asdict(identity))),
            )
            return
        stored = ModelIdentity.from_record(json.loads(row[0]))
        if stored != identity:
            raise DataDirError(
                f"{self.path.parent} holds embeddings of {stored.describe()}, but this server "
                f"runs {identity.describe()}; embeddings of different models cannot be mixed. "
                "Use another --data-dir, or the model it was built with."
            )

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def vector_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def upsert(self, items: Sequence[EmbeddedItem]) -> Upserted:
        """Store all items in one durable transaction (group commit); a later item with the same
        id replaces an earlier one. Bulk statements throughout, so that a bulk import stores
        tens of thousands of items per second."""
        latest = {item.id: position for position, item in enumerate(items)}
        kept = sorted(latest.values())
        with self._transaction():
            before = self._keys_by_id(list(latest))
            self._delete_items(list(before))
            first_item, first_key = self._next_row("items"), self._next_row("vectors")
            rows = [(first_item + n, items[p]) for n, p in enumerate(kept)]
            self._db.executemany(
                f"INSERT INTO items (item, id, metadata, {IMAGE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (row, item.id, json.dumps(item.metadata), *_image_columns(item))
                    for row, item in rows
                ],
            )
            owned = [  # (item row, vector, region JSON or None): each whole image, then regions
                (row, vector, region)
                for row, item in rows
                for vector, region in [(item.vector, None)]
                + [(r.vector, r.region.to_json()) for r in item.regions]
            ]
            self._db.executemany(
                "INSERT INTO vectors (key, item, vector, region) VALUES (?, ?, ?, ?)",
                [
                    (first_key + n, row, vector.astype(np.float32).tobytes(), region)
                    for n, (row, vector, region) in enumerate(owned)
                ],
            )
            self._db.executemany(
                "INSERT INTO metadata VALUES (?, ?, ?)",
                [(name, value, row) for row, item in rows for name, value in item.metadata.items()],
            )
            self._db.executemany(
                "INSERT INTO thumbnails VALUES (?, ?)",
                [(row, item.thumbnail) for row, item in rows if item.thumbnail is not None],
            )
        seen: set[str] = set()
        replaced = []
        for item in items:
            replaced.append(item.id in before or item.id in seen)
            seen.add(item.id)
        return Upserted(
            keys=np.arange(first_key, first_key + len(owned), dtype=np.uint64),
            vectors=np.stack([vector for _, vector, _ in owned]).astype(np.float32)
            if owned
            else np.zeros((0, 0), np.float32),
            removed_keys=np.array([k for keys in before.values() for k in keys], np.uint64),
            replaced=replaced,
            new_items=len(kept) - len(before),
        )

    def _next_row(self, table: str) -> int:
        """The next AUTOINCREMENT value of `table` (the caller holds the write transaction)."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
        found = row.fetchone()
        return (int(found[0]) if found else 0) + 1

    def _keys_by_id(self, ids: Sequence[str]) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for part, marks in in_chunks(ids):
            rows = self._db.execute(
                "SELECT id, key FROM vectors JOIN items USING (item) "
                f"WHERE id IN ({marks}) ORDER BY key",
                part,
            )
            for item_id, key in rows:
                found.setdefault(item_id, []).append(int(key))
        return found

    def _delete_items(self, ids: Sequence[str]) -> None:
        """Delete these items (their vectors and metadata follow)."""
        for part, marks in in_chunks(ids):
            self._db.execute(f"DELETE FROM items WHERE id IN ({marks})", part)

    def delete(self, ids: Sequence[str]) -> dict[str, list[int]]:
        """Remove the stored ones durably; return {id: its vector keys} of those that were."""
        removed = {}
        with self._transaction():
            for item_id in dict.fromkeys(ids):
                keys = self._remove(item_id)
                if keys:
                    removed[item_id] = keys
        return removed

    def update_metadata(self, ids: Sequence[str], change: MetadataChange) -> list[str]:
        """Apply the change to each stored item's metadata, durably, all or none; return the
        ids of those stored."""
        updated = []
        with self._transaction():
            for item_id in dict.fromkeys(ids):
                row = self._db.execute(
                    "SELECT item, metadata FROM items WHERE id = ?", (item_id,)
                ).fetchone()
                if row is None:
                    continue
                item, metadata = row
                changed = change.applied(json.loads(metadata))
                self._db.execute(
                    "UPDATE items SET metadata = ? WHERE item = ?", (json.dumps(changed), item)
                )
                self._db.execute("DELETE FROM metadata WHERE item = ?", (item,))
                self._db.executemany(
                    "INSERT INTO metadata VALUES (?, ?, ?)",
                    [(name, value, item) for name, value in changed.items()],
                )
                updated.append(item_id)
        return updated

    def _remove(self, item_id: str) -> list[int]:
        """Delete the item (its vectors and metadata follow); return its vector keys."""
        keys = self.keys_of(item_id)
        if keys:
            self._db.execute("DELETE FROM items WHERE id = ?", (item_id,))
        return keys

    def keys_of(self, item_id: str) -> list[int]:
        rows = self._db.execute(
            "SELECT key FROM vectors JOIN items USING (item) WHERE id = ? ORDER BY key",
            (item_id,),
        )
        return [int(row[0]) for row in rows]

    def get(self, item_id: str, *, with_vector: bool = False) -> StoredItem | None:
        row = self._db.execute(
            f"SELECT item, metadata, {IMAGE_COLUMNS} FROM items WHERE id = ?", (item_id,)
        ).fetchone()
        if row is None:
            return None
        item, metadata, *image = row
        vector = None
        if with_vector:
            (blob,) = self._db.execute(
                "SELECT vector FROM vectors WHERE item = ? AND region IS NULL", (item,)
            ).fetchone()
            vector = np.frombuffer(blob, np.float32).copy()
        regions = self._db.execute(
            "SELECT region FROM vectors WHERE item = ? AND region IS NOT NULL ORDER BY key",
            (item,),
        )
        return StoredItem(
            item_id,
            json.loads(metadata),
            vector,
            tuple(Region.from_json(region) for (region,) in regions),
            ImageFacts.from_columns(*image),
        )

    def image_facts(self, ids: Sequence[str]) -> dict[str, ImageFacts]:
        """The image facts of those of these items that have them, by id."""
        found: dict[str, ImageFacts] = {}
        for part, marks in in_chunks(list(dict.fromkeys(ids))):
            rows = self._db.execute(
                f"SELECT id, {IMAGE_COLUMNS} FROM items WHERE id IN ({marks})", part
            )
            for item_id, *columns in rows:
                if (facts := ImageFacts.from_columns(*columns)) is not None:
                    found[item_id] = facts
        return found

    def thumbnail(self, item_id: str) -> bytes | None:
        """The item's thumbnail; None if it has none. KeyError if there is no such item."""
        row = self._db.execute(
            "SELECT jpeg FROM items LEFT JOIN thumbnails USING (item) WHERE id = ?", (item_id,)
        ).fetchone()
        if row is None:
            raise KeyError(item_id)
        return None if row[0] is None else bytes(row[0])

    def by_keys(self, keys: Sequence[int]) -> dict[int, VectorOwner]:
        """Whose each of these vector keys is, by key."""
        found: dict[int, VectorOwner] = {}
        columns = f"key, id, metadata, region, {IMAGE_COLUMNS} FROM vectors JOIN items USING (item)"
        for rows in self._rows_by_key(columns, keys, chunk=MAX_PARAMETERS):
            found.update(
                (int(key), VectorOwner.from_row(i, m, r, ImageFacts.from_columns(*image)))
                for key, i, m, r, *image in rows
            )
        return found

    def keys_matching(self, pairs: Mapping[str, str]) -> np.ndarray:
        """Vector keys of the items whose metadata holds every pair."""
        items, parameters = _items_matching(pairs)
        query = f"SELECT key FROM vectors WHERE item IN ({items})"
        return np.fromiter((row[0] for row in self._db.execute(query, parameters)), np.uint64)

    def whole_images_after(
        self, after: int, count: int, pairs: Mapping[str, str] | None = None
    ) -> list[tuple[int, str, np.ndarray]]:
        """Up to `count` items past the item row `after`, in row order, whose metadata holds
        every pair: (row, id, the whole image's vector)."""
        condition, parameters = "", list[str]()
        if pairs:
            items, parameters = _items_matching(pairs)
            condition = f" AND item IN ({items})"
        rows = self._db.execute(
            "SELECT item, id, vector FROM items JOIN vectors USING (item) "
            f"WHERE item > ? AND region IS NULL{condition} ORDER BY item LIMIT ?",
            [after, *parameters, count],
        )
        return [(int(row), i, np.frombuffer(vector, np.float32)) for row, i, vector in rows]

    def whole_image_keys(self) -> np.ndarray:
        """The keys of the items' whole images (no regions), in key order."""
        rows = self._db.execute("SELECT key FROM vectors WHERE region IS NULL ORDER BY key")
        return np.fromiter((row[0] for row in rows), np.uint64)

    def all_keys(self) -> np.ndarray:
        rows = self._db.execute("SELECT key FROM vectors")
        return np.fromiter((row[0] for row in rows), np.uint64)

    def vectors(
        self, keys: np.ndarray, dims: int, chunk: int = 4096
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(keys, float32[n, dims]) in chunks, for rebuilding or catching up the index."""
        for rows in self._rows_by_key("key, vector FROM vectors", keys, chunk=chunk):
            if rows:
                yield (
                    np.array([r[0] for r in rows], dtype=np.uint64),
                    np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(-1, dims),
                )

    def _rows_by_key(
        self, selection: str, keys: Sequence[int] | np.ndarray, *, chunk: int
    ) -> Iterator[list[tuple]]:
        """`SELECT selection WHERE key IN (...)`, a chunk of keys per query (SQLite caps the
        number of parameters)."""
        for part, marks in in_chunks(keys, chunk):
            yield self._db.execute(f"SELECT {selection} WHERE key IN ({marks})", part).fetchall()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self.path)


def _image_columns(item: EmbeddedItem) -> tuple[int | None, int | None, int | None]:
    image = item.image
    return (None, None, None) if image is None else (image.width, image.height, image.bytes)


def _items_matching(pairs: Mapping[str, str]) -> tuple[str, list[str]]:
    """A subquery of the item rows whose metadata holds every pair, and its parameters."""
    query = " INTERSECT ".join(
        "SELECT item FROM metadata WHERE name = ? AND value = ?" for _ in pairs
    )
    return query, [part for pair in pairs.items() for part in pair]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT; a full disk becomes a StorageError and a rollback."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db, self._path = db, path

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error as error:
                exc = error
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            if getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "full" in str(exc):
                raise StorageFullError(
                    "the server's disk is full; nothing was stored (searches still work)"
                ) from exc
            code = getattr(exc, "sqlite_errorcode", None)
            if code == SQLITE_IOERR_WRITE and _at_file_size_limit(self._path):
                raise StorageFullError(
                    "the server's files reached the file size limit (ulimit -f), as good as a "
                    "full disk; nothing was stored (searches still work)"
                ) from exc
            raise StorageError(f"could not store durably ({exc}); nothing was stored") from exc


def _at_file_size_limit(database: Path) -> bool:
    """Whether the database or its write-ahead log has grown to this process's file size limit
    (RLIMIT_FSIZE), where the system refuses to write more with EFBIG."""
    try:
        import resource
    except ImportError:  # not POSIX: no such limit
        return False
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit == resource.RLIM_INFINITY:
        return False
    files = (database, database.with_name(f"{database.name}-wal"))
    return any(path.is_file() and path.stat().st_size >= limit for path in files)


@dataclasses.dataclass(frozen=True)
class ListedItem:
    """An item as stored, without its vectors: what re-embedding it needs."""

    row: int  # its row: items come in row order, and a listing goes on after the last one
    id: str
    metadata: dict[str, str]
    regions: tuple[Region, ...]  # given or made when it was added, in storing order


class StoreReader:
    """A data directory's database, read only, each call on a connection of its own: its
    server may keep serving (and writing) meanwhile. Nothing is migrated: stores of
    version 2 and up are read as they are."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise DataDirError(f"{path} does not exist: point at a server's --data-dir")
        self.path = path
        with self._connect() as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version < 2:
                raise DataDirError(
                    f"{path} is a store of version {version}: serve it once with this "
                    "lookalike-server to bring it up to date, then read it"
                )
            row = db.execute(
                "SELECT value FROM settings WHERE name = ?", (IDENTITY_SETTING,)
            ).fetchone()
        self.has_regions = version >= 3
        self.identity = None if row is None else ModelIdentity.from_record(json.loads(row[0]))

    def count(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def items(self, page: int) -> Iterator[ListedItem]:
        """Every item, in row order, `page` at a time (each page on a connection of its own)."""
        after = 0
        while listed := self.items_after(after, page):
            after = listed[-1].row
            yield from listed

    def items_after(self, after: int, count: int) -> list[ListedItem]:
        """Up to `count` items past the row `after`, in row order."""
        region = "region" if self.has_regions else "NULL"
        with self._connect() as db:
            rows = db.execute(
                "SELECT item, id, metadata FROM items WHERE item > ? ORDER BY item LIMIT ?",
                (after, count),
            ).fetchall()
            regions: dict[int, list[Region]] = {int(row): [] for row, _, _ in rows}
            for chunk, marks in in_chunks(list(regions)):
                for item, text in db.execute(
                    f"SELECT item, {region} FROM vectors WHERE item IN ({marks}) "
                    f"AND {region} IS NOT NULL ORDER BY key",
                    chunk,
                ):
                    regions[int(item)].append(Region.from_json(text))
        return [
            ListedItem(int(row), item_id, json.loads(metadata), tuple(regions[int(row)]))
            for row, item_id, metadata in rows
        ]

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise DataDirError(f"cannot read {self.path}: {exc}") from exc
        try:
            yield db
        except sqlite3.DatabaseError as exc:
            raise DataDirError(
                f"{self.path} is corrupt or not a Lookalike database ({exc})"
            ) from exc
        finally:
            db.close()
