"""Queries bound for one shard, sent together: the front's half of batching.

Every query visits every shard, and each call to a Serve replica costs milliseconds of CPU
whatever it carries (`benchmarks/README.md`), so a `ShardQueue` lets a shard have a few calls
in flight and gathers the queries that arrive meanwhile into the next call, answered by the
replica in one index call. A query that finds room goes out at once: batching adds no wait
to a lone query, only to those that would have queued anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from lookalike.server.index.shard_search import Query, ShardAnswer

__all__ = ["ShardQueue", "SendBatch", "MAX_BATCH"]

MAX_BATCH = 64  # queries in one call at most
SendBatch = Callable[[np.ndarray, list[int], list[Query]], Awaitable[list[ShardAnswer]]]


class ShardQueue:
    def __init__(self, send: SendBatch, *, in_flight: int) -> None:
        """`send` makes one call with a batch; at most `in_flight` calls at a time."""
        self._send, self._limit = send, in_flight
        self._waiting: list[tuple[np.ndarray, int, Query, asyncio.Future[ShardAnswer]]] = []
        self._calls: set[asyncio.Task[None]] = set()

    async def search(self, vector: np.ndarray, k: int, query: Query) -> ShardAnswer:
        future: asyncio.Future[ShardAnswer] = asyncio.get_running_loop().create_future()
        self._waiting.append((vector, k, query, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._waiting and len(self._calls) < self._limit:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            call = asyncio.create_task(self._call(batch))
            self._calls.add(call)
            call.add_done_callback(self._finished)

    def _finished(self, call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        self._dispatch()

    async def _call(
        self, batch: list[tuple[np.ndarray, int, Query, asyncio.Future[ShardAnswer]]]
    ) -> None:
        vectors = np.stack([vector for vector, *_ in batch])
        try:
            answers = await self._send(
                vectors, [k for _, k, *_ in batch], [q for *_, q, _ in batch]
            )
        except Exception as error:  # the whole call failed: so did each query in it
            for *_, future in batch:
                if not future.done():  # a caller that went away has cancelled its own
                    future.set_exception(error)
            return
        for (*_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)
