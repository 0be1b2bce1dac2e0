"""What the rest of the server needs of a model: the `Engine` interface and `ModelInfo`.

One engine runs one graph of an export package (its role: `image` or `text`);
`onnx_engine.OnnxEngine` is the implementation, its inputs chosen per role. The core,
the service and the wiring see only this interface, so a test can hand them a fake.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from lookalike.export.manifest import ModelIdentity, ModelSource, Precision, ScoreScale

__all__ = ["Engine", "ModelInfo"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """The model an engine runs, as callers and operators see it."""

    model_id: str  # hub id, local path, or random-init preset name
    source_kind: str  # "hub", "local" or "random-init"
    revision: str | None  # resolved hub commit, when known
    random_weights: bool
    role: str  # the graph's role in the package: "image" (or "text")
    dims: int
    precision: Precision
    providers: tuple[str, ...]  # what the runtime really got, best first
    threads: int
    per_image: bool  # runs one input per run because batching would change results
    run_rows: int | None = None  # inputs per run, a short batch padded; None: as given
    passed_over: str = ""  # a better variant the export rejected, and why ("": none)
    family: str = "clip"
    manifest_sha256: str = ""  # of the package's manifest.json
    scores: ScoreScale | None = None  # the family's calibrated probability, where it has one

    @property
    def identity(self) -> ModelIdentity:
        source = ModelSource(kind=self.source_kind, id=self.model_id, revision=self.revision)
        return ModelIdentity.of(
            source, self.dims, family=self.family, manifest_sha256=self.manifest_sha256
        )


class Engine(Protocol):
    """Embeds batches of one graph's inputs into unit vectors. Not thread-safe: one caller."""

    @property
    def info(self) -> ModelInfo: ...

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """A batch of model inputs -> float32[B, D], rows of unit norm; EngineError on failure."""
        ...

    def warm_up(self, batch_size: int = 1) -> None:
        """Run once before taking traffic (the first run allocates and tunes)."""
        ...

    def self_test(self) -> None:
        """Raise EngineError unless a known input embeds to a finite unit vector."""
        ...

    def close(self) -> None: ...
