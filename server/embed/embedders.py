"""What embeds queries and items: the image engine behind its batch queue, and the text tower
behind its own, loaded from a model package.

`Core` needs only the `Embedder` interface, which a `Batcher` in this process provides and so
does a Ray Serve embedding deployment reached through its handle (`cluster.embedding`).
`LocalEmbedders` loads both towers as the server (or an embedding replica) runs them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from lookalike.export.manifest import Manifest, PixelLayout
from lookalike.server.embed.batcher import Batcher, BatcherStats, Embed
from lookalike.server.embed.device_decode import DeviceDecoder
from lookalike.server.embed.device_images import DeviceImages
from lookalike.server.embed.engine import Engine, ModelInfo
from lookalike.server.embed.onnx_engine import EngineSettings, OnnxEngine, read_manifest
from lookalike.server.embed.preprocess import ImageInput, Preprocessor
from lookalike.server.embed.preprocess_pool import ProcessPreprocessor
from lookalike.server.embed.settings import EmbedSettings, ImageDecoder
from lookalike.server.embed.tokenizer import TextTokenizer
from lookalike.server.errors import ModelLoadError
from lookalike.server.metrics import Metrics

__all__ = ["Embedder", "TextSide", "LocalEmbedders", "EngineFactory"]

Input = TypeVar("Input", contravariant=True)
EngineFactory = Callable[[Path, EngineSettings], Engine]


class Embedder(Protocol[Input]):
    """A queue that turns inputs (image bytes, texts) into unit vectors, in batches."""

    def has_room(self, count: int) -> bool:
        """Whether `count` more inputs would be admitted now."""
        ...

    def submit(self, inputs: Sequence[Input]) -> list[asyncio.Future[np.ndarray]]:
        """Admit all inputs or none (`OverloadedError`); one future per input, in order."""
        ...

    async def embed(self, inputs: Sequence[Input]) -> np.ndarray:
        """float32[N, D]; the first failed input's error if any failed."""
        ...

    def stats(self) -> BatcherStats: ...


@dataclasses.dataclass(frozen=True)
class TextSide:
    """The text tower: its model and its own queue."""

    model: ModelInfo
    embedder: Embedder[str]


class LocalEmbedders:
    """Both towers of a model package in this process, loaded, warmed up and queued as the
    settings say. `close` releases whatever `load` got to, even a failed `load`."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self._image: Batcher[ImageInput] | None = None
        self.text: TextSide | None = None
        self.no_text_reason = "this server has no text tower"
        self._text_engine: Engine | None = None
        self._text_batcher: Batcher[str] | None = None
        self._processes: ProcessPreprocessor | None = None

    @property
    def model(self) -> ModelInfo:
        assert self.engine is not None, "not loaded"
        return self.engine.info

    @property
    def image(self) -> Batcher[ImageInput]:
        assert self._image is not None, "not loaded"
        return self._image

    async def load(
        self,
        settings: EmbedSettings,
        metrics: Metrics,
        engine_factory: EngineFactory,
        on_health_change: Callable[[bool], None] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        manifest = read_manifest(settings.model_dir)
        self.engine = await loop.run_in_executor(
            None, engine_factory, settings.model_dir, settings.engine
        )
        await loop.run_in_executor(None, self.engine.warm_up, settings.batcher.max_batch)
        local = Preprocessor.for_package(
            manifest, mode=settings.preprocess_mode, limits=settings.image_limits
        )
        batcher = settings.batcher
        if settings.preprocess_processes:
            # one thread waits on each image in a process: enough to keep every process busy
            threads = max(batcher.preprocess_threads, settings.preprocess_processes)
            batcher = dataclasses.replace(batcher, preprocess_threads=threads)
            self._processes = await loop.run_in_executor(
                None, ProcessPreprocessor, local, settings.preprocess_processes
            )
        cpu_path = self._processes or local
        embed: Embed = self.engine.embed
        prepare: Callable[[ImageInput], Any] = cpu_path
        collate: Callable[[list[Any]], Any] = np.stack
        if settings.image_decoder is ImageDecoder.NVIMGCODEC:
            images = await loop.run_in_executor(
                None, _device_images, self.engine, manifest, settings, cpu_path, metrics
            )
            embed, prepare, collate = images.embed, images.prepare, list
        self._image = Batcher(
            embed,
            prepare,
            batcher,
            collate=collate,
            on_health_change=on_health_change,
            metrics=metrics,
        )
        await self._image.start()
        self.text = await self._load_text(settings, manifest, metrics, engine_factory)
        self.no_text_reason = _no_text_reason(settings, manifest)

    async def _load_text(
        self,
        settings: EmbedSettings,
        manifest: Manifest,
        metrics: Metrics,
        engine_factory: EngineFactory,
    ) -> TextSide | None:
        """The text tower and its own queue, unless it is off or the package has none."""
        graph = manifest.graphs.get("text")
        if not settings.text or graph is None or graph.tokenizer is None:
            return None
        loop = asyncio.get_running_loop()
        # Texts are queried one at a time far more often than in bulk: one session (no second
        # copy of the weights, about 85 MB for ViT-B/32's text tower) serves them one after
        # another where int8 batching would change results (benchmarks/README.md).
        text_engine = dataclasses.replace(settings.engine, graph="text", parallel_per_input=False)
        engine = await loop.run_in_executor(None, engine_factory, settings.model_dir, text_engine)
        self._text_engine = engine
        await loop.run_in_executor(None, engine.warm_up, settings.text_batcher.max_batch)
        tokenizer = TextTokenizer(settings.model_dir, graph.tokenizer)
        batcher: Batcher[str] = Batcher(
            engine.embed,
            tokenizer,
            settings.text_batcher,
            metrics=metrics,
            queue="text",
            stages=("tokenize", "text_inference"),
        )
        self._text_batcher = batcher
        await batcher.start()
        return TextSide(engine.info, batcher)

    async def close(self) -> None:
        for batcher in (self._image, self._text_batcher):
            if batcher is not None:
                await batcher.close()
        if self._processes is not None:
            await asyncio.to_thread(self._processes.close)
        for engine in (self.engine, self._text_engine):
            if engine is not None:
                engine.close()


def _device_images(
    engine: Engine,
    manifest: Manifest,
    settings: EmbedSettings,
    cpu_path: Callable[[ImageInput], np.ndarray],
    metrics: Metrics,
) -> DeviceImages:
    """JPEGs decoded where the engine runs, everything else on `cpu_path`."""
    if not isinstance(engine, OnnxEngine):
        raise ModelLoadError("--image-decoder nvimgcodec needs the ONNX Runtime engine")
    if PixelLayout.of(manifest.graphs["image"]) is not PixelLayout.UINT8_NHWC:
        raise ModelLoadError(
            "--image-decoder nvimgcodec needs a package whose image graph takes uint8 pixels "
            "(exported by this Lookalike without --image-input float32); re-export it"
        )
    on_gpu = engine.info.providers[0] != "CPUExecutionProvider"
    decoder = DeviceDecoder(manifest.preprocess, settings.image_limits, on_gpu=on_gpu)
    rows = engine.info.run_rows or settings.batcher.max_batch
    return DeviceImages(engine, decoder, cpu_path, rows=rows, decoded=metrics.decoded_images)


def _no_text_reason(settings: EmbedSettings, manifest: Manifest) -> str:
    """What a text request is told by a server without a text tower."""
    if not settings.text:
        return "this server runs without its text tower (--no-text); restart it without"
    source = manifest.source
    origin = f"--random-init {source.id}" if source.random_weights else f"--model {source.id}"
    return (
        f"the model package {settings.model_dir} has no text tower (exported with "
        "--no-text, or by a Lookalike before text search); re-export it to search by "
        f"text: lookalike-export {origin} --output {settings.model_dir} --overwrite"
    )
