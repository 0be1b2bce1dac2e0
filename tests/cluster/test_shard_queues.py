"""The front's batching of the searches bound for one shard (no Ray needed)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from lookalike.server.cluster.shard_queues import ShardQueue
from lookalike.server.errors import ReplicaUnavailableError
from lookalike.server.index.repository import ScoredItem, StoredItem
from lookalike.server.index.shard_search import Query, ShardAnswer


def answer_for(vector: np.ndarray, k: int) -> ShardAnswer:
    """What a fake shard answers: the query's first value and k, as an item."""
    item = StoredItem(f"{vector[0]:.0f}/{k}", {})
    return ShardAnswer([ScoredItem(item, 1.0)], exact=True)


def test_queries_that_wait_for_room_go_together_and_each_gets_its_own_answer() -> None:
    batches: list[int] = []

    async def send(vectors: np.ndarray, ks: list[int], queries: list[Query]) -> list[ShardAnswer]:
        batches.append(len(ks))
        await asyncio.sleep(0.01)  # a call in flight: the next queries wait for room
        return [answer_for(v, k) for v, k in zip(vectors, ks, strict=True)]

    async def body() -> list[ShardAnswer]:
        queue = ShardQueue(send, in_flight=2)
        return await asyncio.gather(
            *(queue.search(np.array([float(n)]), n % 3 + 1, Query()) for n in range(20))
        )

    answers = asyncio.run(body())
    assert [a.matches[0].item.id for a in answers] == [f"{n}/{n % 3 + 1}" for n in range(20)]
    # the first two found room and went at once, alone; the other 18 waited and went together
    assert batches == [1, 1, 18]


def test_a_failed_call_fails_each_query_in_it_and_the_queue_goes_on() -> None:
    calls = 0

    async def send(vectors: np.ndarray, ks: list[int], queries: list[Query]) -> list[ShardAnswer]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ReplicaUnavailableError("shard 0 is not answering")
        return [answer_for(v, k) for v, k in zip(vectors, ks, strict=True)]

    async def body() -> None:
        queue = ShardQueue(send, in_flight=1)
        with pytest.raises(ReplicaUnavailableError):
            await queue.search(np.array([1.0]), 5, Query())
        later = await queue.search(np.array([2.0]), 5, Query())
        assert later.matches[0].item.id == "2/5"

    asyncio.run(body())
