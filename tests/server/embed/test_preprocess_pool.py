"""Preprocessing in worker processes: the pixels and the errors of the calling process, and
no image lost when a worker dies."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as photographs

from lookalike.export.manifest import Manifest
from lookalike.server.embed.preprocess import Crop, PreprocessMode, Preprocessor, SourceImage
from lookalike.server.embed.preprocess_pool import ProcessPreprocessor
from lookalike.server.errors import EngineError, InvalidImageError
from lookalike.server.regions import Region
from tests.server.images import encode, jpeg, natural

PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket")
POISON = b"\xff\xd8 this file crashes the decoder"


def photos() -> list[bytes]:
    return [
        encode(Image.fromarray(getattr(photographs, name)()).convert("RGB"), "JPEG", quality=90)
        for name in PHOTOGRAPHS
    ]


def refused() -> list[bytes]:
    """Each refused by the preprocessor, for its own reason."""
    return [
        b"",
        np.random.default_rng(1).bytes(10_000),
        jpeg(400, 300)[:1500],  # truncated
        encode(Image.new("1", (30000, 30000)), "PNG"),  # decompression bomb
        encode(Image.new("RGB", (100000, 1)), "PNG"),  # aspect ratio
    ]


def outcome(preprocess: Preprocessor | ProcessPreprocessor, data: bytes) -> object:
    try:
        return preprocess(data)
    except Exception as error:
        return type(error), str(error)


@pytest.fixture(scope="module", params=list(PreprocessMode))
def pair(
    request: pytest.FixtureRequest, tiny_manifest: Manifest
) -> Iterator[tuple[Preprocessor, ProcessPreprocessor]]:
    local = Preprocessor.for_package(tiny_manifest, mode=request.param)
    pool = ProcessPreprocessor(local, processes=2)
    yield local, pool
    pool.close()


def test_workers_make_the_pixels_and_the_errors_of_this_process(
    pair: tuple[Preprocessor, ProcessPreprocessor],
) -> None:
    local, pool = pair
    payloads = [*photos(), encode(natural(90, 70).convert("CMYK"), "JPEG"), *refused()]
    for data in payloads:
        here, there = outcome(local, data), outcome(pool, data)
        if isinstance(here, np.ndarray):
            assert isinstance(there, np.ndarray)
            assert there.dtype == here.dtype
            np.testing.assert_array_equal(there, here)
        else:
            assert there == here
    errors = [outcome(pool, data) for data in refused()]
    assert all(isinstance(error, tuple) for error in errors), errors
    assert len({message for _, message in errors}) == len(errors)  # each its own reason


def test_a_region_is_cut_in_this_process_from_one_decode(
    pair: tuple[Preprocessor, ProcessPreprocessor],
) -> None:
    local, pool = pair
    data = photos()[1]
    box = Region(0.1, 0.2, 0.6, 0.9)
    source = SourceImage(data)
    np.testing.assert_array_equal(pool(Crop(source, box)), local(Crop(SourceImage(data), box)))
    assert source._decoded is not None  # decoded here, where its other regions can use it


def test_a_killed_worker_costs_no_image(tiny_manifest: Manifest) -> None:
    local = Preprocessor.for_package(tiny_manifest)
    payloads = [jpeg(640, 480, seed=seed) for seed in range(8)] * 12
    expected = [local(data) for data in payloads]
    others = set(multiprocessing.active_children())
    pool = ProcessPreprocessor(local, processes=2)
    try:
        workers = [w for w in multiprocessing.active_children() if w not in others]
        assert len(workers) == 2
        with ThreadPoolExecutor(6) as threads:
            results = [threads.submit(pool, data) for data in payloads]
            while sum(result.done() for result in results) < 10:
                time.sleep(0.005)
            victim = workers[0]
            os.kill(victim.pid, signal.SIGKILL)
            victim.join(10)
            assert sum(not result.done() for result in results) > 0  # killed mid-run
        assert victim.exitcode == -signal.SIGKILL
        assert pool.restarts == 1
        for got, want in zip(results, expected, strict=True):
            np.testing.assert_array_equal(got.result(), want)
    finally:
        pool.close()


class CrashingPreprocessor(Preprocessor):
    """A decoder with a crash in it: the process dies on one file."""

    def __call__(self, data):  # type: ignore[no-untyped-def]
        if data == POISON:
            os._exit(139)
        return super().__call__(data)


def test_an_image_its_worker_dies_on_twice_is_refused_and_the_next_is_served(
    tiny_manifest: Manifest,
) -> None:
    local = Preprocessor.for_package(tiny_manifest)
    crashing = CrashingPreprocessor(local.spec, layout=local.layout, mode=local.mode)
    pool = ProcessPreprocessor(crashing, processes=2)
    try:
        with pytest.raises(InvalidImageError, match="died twice on this image"):
            pool(POISON)
        assert pool.restarts == 2
        good = jpeg(320, 240)
        np.testing.assert_array_equal(pool(good), local(good))
    finally:
        pool.close()


class UnpicklablePreprocessor(Preprocessor):
    """One that cannot reach its workers: they die before they are ready."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_fail_to_start, ())


def _fail_to_start() -> None:
    raise SystemExit(3)


def test_workers_that_do_not_start_are_said_and_nothing_is_left_behind(
    tiny_manifest: Manifest,
) -> None:
    local = Preprocessor.for_package(tiny_manifest)
    broken = UnpicklablePreprocessor(local.spec, layout=local.layout, mode=local.mode)
    others = set(multiprocessing.active_children())
    segments = set(Path("/dev/shm").glob("psm_*"))
    with pytest.raises(EngineError, match="did not start"):
        ProcessPreprocessor(broken, processes=2)
    assert [w for w in multiprocessing.active_children() if w not in others] == []
    assert set(Path("/dev/shm").glob("psm_*")) == segments  # its shared memory freed
