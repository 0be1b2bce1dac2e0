"""The one owner of an ONNX Runtime session: providers, threads, variant choice, IO binding."""

from __future__ import annotations

import dataclasses
import enum
import logging
from pathlib import Path

import numpy as np

from export.errors import RuntimeMissingError
from export.manifest import Manifest, ManifestError, Precision, Variant, sha256_file
from export.runtime import import_onnxruntime
from server.errors import EngineError, ModelLoadError

__all__ = ["Provider", "EngineSettings", "Engine"]

log = logging.getLogger(__name__)


class Provider(str, enum.Enum):
    AUTO = "auto"  # CUDA when this onnxruntime build has it, else CPU
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


ORT_PROVIDERS = {
    Provider.CPU: ["CPUExecutionProvider"],
    Provider.CUDA: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    Provider.TENSORRT: [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ],
}
# Preferred variant per device when none is asked for: the fastest that keeps parity.
PRECISION_PREFERENCE = {
    "cpu": (Precision.INT8, Precision.FP32, Precision.FP16),
    "gpu": (Precision.FP16, Precision.FP32, Precision.INT8),
}
NORM_TOLERANCE = 1e-2


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineSettings:
    provider: Provider = Provider.AUTO
    precision: Precision | None = None  # None: fp16 on GPU, int8 on CPU
    intra_op_threads: int = 0  # 0: ONNX Runtime picks (all physical cores)
    inter_op_threads: int = 1
    graph: str = "image"
    io_binding: bool | None = None  # None: on for GPU providers (one host-to-device copy)


class Engine:
    """Loads one graph of an export package and embeds preprocessed batches with it."""

    def __init__(self, model_dir: Path, settings: EngineSettings = EngineSettings()) -> None:
        try:
            self._ort = import_onnxruntime()
        except RuntimeMissingError as exc:
            raise ModelLoadError(str(exc)) from exc
        try:
            self.manifest = Manifest.load(model_dir)
        except ManifestError as exc:
            raise ModelLoadError(str(exc)) from exc
        graph = self.manifest.graphs.get(settings.graph)
        if graph is None:
            have = ", ".join(self.manifest.graphs)
            raise ModelLoadError(f"{model_dir} has no {settings.graph!r} graph (has: {have})")
        self.input_name, self.output_name, self.dim = graph.input, graph.output, graph.output_dim
        self.image_size = int(graph.input_shape[-1])
        self.providers = self._choose_providers(settings.provider)
        on_gpu = self.providers[0] != "CPUExecutionProvider"
        self.variant = self._choose_variant(graph.variants, settings.precision, on_gpu)
        path = model_dir / self.variant.file
        _verify_file(path, self.variant)
        if self.manifest.source.random_weights:
            log.warning(
                "RANDOM WEIGHTS: %s was exported with --random-init %s; its embeddings carry "
                "no meaning (fine for tests and benchmarks, useless for search)",
                model_dir,
                self.manifest.source.id,
            )
        self._session = self._ort.InferenceSession(
            str(path), sess_options=self._session_options(settings), providers=self.providers
        )
        self.providers = self._session.get_providers()  # what the session really got
        self._use_io_binding = (
            self.providers[0] != "CPUExecutionProvider"
            if settings.io_binding is None
            else settings.io_binding
        )
        log.info(
            "engine: %s %s on %s, %d-d embeddings",
            self.manifest.source.id,
            self.variant.precision.value,
            ", ".join(self.providers),
            self.dim,
        )

    @property
    def precision(self) -> Precision:
        return self.variant.precision

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """float32[B, 3, H, W] -> float32[B, D], rows of unit norm."""
        if batch.ndim != 4 or batch.shape[1:] != (3, self.image_size, self.image_size):
            raise EngineError(
                f"expected a batch of shape [B, 3, {self.image_size}, {self.image_size}], "
                f"got {list(batch.shape)}"
            )
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        try:
            embeds = self._run(batch)
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise EngineError(f"inference failed: {exc}") from exc
        norms = np.linalg.norm(embeds, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms < NORM_TOLERANCE):
            raise EngineError("inference produced non-finite or zero embeddings")
        return (embeds / norms).astype(np.float32, copy=False)

    def warm_up(self, batch_size: int = 1) -> None:
        """The first run allocates and tunes; do it before taking traffic."""
        self.embed(self._probe(batch_size))

    def self_test(self) -> None:
        """Raise EngineError unless a known input embeds to a finite unit vector."""
        embeds = self.embed(self._probe(1))
        if embeds.shape != (1, self.dim) or abs(float(np.linalg.norm(embeds)) - 1) > 1e-3:
            raise EngineError(f"self-test produced an embedding of shape {embeds.shape}")

    def _probe(self, batch_size: int) -> np.ndarray:
        size = self.image_size
        ramp = np.linspace(-1.5, 1.5, 3 * size * size, dtype=np.float32)
        return np.broadcast_to(ramp.reshape(1, 3, size, size), (batch_size, 3, size, size))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if not self._use_io_binding:
            return self._session.run([self.output_name], {self.input_name: batch})[0]
        binding = self._session.io_binding()
        binding.bind_cpu_input(self.input_name, batch)  # one host-to-device copy
        binding.bind_output(self.output_name)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _choose_providers(self, provider: Provider) -> list[str]:
        available = self._ort.get_available_providers()
        if provider is Provider.AUTO:
            provider = Provider.CUDA if "CUDAExecutionProvider" in available else Provider.CPU
        wanted = ORT_PROVIDERS[provider]
        if wanted[0] not in available:
            raise ModelLoadError(
                f"provider {provider.value!r} needs {wanted[0]}, which this onnxruntime build "
                f"lacks (it has {', '.join(available)}); for CUDA install 'lookalike[gpu]' "
                "instead of 'lookalike[cpu]'"
            )
        return [name for name in wanted if name in available]

    @staticmethod
    def _choose_variant(
        variants: dict[Precision, Variant], asked: Precision | None, on_gpu: bool
    ) -> Variant:
        if asked is not None:
            if asked not in variants:
                have = ", ".join(p.value for p in variants)
                raise ModelLoadError(
                    f"the export has no {asked.value} variant (has: {have}); "
                    f"re-export with --precision {asked.value}"
                )
            return variants[asked]
        preference = PRECISION_PREFERENCE["gpu" if on_gpu else "cpu"]
        for precision in preference:
            if precision in variants:
                return variants[precision]
        raise ModelLoadError("the export lists no variants")

    def _session_options(self, settings: EngineSettings):  # -> ort.SessionOptions
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = settings.inter_op_threads
        options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return options


def _verify_file(path: Path, variant: Variant) -> None:
    if not path.is_file():
        raise ModelLoadError(f"model file {path} is missing")
    actual = sha256_file(path)
    if actual != variant.sha256:
        raise ModelLoadError(
            f"model file {path} is corrupt or was replaced: sha256 {actual[:16]}... does not "
            f"match the manifest's {variant.sha256[:16]}...; re-export the model"
        )
