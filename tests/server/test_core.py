"""The transport-free core over a fake engine: checks first, grouping, back-pressure, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lookalike.server.core import COMMIT_GROUP, Core
from lookalike.server.embed.batcher import BatcherSettings
from lookalike.server.errors import (
    InvalidArgumentError,
    InvalidImageError,
    LimitExceededError,
    NotFoundError,
    OverloadedError,
)
from lookalike.server.metrics import Metrics
from lookalike.server.regions import Region
from lookalike.server.request_types import AddItem, Example, SearchQuery
from tests.server.fakes import DIMS, TIMEOUT, FakeEngine, image_vector, open_core, unit_vectors
from tests.server.images import jpeg


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


def sample(metrics: Metrics, name: str) -> float:
    """A metric of the image queue (or one without labels)."""
    labels = {"queue": "image"} if "input" in name or "queue_depth" in name else {}
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.002)


def photo(i: int) -> bytes:
    return f"photo-{i}".encode()


def test_items_added_by_image_or_vector_are_found_by_image_vector_and_id(tmp_path: Path) -> None:
    async def body() -> None:
        async with open_core(tmp_path) as core:
            added = await core.add(AddItem("cat", image=photo(1), metadata={"kind": "cat"}))
            assert (added.id, added.replaced) == ("cat", False)
            await core.add(AddItem("dog", vector=unit_vectors(1, seed=5)[0] * 3.0))
            assert (await core.add(AddItem("dog", vector=unit_vectors(1, seed=6)[0]))).replaced

            by_image = await core.search(SearchQuery(image=photo(1), k=2))
            assert by_image.matches[0].item.id == "cat"
            assert by_image.matches[0].score == pytest.approx(1.0, abs=1e-5)
            by_vector = await core.search(SearchQuery(vector=image_vector(photo(1)).tolist()))
            assert by_vector.matches[0].item.metadata == {"kind": "cat"}
            by_id = await core.search(SearchQuery(item_id="cat", exclude_self=True))
            assert [m.item.id for m in by_id.matches] == ["dog"]

            stored = await core.get("dog", with_vector=True)
            assert stored.vector is not None
            assert float(np.linalg.norm(stored.vector)) == pytest.approx(1.0)
            np.testing.assert_allclose(stored.vector, unit_vectors(1, seed=6)[0], atol=1e-6)

    run(body())


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (SearchQuery(image=photo(1), k=0), "k must be"),
        (SearchQuery(image=photo(1), min_score=1.5), "min_score"),
        (SearchQuery(image=photo(1), filter={f"k{i}": "v" for i in range(65)}), "filter has"),
        (SearchQuery(image=photo(1), filter={"": "v"}), "filter key"),
        (SearchQuery(image=photo(1), vector=[1.0] * DIMS), "not several"),
        (SearchQuery(k=3), "no query"),
        (SearchQuery(negatives=[Example(item_id="cat")]), "negatives alone"),
        (SearchQuery(text="x", positives=[Example(text="a", item_id="b")]), "positive 0"),
        (SearchQuery(text="x", negative_weight=1.5), "negative_weight"),
        (SearchQuery(item_id=""), "id is empty"),
        (SearchQuery(item_id="a\0b"), "NUL"),
        (SearchQuery(vector=[0.0] * DIMS), "all zeros"),
        (SearchQuery(vector=[1.0, 2.0]), f"this model's embeddings have {DIMS}"),
    ],
)
def test_a_whole_search_is_checked_before_any_image_is_decoded(
    tmp_path: Path, query: SearchQuery, message: str
) -> None:
    engine = FakeEngine()

    async def body() -> None:
        async with open_core(tmp_path, engine=engine) as core:
            with pytest.raises(InvalidArgumentError, match=message):
                await core.search(query)

    run(body())
    assert engine.preprocessed == 0


def test_query_by_id_is_checked_like_get(tmp_path: Path) -> None:
    async def body() -> None:
        async with open_core(tmp_path) as core:
            for call in (
                core.get("x" * 1025),
                core.search(SearchQuery(item_id="x" * 1025)),
            ):
                with pytest.raises(InvalidArgumentError, match="limit is 1024"):
                    await call
            for call in (core.get("nobody"), core.search(SearchQuery(item_id="nobody"))):
                with pytest.raises(NotFoundError, match="no item with id 'nobody'"):
                    await call

    run(body())


def test_a_search_with_several_examples_is_checked_and_searches_with_their_mean(
    tmp_path: Path,
) -> None:
    """Too many examples is a limit; an unknown id among them is NOT_FOUND; examples that cancel
    out say so; several images search with the normalised mean of their vectors."""
    engine = FakeEngine()

    async def body() -> None:
        async with open_core(tmp_path, engine=engine) as core:
            await core.add(AddItem("cat", image=photo(1)))
            await core.add(AddItem("dog", image=photo(2)))
            with pytest.raises(LimitExceededError, match="65 examples"):
                await core.search(SearchQuery(positives=[Example(text="x")] * 65))
            with pytest.raises(LimitExceededError, match=r"9 example images.* limit is 8"):
                await core.search(SearchQuery(positives=[Example(image=photo(1))] * 9))
            decoded = engine.preprocessed
            with pytest.raises(NotFoundError, match="'nobody'"):
                await core.search(
                    SearchQuery(
                        image=photo(3),
                        positives=[Example(image=photo(4))],
                        negatives=[Example(item_id="nobody")],
                    )
                )
            assert engine.preprocessed == decoded  # the unknown id failed before any embedding
            with pytest.raises(InvalidArgumentError, match="cancel out"):
                await core.search(
                    SearchQuery(
                        item_id="cat", negatives=[Example(image=photo(1))], negative_weight=1.0
                    )
                )
            images = [Example(image=photo(i)) for i in (1, 2, 3)]
            found = await core.search(SearchQuery(positives=images, k=2))
            expected = np.mean([image_vector(photo(i)) for i in (1, 2, 3)], axis=0)
            expected /= np.linalg.norm(expected)
            scores = {m.item.id: m.score for m in found.matches}
            assert scores["cat"] == pytest.approx(
                float(expected @ image_vector(photo(1))), abs=1e-5
            )
            assert scores["dog"] == pytest.approx(
                float(expected @ image_vector(photo(2))), abs=1e-5
            )

    run(body())


def test_an_item_is_checked_before_its_image_is_decoded(tmp_path: Path) -> None:
    engine = FakeEngine()

    async def body() -> None:
        async with open_core(tmp_path, engine=engine) as core:
            bad_items = [
                (AddItem("", image=photo(1)), "id is empty"),
                (AddItem("a", image=photo(1), metadata={"k": "v" * 8193}), "limit is 8192"),
                (AddItem("a"), "no content"),
                (AddItem("a", image=photo(1), vector=[1.0] * DIMS), "set one"),
            ]
            for item, message in bad_items:
                with pytest.raises(InvalidArgumentError, match=message):
                    await core.add(item)
            with pytest.raises(LimitExceededError, match="limit is 8"):
                await core.embed([photo(i) for i in range(9)])
            with pytest.raises(InvalidArgumentError, match="no images"):
                await core.embed([])

    run(body())
    assert engine.preprocessed == 0


async def stream(items: list[AddItem]) -> AsyncIterator[AddItem]:
    for item in items:
        yield item


def test_add_many_commits_in_groups_and_fails_bad_items_alone(tmp_path: Path) -> None:
    items = [AddItem(f"item-{i}", image=photo(i)) for i in range(150)]
    items[3] = AddItem("broken", image=b"bad bytes")
    items[70] = AddItem("empty")
    items[149] = AddItem("item-0", vector=unit_vectors(1, seed=1)[0])  # replaces item 0

    async def body() -> None:
        async with open_core(tmp_path) as core:
            groups = [group async for group in core.add_many(stream(items))]
            assert [len(g.results) for g in groups] == [COMMIT_GROUP, COMMIT_GROUP, 22]
            assert [(g.stored, g.failed) for g in groups] == [(63, 1), (126, 2), (148, 2)]
            results = [r for g in groups for r in g.results]
            assert [r.index for r in results] == list(range(150))
            failures = {r.id: r.error for r in results if r.error is not None}
            assert isinstance(failures["broken"], InvalidImageError)
            assert isinstance(failures["empty"], InvalidArgumentError)
            assert [r.id for r in results if r.replaced] == ["item-0"]
            stored = (await core.stats()).repository.items
            assert stored == 147  # 148 stored, one of them a replacement

    run(body())


def test_add_many_waits_for_its_own_work_when_the_queue_is_full(tmp_path: Path) -> None:
    """A bulk stream is never refused for being fast: it holds back until the queue drains."""
    engine, metrics = FakeEngine(), Metrics.create()
    settings = BatcherSettings(max_batch=2, max_delay_ms=1, max_queue=4, preprocess_threads=2)
    items = [AddItem(f"item-{i}", image=photo(i)) for i in range(40)]

    async def body() -> None:
        async with open_core(tmp_path, engine=engine, batcher=settings, metrics=metrics) as core:
            engine.gate.clear()
            depth = "lookalike_queue_depth"
            task = asyncio.ensure_future(_collect(core, items))
            await until(lambda: sample(metrics, depth) == settings.max_queue)
            await asyncio.sleep(0.05)  # held: the stream must not push past the limit
            assert sample(metrics, depth) == settings.max_queue
            engine.gate.set()
            groups = await task
            assert groups[-1].stored == 40
            assert groups[-1].failed == 0

    run(body())
    assert sample(metrics, "lookalike_refused_inputs_total") == 0
    assert sample(metrics, "lookalike_admitted_inputs_total") == 40


async def _collect(core: Core, items: list[AddItem]) -> list[Any]:
    return [group async for group in core.add_many(stream(items))]


def test_metrics_record_admissions_refusals_drops_and_the_item_count(tmp_path: Path) -> None:
    engine, metrics = FakeEngine(), Metrics.create()
    settings = BatcherSettings(max_batch=1, max_delay_ms=1, max_queue=4, preprocess_threads=1)

    async def body() -> None:
        async with open_core(tmp_path, engine=engine, batcher=settings, metrics=metrics) as core:
            engine.gate.clear()
            held = asyncio.ensure_future(core.embed([photo(1), photo(2), photo(3)]))
            await until(lambda: engine.preprocessed == 3)
            with pytest.raises(OverloadedError, match="3 images queued"):
                await core.embed([photo(4), photo(5)])
            assert sample(metrics, "lookalike_refused_inputs_total") == 2
            assert sample(metrics, "lookalike_queue_depth") == 3  # current at the refusal
            held.cancel()  # the caller leaves: rows not yet inferred are dropped
            engine.gate.set()
            await until(lambda: sample(metrics, "lookalike_queue_depth") == 0)
            await until(lambda: sample(metrics, "lookalike_dropped_inputs_total") >= 2)
            assert sum(engine.batch_sizes) <= 1  # at most the row already in inference ran

            for i in range(3):
                await core.add(AddItem(f"item-{i}", vector=unit_vectors(1, seed=i)[0]))
            assert sample(metrics, "lookalike_index_items") == 3
            region = Region(0.0, 0.0, 0.5, 0.5)
            await core.add(AddItem("scene", image=jpeg(128, 128), regions=[region]))
            assert sample(metrics, "lookalike_index_items") == 4
            assert sample(metrics, "lookalike_index_vectors") == 5  # its whole image + region
            await core.delete(["item-1", "scene"])
            assert sample(metrics, "lookalike_index_items") == 2
            assert sample(metrics, "lookalike_index_vectors") == 2

    run(body())
    assert sample(metrics, "lookalike_admitted_inputs_total") == 3 + 2  # "scene" and its region


def test_delete_reports_the_missing_once_each_in_order(tmp_path: Path) -> None:
    async def body() -> None:
        async with open_core(tmp_path) as core:
            await core.add(AddItem("a", vector=unit_vectors(1)[0]))
            deleted = await core.delete(["x", "a", "y", "x", "a"])
            assert (deleted.deleted, deleted.missing) == (1, ["x", "y"])
            with pytest.raises(InvalidArgumentError, match="no ids"):
                await core.delete([])

    run(body())


def test_stats_describe_the_model_the_index_and_the_queue(tmp_path: Path) -> None:
    engine = FakeEngine()

    async def body() -> None:
        async with open_core(tmp_path, engine=engine) as core:
            await core.embed([photo(1), photo(2)])
            stats = await core.stats()
            assert stats.model == engine.info
            assert stats.repository.items == 0
            assert stats.batcher.images == 2
            assert stats.repository.index.metric == "cos"
            assert stats.uptime_seconds >= 0

    run(body())
