"""The dynamic batcher: flush rules, cancellation, overload, isolation, batch invariance."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lookalike.export.manifest import Manifest, Precision
from lookalike.server.embed.batcher import Batcher, BatcherSettings, BatcherStats
from lookalike.server.embed.onnx_engine import EngineSettings, OnnxEngine
from lookalike.server.embed.preprocess import Preprocessor
from lookalike.server.errors import EngineError, InvalidImageError, OverloadedError
from tests.server.images import jpeg

TIMEOUT = 30


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


class RecordingEngine:
    """Wraps a real engine; records batch sizes and can hold inference until released."""

    def __init__(self, engine: OnnxEngine, *, failures: int = 0) -> None:
        self.engine, self.failures = engine, failures
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(TIMEOUT)
        self.batch_sizes.append(len(batch))
        if self.failures:
            self.failures -= 1
            raise RuntimeError("simulated device failure")
        return self.engine.embed(batch)


@pytest.fixture(scope="module")
def engine(tiny_export: Path) -> OnnxEngine:
    return OnnxEngine(tiny_export, EngineSettings(precision=Precision.FP32, intra_op_threads=1))


@pytest.fixture(scope="module")
def preprocess(tiny_export: Path) -> Preprocessor:
    return Preprocessor.for_package(Manifest.load(tiny_export))


IMAGES = [jpeg(160 + 8 * i, 120, seed=i) for i in range(8)]


async def with_batcher(
    embed: Callable[[np.ndarray], np.ndarray],
    preprocess: Callable[[bytes], np.ndarray],
    settings: BatcherSettings,
    body: Callable[[Batcher], Coroutine[Any, Any, Any]],
) -> Any:
    batcher = Batcher(embed, preprocess, settings)
    await batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.close()


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


def test_flushes_when_max_batch_rows_are_ready(
    engine: OnnxEngine, preprocess: Preprocessor
) -> None:
    recorder = RecordingEngine(engine)
    settings = BatcherSettings(max_batch=4, max_delay_ms=10_000)

    async def body(batcher: Batcher) -> float:
        started = time.monotonic()
        await batcher.embed(IMAGES)
        return time.monotonic() - started

    elapsed = run(with_batcher(recorder, preprocess, settings, body))
    assert recorder.batch_sizes == [4, 4]
    assert elapsed < 5  # full batches never wait for the 10 s delay


def test_flushes_at_once_when_no_other_image_is_on_its_way(
    engine: OnnxEngine, preprocess: Preprocessor
) -> None:
    recorder = RecordingEngine(engine)
    settings = BatcherSettings(max_batch=64, max_delay_ms=10_000)

    async def body(batcher: Batcher) -> float:
        started = time.monotonic()
        embeds = await batcher.embed(IMAGES[:3])
        assert embeds.shape == (3, engine.info.dims)
        return time.monotonic() - started

    elapsed = run(with_batcher(recorder, preprocess, settings, body))
    assert recorder.batch_sizes == [3]  # the rows still being preprocessed were waited for
    assert elapsed < 5  # and then nothing waited for the 10 s delay


class HeldPreprocess:
    """Real preprocessing that holds one image until released."""

    def __init__(self, preprocess: Preprocessor, held: bytes) -> None:
        self.preprocess, self.held = preprocess, held
        self.release = threading.Event()

    def __call__(self, data: bytes) -> np.ndarray:
        if data == self.held:
            assert self.release.wait(TIMEOUT)
        return self.preprocess(data)


def test_flushes_a_partial_batch_after_max_delay(
    engine: OnnxEngine, preprocess: Preprocessor
) -> None:
    recorder = RecordingEngine(engine)
    held = HeldPreprocess(preprocess, IMAGES[2])
    settings = BatcherSettings(max_batch=64, max_delay_ms=200, preprocess_threads=3)

    async def body(batcher: Batcher) -> float:
        started = time.monotonic()
        first, second, late = batcher.submit(IMAGES[:3])
        await asyncio.gather(first, second)
        elapsed = time.monotonic() - started
        held.release.set()
        assert (await late).shape == (engine.info.dims,)
        return elapsed

    elapsed = run(with_batcher(recorder, held, settings, body))
    assert recorder.batch_sizes == [2, 1]
    assert elapsed >= 0.15  # it waited for the image still being preprocessed, up to the delay


@pytest.mark.parametrize("precision", [None, *Precision], ids=["default", *Precision])
def test_image_alone_equals_image_batched_with_others(
    tiny_export: Path, preprocess: Preprocessor, precision: Precision | None
) -> None:
    engine = OnnxEngine(tiny_export, EngineSettings(precision=precision))
    settings = BatcherSettings(max_batch=8, max_delay_ms=50)

    async def body(batcher: Batcher) -> tuple[np.ndarray, np.ndarray]:
        alone = await batcher.embed(IMAGES[:1])
        together = await batcher.embed(IMAGES[:7])
        return alone[0], together[0]

    alone, together = run(with_batcher(engine.embed, preprocess, settings, body))
    assert np.abs(alone - together).max() <= 1e-6


def test_requests_whose_caller_has_gone_are_not_inferred(
    engine: OnnxEngine, preprocess: Preprocessor
) -> None:
    recorder = RecordingEngine(engine)
    recorder.gate.clear()
    settings = BatcherSettings(max_batch=8, max_delay_ms=1)

    async def body(batcher: Batcher) -> None:
        first = batcher.submit(IMAGES[:1])
        await asyncio.to_thread(recorder.entered.wait, TIMEOUT)  # first batch is in inference
        gone = batcher.submit(IMAGES[1:4])
        kept = batcher.submit(IMAGES[4:5])
        with pytest.raises(TimeoutError):  # a client deadline expiring mid-queue
            await asyncio.wait_for(asyncio.gather(*gone), 0.05)
        assert batcher.stats().queue_depth == 2  # the gone ones freed their slots
        recorder.gate.set()
        await asyncio.gather(*first, *kept)

    run(with_batcher(recorder, preprocess, settings, body))
    assert recorder.batch_sizes == [1, 1]


def test_full_queue_refuses_without_waiting_for_the_work_ahead_and_recovers(
    engine: OnnxEngine, preprocess: Preprocessor
) -> None:
    """The refusal comes while every accepted image is still unanswered, its batch held in
    inference: it did not wait for room (which a held batch never makes)."""
    recorder = RecordingEngine(engine)
    recorder.gate.clear()
    settings = BatcherSettings(max_batch=2, max_delay_ms=1, max_queue=4)

    async def body(batcher: Batcher) -> None:
        accepted = batcher.submit(IMAGES[:4])
        await asyncio.to_thread(recorder.entered.wait, TIMEOUT)  # a first batch is held
        with pytest.raises(OverloadedError, match="capacity"):
            batcher.submit(IMAGES[4:5])
        assert not any(future.done() for future in accepted)
        assert batcher.stats() == BatcherStats(4, 0, 0, 0.0, True)  # no slot taken, no batch run
        recorder.gate.set()
        assert len(await asyncio.gather(*accepted)) == 4
        await until(lambda: batcher.stats().queue_depth == 0)
        assert (await batcher.embed(IMAGES[:4])).shape == (4, engine.info.dims)

    run(with_batcher(recorder, preprocess, settings, body))


def test_a_bad_image_fails_only_its_own_request(
    engine: OnnxEngine, preprocess: Preprocessor
) -> None:
    settings = BatcherSettings(max_batch=8, max_delay_ms=20)

    async def body(batcher: Batcher) -> list[Any]:
        futures = batcher.submit([IMAGES[0], b"not an image", IMAGES[1]])
        return await asyncio.gather(*futures, return_exceptions=True)

    good, bad, other = run(with_batcher(engine.embed, preprocess, settings, body))
    assert isinstance(bad, InvalidImageError)
    assert good.shape == other.shape == (engine.info.dims,)


def test_a_failing_batch_fails_its_callers_and_the_loop_lives_on(
    engine: OnnxEngine, preprocess: Preprocessor
) -> None:
    recorder = RecordingEngine(engine, failures=3)
    settings = BatcherSettings(max_batch=4, max_delay_ms=1, unhealthy_after=3)

    async def body(batcher: Batcher) -> None:
        assert batcher.healthy
        for _ in range(3):
            with pytest.raises(EngineError, match="simulated device failure"):
                await batcher.embed(IMAGES[:1])
        assert not batcher.healthy  # three batches in a row failed
        assert (await batcher.embed(IMAGES[:1])).shape == (1, engine.info.dims)
        assert batcher.healthy  # and it recovers with the engine

    run(with_batcher(recorder, preprocess, settings, body))


def test_preprocessing_overlaps_inference(engine: OnnxEngine, preprocess: Preprocessor) -> None:
    """While one batch is held in inference, later images are decoded and queued."""
    recorder = RecordingEngine(engine)
    recorder.gate.clear()
    decoded: list[int] = []

    def counting_preprocess(data: bytes) -> np.ndarray:
        tensor = preprocess(data)
        decoded.append(1)
        return tensor

    settings = BatcherSettings(max_batch=2, max_delay_ms=1)

    async def body(batcher: Batcher) -> None:
        first = batcher.submit(IMAGES[:2])
        await asyncio.to_thread(recorder.entered.wait, TIMEOUT)
        rest = batcher.submit(IMAGES[2:6])
        await until(lambda: len(decoded) == 6)  # all decoded while inference is blocked
        assert recorder.batch_sizes == []
        recorder.gate.set()
        await asyncio.gather(*first, *rest)

    run(with_batcher(recorder, counting_preprocess, settings, body))
    assert sum(recorder.batch_sizes) == 6


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatcherSettings(max_batch=0)
    with pytest.raises(ValueError, match="max_delay_ms"):
        BatcherSettings(max_delay_ms=-1)
