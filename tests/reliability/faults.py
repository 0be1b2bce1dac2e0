"""Engines with faults injected, built through the server's engine factory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from lookalike.server.embed.onnx_engine import EngineSettings, OnnxEngine
from lookalike.server.errors import EngineError


class FaultyEngine(OnnxEngine):
    """The real engine, which raises while `failing` is set and can be slowed down."""

    def __init__(self, model_dir: Path, settings: EngineSettings) -> None:
        super().__init__(model_dir, settings)
        self.failing = threading.Event()
        self.delay_s = 0.0
        self.rows_inferred = 0

    def embed(self, batch: np.ndarray) -> np.ndarray:
        self.rows_inferred += len(batch)
        if self.failing.is_set():
            raise EngineError("injected device fault")
        time.sleep(self.delay_s)
        return super().embed(batch)


class EngineHandle:
    """Keeps the engine the server built, so a test can flip its faults."""

    engine: FaultyEngine | None = None

    def __call__(self, model_dir: Path, settings: EngineSettings) -> FaultyEngine:
        engine = FaultyEngine(model_dir, settings)
        if settings.graph == "image":  # the text tower, when loaded, runs fault-free
            self.engine = engine
        return engine
