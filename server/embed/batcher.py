"""Dynamic batching: many concurrent callers, one owner of the queue, one session at a time.

Callers `submit` inputs (image bytes, or texts) and get one future per input. Each input is
preprocessed (decoded, or tokenised) in a thread pool as soon as it is admitted, so that work
overlaps the inference of the previous batch. A single loop owns the queue of ready tensors:
it flushes when `max_batch` rows are ready, when the oldest ready row has waited
`max_delay_ms`, or at once when no other input is being preprocessed (nothing could join the
batch in time, so waiting would only add latency). It skips rows whose caller has gone and
runs inference in its own thread, off the event loop. It records its decisions in `Metrics`,
labelled with its queue's name: admissions, refusals, dropped rows, batch sizes, queue depth,
and the preprocess and inference stage times. Each batcher (one per model graph) has its own
queue, so texts never wait behind images.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from lookalike.server.errors import (
    EngineError,
    InvalidArgumentError,
    LookalikeError,
    OverloadedError,
)
from lookalike.server.metrics import Metrics

__all__ = ["BatcherSettings", "BatcherStats", "Batcher", "Embed"]

log = logging.getLogger(__name__)

Input = TypeVar("Input")  # what callers submit: image bytes, or a text
# A batch of prepared inputs (as `collate` put them together) -> one embedding per input, or
# the error of that input alone
Embed = Callable[[Any], "np.ndarray | Sequence[np.ndarray | Exception]"]
HealthListener = Callable[[bool], None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatcherSettings:
    max_batch: int = 32
    max_delay_ms: float = 2.0  # benchmarks/README.md: the batching sweep
    max_queue: int = 512  # images admitted and not yet answered; beyond: OverloadedError
    preprocess_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 2)
    unhealthy_after: int = 3  # consecutive failed batches before reporting unhealthy

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "preprocess_threads", "unhealthy_after"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_delay_ms < 0:
            raise ValueError("max_delay_ms must not be negative")


@dataclasses.dataclass(frozen=True)
class BatcherStats:
    queue_depth: int  # inputs admitted and not yet answered
    batches: int
    images: int  # inputs inferred (images, or texts)
    mean_batch_size: float
    healthy: bool


@dataclasses.dataclass(frozen=True)
class _Ready:
    tensor: Any  # the input as `preprocess` prepared it: model input, or what `embed` finishes
    future: asyncio.Future[np.ndarray]
    ready_at: float


class Batcher(Generic[Input]):
    def __init__(
        self,
        embed: Embed,
        preprocess: Callable[[Input], Any],
        settings: BatcherSettings = BatcherSettings(),
        *,
        collate: Callable[[list[Any]], Any] = np.stack,
        on_health_change: HealthListener | None = None,
        metrics: Metrics | None = None,
        queue: str = "image",
        stages: tuple[str, str] = ("preprocess", "inference"),
    ) -> None:
        """`collate` puts a batch's prepared inputs together for `embed` (one array, by
        default); `queue` names this batcher in metrics and messages; `stages` names its
        preprocess and inference stage timings."""
        self._embed, self._preprocess, self.settings = embed, preprocess, settings
        self._collate = collate
        metrics = metrics or Metrics.create()
        self._admitted = metrics.admitted.labels(queue)
        self._refused = metrics.refused.labels(queue)
        self._dropped = metrics.dropped.labels(queue)
        self._depth = metrics.queue_depth.labels(queue)
        self._batch_size = metrics.batch_size.labels(queue)
        self._metrics, self._queue, self._stages = metrics, queue, stages
        self._on_health_change = on_health_change
        self._ready: asyncio.Queue[_Ready] = asyncio.Queue()
        self._pending = 0  # admitted and not yet answered
        self._preprocessing = 0  # admitted and not yet in the ready queue
        self._batches = self._images = self._consecutive_failures = 0
        self._loop_task: asyncio.Task[None] | None = None
        self._preprocess_pool = concurrent.futures.ThreadPoolExecutor(
            settings.preprocess_threads, thread_name_prefix="preprocess"
        )
        self._inference_pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="inference"
        )

    async def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._batch_loop(), name="batcher")

    async def close(self) -> None:
        """Stop the loop; anything still queued fails with EngineError."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        while not self._ready.empty():
            _fail(self._ready.get_nowait().future, EngineError("server is shutting down"))
        self._preprocess_pool.shutdown(wait=False, cancel_futures=True)
        self._inference_pool.shutdown(wait=True)

    @property
    def healthy(self) -> bool:
        return self._consecutive_failures < self.settings.unhealthy_after

    def record_recovery(self) -> None:
        """The engine works again (e.g. a self-test passed): healthy until it fails again."""
        self._set_failures(0)

    def _set_failures(self, count: int) -> None:
        was_healthy = self.healthy
        self._consecutive_failures = count
        if self.healthy != was_healthy and self._on_health_change is not None:
            self._on_health_change(self.healthy)

    def stats(self) -> BatcherStats:
        return BatcherStats(
            queue_depth=self._pending,
            batches=self._batches,
            images=self._images,
            mean_batch_size=self._images / self._batches if self._batches else 0.0,
            healthy=self.healthy,
        )

    def has_room(self, images: int) -> bool:
        """Whether `images` more would be admitted now."""
        return self._pending + images <= self.settings.max_queue

    def submit(self, inputs: Sequence[Input]) -> list[asyncio.Future[np.ndarray]]:
        """Admit all inputs or none; one future per input, in order."""
        if self._loop_task is None:
            raise EngineError("batcher is not running")
        if not self.has_room(len(inputs)):
            self._refused.inc(len(inputs))
            self._depth.set(self._pending)
            raise OverloadedError(
                f"server is at capacity ({self._pending} {self._queue}s queued, limit "
                f"{self.settings.max_queue}); retry with backoff"
            )
        loop = asyncio.get_running_loop()
        futures = []
        for data in inputs:
            future: asyncio.Future[np.ndarray] = loop.create_future()
            self._pending += 1
            self._preprocessing += 1
            future.add_done_callback(self._release)
            prepared = loop.run_in_executor(self._preprocess_pool, self._prepare, data, future)
            prepared.add_done_callback(functools.partial(self._enqueue, future))
            futures.append(future)
        self._admitted.inc(len(inputs))
        self._depth.set(self._pending)
        return futures

    async def embed(self, inputs: Sequence[Input]) -> np.ndarray:
        """Embed all inputs (float32[N, D]); raise the first input's error if any failed."""
        results = await asyncio.gather(*self.submit(inputs), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return np.stack(results)  # type: ignore[arg-type]

    def _release(self, _: asyncio.Future[np.ndarray]) -> None:
        self._pending -= 1
        self._depth.set(self._pending)

    def _prepare(self, data: Input, future: asyncio.Future[np.ndarray]) -> Any:
        """Runs in a worker thread. Skips inputs whose caller has already gone."""
        if future.done():
            return None
        try:
            with self._metrics.stage(self._stages[0]):
                return self._preprocess(data)
        except LookalikeError:
            raise
        except Exception as exc:  # a decoder bug must fail this input, not the server
            raise InvalidArgumentError(
                f"could not preprocess {self._queue}: {type(exc).__name__}: {exc}"
            ) from exc

    def _enqueue(self, future: asyncio.Future[np.ndarray], prepared: asyncio.Future[Any]) -> None:
        self._preprocessing -= 1
        if future.done() or prepared.cancelled():  # the caller has gone
            self._dropped.inc()
            return
        error = prepared.exception()
        if error is not None:
            future.set_exception(error)
        elif (tensor := prepared.result()) is not None:
            self._ready.put_nowait(_Ready(tensor, future, asyncio.get_running_loop().time()))

    async def _batch_loop(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch:
                try:
                    await self._infer(batch)
                except Exception:  # never let the loop die; the batch was already failed
                    log.exception("unexpected error in the batch loop")

    async def _next_batch(self) -> list[_Ready]:
        """Wait for a first row, then fill up to max_batch until its max_delay runs out.

        Stops early when the ready queue is empty and no image is being preprocessed.
        """
        loop = asyncio.get_running_loop()
        first = await self._ready.get()
        batch = self._still_wanted([first])
        deadline = first.ready_at + self.settings.max_delay_ms / 1000
        while len(batch) < self.settings.max_batch:
            if self._ready.empty():
                remaining = deadline - loop.time()
                if remaining <= 0 or not self._preprocessing:
                    break
                try:
                    item = await asyncio.wait_for(self._ready.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = self._ready.get_nowait()
            batch += self._still_wanted([item])
        return batch

    def _still_wanted(self, rows: list[_Ready]) -> list[_Ready]:
        """The rows whose caller is still waiting; the others are dropped."""
        wanted = [row for row in rows if not row.future.done()]
        self._dropped.inc(len(rows) - len(wanted))
        return wanted

    async def _infer(self, batch: list[_Ready]) -> None:
        tensors = self._collate([item.tensor for item in batch])
        loop = asyncio.get_running_loop()
        self._batch_size.observe(len(batch))
        try:
            with self._metrics.stage(self._stages[1]):
                embeds = await loop.run_in_executor(self._inference_pool, self._embed, tensors)
        except Exception as exc:
            self._set_failures(self._consecutive_failures + 1)
            error = exc if isinstance(exc, EngineError) else EngineError(f"inference failed: {exc}")
            log.error(
                "batch of %d failed (%d in a row): %s", len(batch), self._consecutive_failures, exc
            )
            for item in batch:
                _fail(item.future, error)
            return
        self._set_failures(0)
        self._batches += 1
        self._images += len(batch)
        for item, embedding in zip(batch, embeds, strict=True):
            if isinstance(embedding, Exception):
                _fail(item.future, embedding)
            elif not item.future.done():
                item.future.set_result(embedding)


def _fail(future: asyncio.Future[np.ndarray], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
