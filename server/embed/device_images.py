"""The image queue's two stages when JPEGs are decoded where the engine runs
(`--image-decoder nvimgcodec`; `device_decode` says what that covers).

`prepare` runs in the batcher's threads: it reads each image's header (the CPU path's errors
for what is no image or too large), keeps what the device decoder takes as bytes, and
preprocesses everything else on the CPU path. `embed` runs in the inference thread: it decodes
a run's JPEGs in one call, resizes and crops each into its row of the run buffer (pixels the
CPU path prepared are copied into theirs), and embeds the rows where they lie. A JPEG the
device decoder returns no image for is preprocessed on the CPU path there, so it gets the CPU
path's pixels or its error, and only that input fails.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from prometheus_client import Counter

from lookalike.server.embed.device_decode import DeviceDecoder
from lookalike.server.embed.onnx_engine import OnnxEngine
from lookalike.server.embed.preprocess import ImageInput
from lookalike.server.errors import LookalikeError

__all__ = ["DeviceImages"]

Prepared = bytes | np.ndarray  # a JPEG for the device decoder, or pixels from the CPU path


class DeviceImages:
    def __init__(
        self,
        engine: OnnxEngine,
        decoder: DeviceDecoder,
        cpu_path: Callable[[ImageInput], np.ndarray],
        *,
        rows: int,
        decoded: Counter,
    ) -> None:
        """`rows`: inputs per run (the engine's `run_rows` on a GPU); `decoded` counts images
        by the decoder that took them (`Metrics.decoded_images`)."""
        self._engine, self._decoder = engine, decoder
        self._on_device, self._on_cpu = decoded.labels("nvimgcodec"), decoded.labels("pillow")
        self._cpu_path = cpu_path
        self._rows = decoder.new_rows(rows, engine.inputs.shape[0])

    def prepare(self, data: ImageInput) -> Prepared:
        """A JPEG the device decoder takes stays bytes; anything else becomes pixels here."""
        if isinstance(data, bytes) and self._decoder.takes(data):
            return data
        pixels = self._cpu_path(data)
        self._on_cpu.inc()
        return pixels

    def embed(self, batch: list[Prepared]) -> list[np.ndarray | Exception]:
        """One embedding per input, or the error of that input alone."""
        rows = self._rows.shape()[0]
        results: list[np.ndarray | Exception] = []
        for start in range(0, len(batch), rows):
            results += self._embed_run(batch[start : start + rows])
        return results

    def _embed_run(self, run: list[Prepared]) -> list[np.ndarray | Exception]:
        jpegs = {index: item for index, item in enumerate(run) if isinstance(item, bytes)}
        decoded = dict(zip(jpegs, self._decoder.decode(list(jpegs.values())), strict=True))
        errors: dict[int, Exception] = {}
        for index, item in enumerate(run):
            if isinstance(item, np.ndarray):
                self._decoder.fill(self._rows, index, item)
                continue
            image = decoded[index]
            if image is not None and self._decoder.fill(self._rows, index, image):
                self._on_device.inc()
                continue
            try:  # the device decoder could not: the CPU path's pixels, or its error
                self._decoder.fill(self._rows, index, self._cpu_path(item))
                self._on_cpu.inc()
            except LookalikeError as exc:
                errors[index] = exc
        embeds = self._engine.embed_rows(self._rows, len(run))
        return [errors.get(index, embedding) for index, embedding in enumerate(embeds)]
