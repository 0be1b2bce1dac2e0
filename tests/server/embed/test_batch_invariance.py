"""Same image, same vector: an embedding never depends on the other images in its batch.

Checked on the benchmark-size model (ViT-B/32 shapes) for every variant, at each batch size
on either side of every power of two up to the server's default max batch (where kernels
change their blocking), and through a server under concurrent load.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from lookalike.export.manifest import Precision
from lookalike.server.embed.batcher import BatcherSettings
from lookalike.server.embed.onnx_engine import EngineSettings, OnnxEngine
from lookalike.v1 import lookalike_pb2 as pb
from lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from tests.pixels import random_images
from tests.server.images import jpeg
from tests.server.serving import config_for, running_server

MAX_BATCH = BatcherSettings().max_batch
POWERS = [2**exponent for exponent in range(MAX_BATCH.bit_length())]  # 1, 2, 4, ..., 32
# 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32: each power of two and its neighbours
BATCH_SIZES = sorted({n for p in POWERS for n in (p - 1, p, p + 1) if 1 <= n <= MAX_BATCH})
TOLERANCE = 1e-6  # max abs difference per component


@pytest.mark.parametrize("precision", list(Precision))
def test_benchmark_size_model_embeds_alike_in_every_batch_size(
    benchmark_export: Path, precision: Precision
) -> None:
    engine = OnnxEngine(benchmark_export, EngineSettings(precision=precision))
    pixels = random_images(MAX_BATCH, engine.inputs.size, seed=7)  # contrasts differ
    alone = np.concatenate([engine.embed(image[None]) for image in pixels])
    worst = {
        size: float(np.abs(engine.embed(pixels[:size]) - alone[:size]).max())
        for size in BATCH_SIZES
    }
    assert max(worst.values()) <= TOLERANCE, worst


def test_server_under_concurrent_load_answers_each_image_as_if_alone(
    tiny_export: Path, tmp_path: Path
) -> None:
    images = [jpeg(120 + 16 * i, 100 + 8 * (i % 5), seed=i) for i in range(24)]
    config = config_for(tiny_export, tmp_path / "data", batcher=BatcherSettings(max_delay_ms=20))
    with running_server(config) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ImageSearchStub(channel)

        def embed(batch: list[bytes]) -> np.ndarray:
            response = stub.Embed(pb.EmbedRequest(images=batch), timeout=60)
            return np.array([list(e.values) for e in response.embeddings])

        alone = np.concatenate([embed([image]) for image in images])
        before = stub.Stats(pb.StatsRequest())
        order = np.random.default_rng(0).permutation(len(images) * 4) % len(images)
        requests = [order[i : i + 3] for i in range(0, len(order), 3)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda r: embed([images[i] for i in r]), requests))
        after = stub.Stats(pb.StatsRequest())
    batches = after.batches - before.batches
    images_inferred = (
        after.mean_batch_size * after.batches - before.mean_batch_size * before.batches
    )
    assert images_inferred / batches >= 4, "the concurrent requests were not batched together"
    for request, result in zip(requests, results, strict=True):
        assert np.abs(result - alone[request]).max() <= TOLERANCE
