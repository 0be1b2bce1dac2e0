"""The local repository: SQLite and USearch in step, filtered and approximate search, ids only."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lookalike.server.errors import NotFoundError
from lookalike.server.index.local_repository import SNAPSHOT_FILE, LocalRepository
from lookalike.server.index.repository import EmbeddedItem
from lookalike.server.index.settings import IndexSettings
from tests.server.fakes import DIMS, TIMEOUT, FakeEngine, unit_vectors
from tests.server.index.test_store import make_v1_database

IDENTITY = FakeEngine().info.identity


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


def collection(count: int, *, rare_every: int = 50, seed: int = 0) -> list[EmbeddedItem]:
    """Items whose `kind` is "rare" for one in `rare_every`, else "common"."""
    return [
        EmbeddedItem(f"item-{i}", vector, {"kind": "rare" if i % rare_every == 0 else "common"})
        for i, vector in enumerate(unit_vectors(count, seed))
    ]


def nearest(query: np.ndarray, candidates: list[EmbeddedItem], k: int) -> list[str]:
    scores = np.stack([item.vector for item in candidates]) @ query
    return [candidates[i].id for i in np.argsort(-scores, kind="stable")[:k]]


async def opened(data_dir: Path, settings: IndexSettings | None = None) -> LocalRepository:
    repository = LocalRepository(data_dir, IDENTITY, settings or IndexSettings())
    await repository.open()
    return repository


def test_upsert_reports_replacements_and_search_sees_only_the_latest(tmp_path: Path) -> None:
    async def body() -> None:
        repository = await opened(tmp_path)
        first, second = unit_vectors(2, seed=1)
        outcomes = await repository.upsert(
            [EmbeddedItem("a", first, {}), EmbeddedItem("b", first, {})]
        )
        assert [(o.id, o.replaced) for o in outcomes] == [("a", False), ("b", False)]
        (outcome,) = await repository.upsert([EmbeddedItem("a", second, {"v": "2"})])
        assert outcome.replaced
        assert repository.item_count == 2
        result = await repository.search(second, 2)
        assert [m.item.id for m in result.matches] == ["a", "b"]
        assert result.matches[0].score == pytest.approx(1.0, abs=1e-5)
        assert result.matches[0].item.metadata == {"v": "2"}
        await repository.close()

    run(body())


def test_delete_returns_the_ids_it_removed(tmp_path: Path) -> None:
    async def body() -> None:
        repository = await opened(tmp_path)
        stored = collection(5)
        await repository.upsert(stored)
        assert sorted(await repository.delete(["item-1", "item-3", "nobody"])) == [
            "item-1",
            "item-3",
        ]
        assert repository.item_count == 3
        result = await repository.search(stored[1].vector, 5)
        assert {m.item.id for m in result.matches} == {"item-0", "item-2", "item-4"}
        with pytest.raises(NotFoundError):
            await repository.get("item-1")
        await repository.close()

    run(body())


def test_exact_below_the_threshold_approximate_above(tmp_path: Path) -> None:
    async def body() -> None:
        repository = await opened(tmp_path, IndexSettings(exact_search_below=100))
        stored = collection(150)
        query = unit_vectors(1, seed=7)[0]
        await repository.upsert(stored[:99])
        small = await repository.search(query, 10)
        assert small.exact
        assert [m.item.id for m in small.matches] == nearest(query, stored[:99], 10)
        await repository.upsert(stored[99:])
        large = await repository.search(query, 10)
        assert not large.exact
        assert len(large.matches) == 10
        await repository.close()

    run(body())


def test_a_filter_among_few_items_is_searched_exactly(tmp_path: Path) -> None:
    async def body() -> None:
        repository = await opened(tmp_path, IndexSettings(exact_search_below=100))
        stored = collection(2000)
        await repository.upsert(stored)
        rare = [item for item in stored if item.metadata["kind"] == "rare"]  # 40 of them
        query = unit_vectors(1, seed=11)[0]
        result = await repository.search(query, 10, filter_pairs={"kind": "rare"})
        assert result.exact
        assert [m.item.id for m in result.matches] == nearest(query, rare, 10)
        nothing = await repository.search(query, 10, filter_pairs={"kind": "absent"})
        assert nothing.matches == []
        await repository.close()

    run(body())


def test_a_filter_on_the_approximate_index_widens_until_it_has_k(tmp_path: Path) -> None:
    """1 item in 50 is "rare": HNSW's first k*4 candidates hold about one of them, so the
    repository must widen its search (oversampling) until it has k."""

    async def body() -> None:
        repository = await opened(tmp_path, IndexSettings(exact_search_below=20))
        stored = collection(2000)
        await repository.upsert(stored)
        rare = [item for item in stored if item.metadata["kind"] == "rare"]
        query = unit_vectors(1, seed=11)[0]
        result = await repository.search(query, 10, filter_pairs={"kind": "rare"})
        assert not result.exact
        assert len(result.matches) == 10
        assert all(m.item.metadata == {"kind": "rare"} for m in result.matches)
        found = {m.item.id for m in result.matches}
        assert len(found & set(nearest(query, rare, 10))) >= 8  # HNSW recall, 16-d
        await repository.close()

    run(body())


def test_query_by_id_excludes_itself_on_request(tmp_path: Path) -> None:
    async def body() -> None:
        repository = await opened(tmp_path)
        stored = collection(20)
        await repository.upsert(stored)
        with_self = await repository.search_by_id("item-4", 3, exclude_self=False)
        assert with_self.matches[0].item.id == "item-4"
        without = await repository.search_by_id("item-4", 3, exclude_self=True)
        assert [m.item.id for m in without.matches] == [
            m.item.id for m in (await repository.search(stored[4].vector, 4)).matches
        ][1:]
        by_vector = await repository.search(stored[4].vector, 3, exclude_ids=["item-4"])
        assert by_vector.matches == without.matches
        with pytest.raises(NotFoundError):
            await repository.search_by_id("nobody", 3, exclude_self=True)
        await repository.close()

    run(body())


def test_min_score_cuts_the_tail(tmp_path: Path) -> None:
    async def body() -> None:
        repository = await opened(tmp_path)
        stored = collection(50)
        await repository.upsert(stored)
        result = await repository.search(stored[0].vector, 50, min_score=0.3)
        assert result.matches
        assert all(m.score >= 0.3 for m in result.matches)
        assert len(result.matches) < 50
        await repository.close()

    run(body())


def test_a_lost_snapshot_is_rebuilt_from_the_database(tmp_path: Path) -> None:
    async def body() -> None:
        repository = await opened(tmp_path)
        stored = collection(30)
        await repository.upsert(stored)
        query = unit_vectors(1, seed=3)[0]
        before = await repository.search(query, 5)
        await repository.close()
        assert (tmp_path / SNAPSHOT_FILE).is_file()
        (tmp_path / SNAPSHOT_FILE).unlink()
        repository = await opened(tmp_path)
        assert repository.item_count == 30
        assert await repository.search(query, 5) == before
        await repository.close()

    run(body())


def test_an_older_data_directory_opens_migrated_and_searchable(tmp_path: Path) -> None:
    stored = collection(12)
    make_v1_database(tmp_path / "items.sqlite3", stored, deleted=2)

    async def body() -> None:
        repository = await opened(tmp_path)
        assert repository.item_count == 10
        query = stored[3].vector
        result = await repository.search(query, 3)
        assert [m.item.id for m in result.matches] == nearest(query, stored[:10], 3)
        (outcome,) = await repository.upsert([EmbeddedItem("item-3", unit_vectors(1, 5)[0], {})])
        assert outcome.replaced
        assert (await repository.get("item-3", with_vector=True)).vector.shape == (DIMS,)  # type: ignore[union-attr]
        await repository.close()

    run(body())
