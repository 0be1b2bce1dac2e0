"""Engines with faults injected, built through the server's engine factory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from lookalike.server.embed.onnx_engine import EngineSettings, OnnxEngine
from lookalike.server.errors import EngineError

HOLD_LIMIT_S = 60  # a batch held longer fails: a test that never releases ends, and says why


class FaultyEngine(OnnxEngine):
    """The real engine, which raises while `failing` is set, can be slowed down, and can hold
    every batch until released (`hold`, then `holding` is set while a batch waits)."""

    def __init__(self, model_dir: Path, settings: EngineSettings) -> None:
        super().__init__(model_dir, settings)
        self.failing = threading.Event()
        self.delay_s = 0.0
        self.rows_inferred = 0
        self.holding = threading.Event()
        self._released = threading.Event()
        self._released.set()

    def hold(self) -> None:
        """From now on, each batch waits in inference until `release`."""
        self.holding.clear()
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def embed(self, batch: np.ndarray) -> np.ndarray:
        self.rows_inferred += len(batch)
        if not self._released.is_set():
            self.holding.set()
            if not self._released.wait(HOLD_LIMIT_S):
                raise EngineError(f"held for {HOLD_LIMIT_S} s and never released")
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
