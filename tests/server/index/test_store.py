"""The SQLite store: upsert and replace, delete, keys that never repeat, schema versions."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from lookalike.export.manifest import ModelIdentity
from lookalike.server.errors import DataDirError
from lookalike.server.index.repository import EmbeddedItem, ImageFacts, RegionVector
from lookalike.server.index.store import SCHEMA_VERSION, ItemStore
from lookalike.server.regions import Region
from tests.server.fakes import DIMS, unit_vectors

IDENTITY = ModelIdentity("random-init:fake", DIMS)

# The layout of Lookalike's first releases (before the schema carried a version), verbatim.
SCHEMA_V1 = """
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


def make_v1_database(path: Path, items: list[EmbeddedItem], *, deleted: int) -> None:
    """A version-1 database as those releases wrote it; its last `deleted` items removed again
    (so the largest key ever handed out is above every stored key)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(SCHEMA_V1)
    db.execute(
        "INSERT INTO settings VALUES ('model_identity', ?)",
        (json.dumps({"source": IDENTITY.source, "dims": IDENTITY.dims}),),
    )
    for item in items:
        cursor = db.execute(
            "INSERT INTO items (id, vector, metadata) VALUES (?, ?, ?)",
            (item.id, item.vector.tobytes(), json.dumps(item.metadata)),
        )
        db.executemany(
            "INSERT INTO metadata VALUES (?, ?, ?)",
            [(name, value, cursor.lastrowid) for name, value in item.metadata.items()],
        )
    for item in items[len(items) - deleted :]:
        db.execute("DELETE FROM items WHERE id = ?", (item.id,))
    db.close()


def items(count: int, seed: int = 0, prefix: str = "item") -> list[EmbeddedItem]:
    return [
        EmbeddedItem(f"{prefix}-{i}", vector, {"parity": "even" if i % 2 == 0 else "odd"})
        for i, vector in enumerate(unit_vectors(count, seed))
    ]


@pytest.fixture
def store(tmp_path: Path):
    store = ItemStore(tmp_path / "items.sqlite3", IDENTITY)
    yield store
    store.close()


def test_a_new_database_starts_at_the_current_schema(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        store = ItemStore(tmp_path / "items.sqlite3", IDENTITY)
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert store.count() == 0
        assert "migrating" not in caplog.text  # nothing of the user's was there to migrate
    finally:
        store.close()


def as_version_4(store: ItemStore) -> None:
    """Turn a current database back into one of schema version 4 (before image facts)."""
    for column in ("width", "height", "bytes"):
        store._db.execute(f"ALTER TABLE items DROP COLUMN {column}")
    store._db.execute("PRAGMA user_version = 4")


def test_image_facts_are_kept_with_their_item_and_older_items_have_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "items.sqlite3"
    store = ItemStore(path, IDENTITY)
    store.upsert(items(2))
    as_version_4(store)
    store.close()
    with caplog.at_level(logging.INFO):
        store = ItemStore(path, IDENTITY)
    try:
        assert "from schema version 4 to 5" in caplog.text
        assert store.get("item-0").image is None  # type: ignore[union-attr]
        photo, drawn = unit_vectors(2, seed=3)
        facts = ImageFacts(640, 480, 51_234)
        written = store.upsert(
            [EmbeddedItem("photo", photo, {}, image=facts), EmbeddedItem("drawn", drawn, {})]
        )
        assert store.get("photo").image == facts  # type: ignore[union-attr]
        assert store.get("drawn").image is None  # type: ignore[union-attr]
        owners = store.by_keys(written.keys.tolist())
        assert [owner.item.image for owner in owners.values()] == [facts, None]
        assert store.image_facts(["photo", "drawn", "item-1", "nobody"]) == {"photo": facts}
        assert facts.pixels == 640 * 480
    finally:
        store.close()


def test_upsert_replaces_an_item_under_a_new_key(store: ItemStore) -> None:
    first = store.upsert(items(1))
    assert first.replaced == [False]
    assert first.removed_keys.tolist() == []
    replacement = EmbeddedItem("item-0", unit_vectors(1, seed=9)[0], {"parity": "new"})
    second = store.upsert([replacement])
    assert second.replaced == [True]
    assert second.new_items == 0
    assert second.removed_keys.tolist() == first.keys.tolist()
    assert second.keys[0] > first.keys[0]
    assert store.count() == 1
    stored = store.get("item-0", with_vector=True)
    assert stored is not None
    assert stored.metadata == {"parity": "new"}
    np.testing.assert_array_equal(stored.vector, replacement.vector)
    assert store.keys_matching({"parity": "even"}).tolist() == []
    assert store.keys_matching({"parity": "new"}).tolist() == second.keys.tolist()


def test_later_duplicates_in_one_commit_win(store: ItemStore) -> None:
    first, second = items(2)
    written = store.upsert([first, EmbeddedItem("item-0", second.vector, {"v": "2"})])
    assert written.replaced == [False, True]
    assert written.new_items == 1
    np.testing.assert_array_equal(written.vectors, second.vector[None, :])
    assert len(written.keys) == 1
    assert store.all_keys().tolist() == written.keys.tolist()
    assert store.count() == 1
    assert store.get("item-0").metadata == {"v": "2"}  # type: ignore[union-attr]


def test_delete_removes_vectors_and_metadata(store: ItemStore) -> None:
    keys = store.upsert(items(4)).keys.tolist()
    removed = store.delete(["item-1", "nobody", "item-1", "item-2"])
    assert removed == {"item-1": [keys[1]], "item-2": [keys[2]]}
    assert store.count() == 2
    assert sorted(store.all_keys().tolist()) == [keys[0], keys[3]]
    assert store.keys_matching({"parity": "odd"}).tolist() == [keys[3]]
    assert store.get("item-1") is None


def test_keys_are_never_handed_out_twice(tmp_path: Path) -> None:
    path = tmp_path / "items.sqlite3"
    store = ItemStore(path, IDENTITY)
    written = store.upsert(items(3))
    store.delete(["item-2"])  # the largest key
    store.close()
    store = ItemStore(path, IDENTITY)
    new = store.upsert(items(1, prefix="later"))
    assert new.keys[0] > written.keys[2]
    store.close()


def test_an_older_database_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "items.sqlite3"
    original = items(6)
    make_v1_database(path, original, deleted=2)
    store = ItemStore(path, IDENTITY)
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert store.count() == 4
        assert sorted(store.all_keys().tolist()) == [1, 2, 3, 4]  # the index's keys are kept
        for key, item in zip([1, 2, 3, 4], original, strict=False):
            stored = store.get(item.id, with_vector=True)
            assert stored is not None
            assert stored.metadata == dict(item.metadata)
            np.testing.assert_array_equal(stored.vector, item.vector)
            assert store.keys_of(item.id) == [key]
        assert store.keys_matching({"parity": "even"}).tolist() == [1, 3]
        new = store.upsert(items(1, prefix="after"))
        assert new.keys.tolist() == [7]  # keys 5 and 6 were handed out before, stay retired
        replaced = store.upsert([EmbeddedItem("item-0", original[0].vector, {})])
        assert replaced.removed_keys.tolist() == [1]
        assert store.delete(["item-1"]) == {"item-1": [2]}
    finally:
        store.close()
    reopened = ItemStore(path, IDENTITY)  # migrated once: opening again changes nothing
    assert reopened.schema_version == SCHEMA_VERSION
    assert reopened.count() == 4
    reopened.close()


def test_a_newer_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "items.sqlite3"
    ItemStore(path, IDENTITY).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(DataDirError, match="newer Lookalike"):
        ItemStore(path, IDENTITY)
    assert path.read_bytes() == before


def test_another_models_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "items.sqlite3"
    ItemStore(path, IDENTITY).close()
    with pytest.raises(DataDirError, match="cannot be mixed"):
        ItemStore(path, ModelIdentity("hub:other", DIMS))


# The layout of the releases before regions (schema version 2), verbatim.
SCHEMA_V2 = """
CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
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
PRAGMA user_version = 2;
"""


def test_a_database_made_before_regions_is_migrated_and_takes_regions(tmp_path: Path) -> None:
    path = tmp_path / "items.sqlite3"
    original = items(3)
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(SCHEMA_V2)
    db.execute(
        "INSERT INTO settings VALUES ('model_identity', ?)",
        (json.dumps({"source": IDENTITY.source, "dims": IDENTITY.dims}),),
    )
    for row, item in enumerate(original, start=1):
        db.execute("INSERT INTO items VALUES (?, ?, ?)", (row, item.id, json.dumps(item.metadata)))
        db.execute("INSERT INTO vectors VALUES (?, ?, ?)", (row, row, item.vector.tobytes()))
        for name, value in item.metadata.items():
            db.execute("INSERT INTO metadata VALUES (?, ?, ?)", (name, value, row))
    db.close()

    store = ItemStore(path, IDENTITY)
    try:
        assert store.schema_version == SCHEMA_VERSION
        stored = store.get("item-1", with_vector=True)
        assert stored is not None
        assert stored.regions == ()
        np.testing.assert_array_equal(stored.vector, original[1].vector)
        assert all(owner.region is None for owner in store.by_keys([1, 2, 3]).values())

        whole, part = unit_vectors(2, seed=9)
        box = Region(0.1, 0.2, 0.6, 0.9, "thing")
        written = store.upsert([EmbeddedItem("item-1", whole, {}, (RegionVector(box, part),))])
        assert written.removed_keys.tolist() == [2]
        assert written.keys.tolist() == [4, 5]  # whole image first, then its region
        np.testing.assert_array_equal(written.vectors, np.stack([whole, part]))
        owners = store.by_keys([4, 5])
        assert (owners[4].item.id, owners[4].region) == ("item-1", None)
        assert (owners[5].item.id, owners[5].region) == ("item-1", box)
        assert store.get("item-1").regions == (box,)  # type: ignore[union-attr]
        np.testing.assert_array_equal(store.get("item-1", with_vector=True).vector, whole)  # type: ignore[union-attr]
        assert store.keys_matching({"parity": "even"}).tolist() == [1, 3]
        assert store.delete(["item-1"]) == {"item-1": [4, 5]}
        assert store.vector_count() == 2
    finally:
        store.close()


def test_thumbnails_follow_their_item_in_a_database_from_before_them(tmp_path: Path) -> None:
    """A version-3 database gains the thumbnails table; a thumbnail is replaced and deleted with
    its item, and an item stored without one has none."""
    path = tmp_path / "items.sqlite3"
    store = ItemStore(path, IDENTITY)
    store.upsert(items(2))
    as_version_4(store)
    store._db.execute("DROP TABLE thumbnails")
    store._db.execute("PRAGMA user_version = 3")
    store.close()

    store = ItemStore(path, IDENTITY)
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert store.thumbnail("item-0") is None  # stored before thumbnails
        with pytest.raises(KeyError):
            store.thumbnail("nobody")
        first, second = unit_vectors(2, seed=4)
        store.upsert([EmbeddedItem("pic", first, {}, thumbnail=b"jpeg-1")])
        assert store.thumbnail("pic") == b"jpeg-1"
        store.upsert([EmbeddedItem("pic", second, {}, thumbnail=b"jpeg-2")])
        assert store.thumbnail("pic") == b"jpeg-2"
        store.upsert([EmbeddedItem("pic", first, {})])  # replaced by one without a picture
        assert store.thumbnail("pic") is None
        store.upsert([EmbeddedItem("pic", first, {}, thumbnail=b"jpeg-3")])
        store.delete(["pic"])
        count = store._db.execute("SELECT COUNT(*) FROM thumbnails").fetchone()[0]
        assert count == 0
    finally:
        store.close()
