"""A fake engine and synthetic vectors: the core, repository and store tested without a model.

Nothing here imports grpc, protobuf, torch or ONNX Runtime: these tests run in a serving
install, in seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from lookalike.export.manifest import Precision
from lookalike.server.core import Core
from lookalike.server.embed.batcher import Batcher, BatcherSettings
from lookalike.server.embed.engine import ModelInfo
from lookalike.server.embed.preprocess import Crop, ImageInput
from lookalike.server.errors import InvalidImageError
from lookalike.server.index.local_repository import LocalRepository
from lookalike.server.index.settings import IndexSettings
from lookalike.server.metrics import Metrics
from lookalike.server.request_types import RequestLimits

DIMS = 16
TIMEOUT = 30


def unit_vectors(count: int, seed: int = 0, dims: int = DIMS) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dims)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def image_vector(data: bytes, dims: int = DIMS) -> np.ndarray:
    """The fake model's embedding of an "image": a unit vector seeded by its bytes."""
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    return unit_vectors(1, seed, dims)[0]


class FakeEngine:
    """Satisfies the `Engine` interface; its inputs are already the vectors to normalise.

    `preprocess` turns bytes into that input (bytes starting with b"bad" are not an image);
    `gate` can hold inference, `preprocessed` counts the images decoded.
    """

    def __init__(self, dims: int = DIMS) -> None:
        self.info = ModelInfo(
            model_id="fake",
            source_kind="random-init",
            revision=None,
            random_weights=True,
            role="image",
            dims=dims,
            precision=Precision.FP32,
            providers=("CPUExecutionProvider",),
            threads=1,
            per_image=False,
        )
        self.gate = threading.Event()
        self.gate.set()
        self.preprocessed = 0
        self.batch_sizes: list[int] = []

    def preprocess(self, data: ImageInput) -> np.ndarray:
        self.preprocessed += 1
        if isinstance(data, Crop):  # a region: its own vector, from the image and the box
            data = data.source.data + data.region.to_json().encode()
        if data.startswith(b"bad"):
            raise InvalidImageError("not an image the fake model can read")
        return image_vector(data, self.info.dims)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        assert self.gate.wait(TIMEOUT), "inference held too long"
        self.batch_sizes.append(len(batch))
        return (batch / np.linalg.norm(batch, axis=1, keepdims=True)).astype(np.float32)

    def warm_up(self, batch_size: int = 1) -> None:
        self.embed(unit_vectors(batch_size, dims=self.info.dims))

    def self_test(self) -> None:
        self.warm_up()

    def close(self) -> None:
        pass


@contextlib.asynccontextmanager
async def open_core(
    data_dir: Path,
    *,
    engine: FakeEngine | None = None,
    batcher: BatcherSettings | None = None,
    index: IndexSettings | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Core]:
    """A core over a fake engine, a real batcher and a real repository in `data_dir`."""
    engine = engine or FakeEngine()
    metrics = metrics or Metrics.create()
    batching = Batcher(
        engine.embed,
        engine.preprocess,
        batcher or BatcherSettings(max_delay_ms=1, preprocess_threads=2),
        metrics=metrics,
    )
    repository = LocalRepository(data_dir, engine.info.identity, index or IndexSettings())
    await batching.start()
    await repository.open()
    try:
        yield Core(
            engine.info,
            batching,
            repository,
            metrics,
            limits=RequestLimits(max_images_per_request=8),
            preprocess_mode="fast",
            thumbnails=False,  # the fake engine's images are not images Pillow reads
        )
    finally:
        await batching.close()
        await repository.close()
