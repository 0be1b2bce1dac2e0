"""The items' source of truth: SQLite in WAL mode, every commit fsynced (synchronous=FULL).

Each stored vector has an integer key (the USearch key). An item owns its key today; items
with several vectors (regions) will own several, so the key is never the item id.
Not thread-safe: one owner (the repository's data thread) calls it.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from lookalike.server.errors import DataDirError, StorageError, StorageFullError

__all__ = ["NewItem", "StoredItem", "Written", "ItemStore", "ModelIdentity"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    vector BLOB NOT NULL,
    metadata TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metadata (
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    key INTEGER NOT NULL REFERENCES items(key) ON DELETE CASCADE,
    PRIMARY KEY (name, value, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metadata_by_key ON metadata(key);
"""
IDENTITY_SETTING = "model_identity"
SQLITE_FULL = 13  # the result code of a write to a full disk


@dataclasses.dataclass(frozen=True)
class ModelIdentity:
    """What makes two models' embeddings comparable: the same weights and dimension."""

    source: str
    dims: int

    def describe(self) -> str:
        return f"{self.source} ({self.dims}-d)"


@dataclasses.dataclass(frozen=True)
class NewItem:
    id: str
    vector: np.ndarray  # float32[D], unit norm
    metadata: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class StoredItem:
    key: int
    id: str
    metadata: dict[str, str]
    vector: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Written:
    id: str
    key: int
    replaced_key: int | None


class ItemStore:
    def __init__(self, path: Path, identity: ModelIdentity) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._check_identity(identity)
        except sqlite3.DatabaseError as exc:
            raise DataDirError(
                f"database {path} is corrupt or not a Lookalike database ({exc}); it was left "
                "untouched: restore it from a backup, or move it away to start empty"
            ) from exc

    def close(self) -> None:
        self._db.close()

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
        stored = ModelIdentity(**json.loads(row[0]))
        if stored != identity:
            raise DataDirError(
                f"{self.path.parent} holds embeddings of {stored.describe()}, but this server "
                f"runs {identity.describe()}; embeddings of different models cannot be mixed. "
                "Use another --data-dir, or the model it was built with."
            )

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def upsert(self, items: Sequence[NewItem]) -> list[Written]:
        """Store all items in one durable transaction (group commit); later ids win."""
        written = []
        with self._transaction():
            for item in items:
                old = self._db.execute("SELECT key FROM items WHERE id = ?", (item.id,)).fetchone()
                if old is not None:
                    self._db.execute("DELETE FROM items WHERE key = ?", (old[0],))
                cursor = self._db.execute(
                    "INSERT INTO items (id, vector, metadata) VALUES (?, ?, ?)",
                    (item.id, item.vector.astype(np.float32).tobytes(), json.dumps(item.metadata)),
                )
                key = int(cursor.lastrowid or 0)
                self._db.executemany(
                    "INSERT INTO metadata VALUES (?, ?, ?)",
                    [(name, value, key) for name, value in item.metadata.items()],
                )
                written.append(Written(item.id, key, old[0] if old else None))
        return written

    def delete(self, ids: Sequence[str]) -> dict[str, int]:
        """Remove the stored ones durably; return {id: key} of those that were stored."""
        removed = {}
        with self._transaction():
            for item_id in dict.fromkeys(ids):
                row = self._db.execute("SELECT key FROM items WHERE id = ?", (item_id,)).fetchone()
                if row is not None:
                    self._db.execute("DELETE FROM items WHERE key = ?", (row[0],))
                    removed[item_id] = int(row[0])
        return removed

    def get(self, item_id: str, *, with_vector: bool = False) -> StoredItem | None:
        row = self._db.execute(
            "SELECT key, id, metadata, vector FROM items WHERE id = ?", (item_id,)
        ).fetchone()
        return None if row is None else _item(row, with_vector=with_vector)

    def by_keys(self, keys: Sequence[int]) -> dict[int, StoredItem]:
        found: dict[int, StoredItem] = {}
        for rows in self._rows_by_key("key, id, metadata, NULL", keys, chunk=500):
            found.update((row[0], _item(row, with_vector=False)) for row in rows)
        return found

    def keys_matching(self, pairs: Mapping[str, str]) -> np.ndarray:
        """Keys of the items whose metadata holds every pair."""
        query = " INTERSECT ".join(
            "SELECT key FROM metadata WHERE name = ? AND value = ?" for _ in pairs
        )
        parameters = [part for pair in pairs.items() for part in pair]
        return np.fromiter((row[0] for row in self._db.execute(query, parameters)), np.uint64)

    def all_keys(self) -> np.ndarray:
        return np.fromiter((row[0] for row in self._db.execute("SELECT key FROM items")), np.uint64)

    def vectors(
        self, keys: np.ndarray, dims: int, chunk: int = 4096
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(keys, float32[n, dims]) in chunks, for rebuilding or catching up the index."""
        for rows in self._rows_by_key("key, vector", keys, chunk=chunk):
            if rows:
                yield (
                    np.array([r[0] for r in rows], dtype=np.uint64),
                    np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(-1, dims),
                )

    def _rows_by_key(
        self, columns: str, keys: Sequence[int] | np.ndarray, *, chunk: int
    ) -> Iterator[list[tuple]]:
        """`SELECT columns ... WHERE key IN (...)`, a chunk of keys per query (SQLite caps the
        number of parameters)."""
        for start in range(0, len(keys), chunk):
            part = [int(k) for k in keys[start : start + chunk]]
            marks = ",".join("?" * len(part))
            query = f"SELECT {columns} FROM items WHERE key IN ({marks})"
            yield self._db.execute(query, part).fetchall()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT; a full disk becomes a StorageError and a rollback."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

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
            raise StorageError(f"could not store durably ({exc}); nothing was stored") from exc


def _item(row: tuple, *, with_vector: bool) -> StoredItem:
    key, item_id, metadata, vector = row
    return StoredItem(
        key=int(key),
        id=item_id,
        metadata=json.loads(metadata),
        vector=np.frombuffer(vector, np.float32).copy() if with_vector and vector else None,
    )
