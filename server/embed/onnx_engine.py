"""The `Engine` on ONNX Runtime: providers, threads, variant choice, IO binding.

One class serves every graph role; what differs between roles (the input's shape and type,
and probe inputs for the load-time checks) is a `GraphInputs`, looked up by the role.

Same input, same output: an image's embedding never depends on the other images in its batch.
Dynamic int8 graphs quantize activations with one scale per input tensor, so batching changes
every image's result a little. At load the engine runs probe images alone and as one batch;
where the two differ it runs such graphs one image per run: a lone image on the session with
all threads, several images in parallel on a one-thread session (the two agree bit for bit,
which the same check confirms). benchmarks/README.md gives the throughput cost.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import enum
import io
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from lookalike.export.manifest import (
    MANIFEST_FILE,
    Graph,
    Manifest,
    ManifestError,
    PixelLayout,
    Precision,
    TokenizerSpec,
    Variant,
    sha256_file,
)
from lookalike.export.runtime import RuntimeMissingError, import_onnxruntime
from lookalike.server.embed.engine import ModelInfo
from lookalike.server.embed.host_memory import pinned_zeros
from lookalike.server.errors import EngineError, ModelLoadError

__all__ = [
    "Provider",
    "EngineSettings",
    "OnnxEngine",
    "GraphInputs",
    "ImageInputs",
    "TokenInputs",
    "read_manifest",
    "choose_variant",
    "physical_cores",
    "require_provider",
]

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
# CUDA provider options: a heuristic (not a timed search) picks the patch embedding's
# convolution algorithm, so every session on this GPU computes the same numbers.
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC"}
NORM_TOLERANCE = 1e-2
INVARIANCE_PROBES = 8  # varied images run alone and as one batch at load
INVARIANCE_TOLERANCE = 1e-6  # max abs difference per component that counts as "the same"
# GPU libraries pick their kernels by batch size, so on a GPU every run has this many inputs:
# one fixed size keeps an input's embedding independent of its batch, and the same on every
# path (server, Ray worker). benchmarks/README.md (GPU) measured what it costs.
GPU_RUN_ROWS = 64


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineSettings:
    provider: Provider = Provider.AUTO
    precision: Precision | None = None  # None: fp16 on GPU, int8 on CPU
    intra_op_threads: int = 0  # 0: all physical cores this process may use
    inter_op_threads: int = 1
    graph: str = "image"  # the package graph's role
    io_binding: bool | None = None  # None: on for GPU providers (one host-to-device copy)
    # Where batching changes results and inputs run one per run: several at once on a second,
    # one-thread session (faster; a second copy of the weights), or one after another on the
    # main session.
    parallel_per_input: bool = True
    # Inputs per run, a short batch padded; None: GPU_RUN_ROWS on a GPU, as given on the CPU.
    run_rows: int | None = None

    def __post_init__(self) -> None:
        if self.run_rows is not None and self.run_rows < 1:
            raise ValueError("run_rows must be at least 1")


class GraphInputs(Protocol):
    """What one graph role takes: checks a batch, and makes inputs for the load-time probes."""

    @property
    def shape(self) -> tuple[int, ...]:
        """One input's shape, without the batch axis."""
        ...

    def check(self, batch: np.ndarray) -> np.ndarray:
        """The batch as the graph takes it (contiguous, right dtype); EngineError if malformed."""
        ...

    def fixed(self, batch_size: int) -> np.ndarray:
        """The same known input, `batch_size` times (warm-up and self-test)."""
        ...

    def varied(self, count: int) -> np.ndarray:
        """`count` different inputs, deterministic (the batch-invariance check at load)."""
        ...


@dataclasses.dataclass(frozen=True)
class ImageInputs:
    """The image graph's input: uint8[B, S, S, 3] pixels, or float32[B, 3, S, S] normalised
    pixels for a package exported before format 4 (`layout`)."""

    size: int
    layout: PixelLayout

    @classmethod
    def of(cls, graph: Graph) -> ImageInputs:
        return cls(int(graph.input_shape[2]), PixelLayout.of(graph))  # S in either layout

    @property
    def shape(self) -> tuple[int, ...]:
        return self.layout.image_shape(self.size)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.layout.value)

    def check(self, batch: np.ndarray) -> np.ndarray:
        """Pixels of this layout; uint8 ones must be uint8 (a float is no pixel value)."""
        uint8 = self.layout is PixelLayout.UINT8_NHWC
        if batch.ndim != 4 or batch.shape[1:] != self.shape or (uint8 and batch.dtype != np.uint8):
            raise EngineError(
                f"expected a batch of {self.dtype.name}[B, "
                f"{', '.join(map(str, self.shape))}], got {batch.dtype.name}{list(batch.shape)}"
            )
        return np.ascontiguousarray(batch, dtype=self.dtype)

    def fixed(self, batch_size: int) -> np.ndarray:
        count = int(np.prod(self.shape))
        if self.layout is PixelLayout.UINT8_NHWC:
            ramp: np.ndarray = np.arange(count) % 256
        else:
            ramp = np.linspace(-1.5, 1.5, count)
        one = ramp.astype(self.dtype).reshape(1, *self.shape)
        return np.broadcast_to(one, (batch_size, *self.shape))

    def varied(self, count: int) -> np.ndarray:
        """Images with different value ranges, as different photos have."""
        rng = np.random.default_rng(0)
        scales = rng.uniform(0.2, 2.0, size=(count, 1, 1, 1))
        pixels = rng.normal(size=(count, *self.shape)) * scales
        if self.layout is PixelLayout.UINT8_NHWC:
            pixels = np.clip(128 + 64 * pixels, 0, 255).round()
        return np.ascontiguousarray(pixels, dtype=self.dtype)


@dataclasses.dataclass(frozen=True)
class TokenInputs:
    """The text graph's input: token ids, int64[B, L], padded to the full context."""

    tokenizer: TokenizerSpec

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.tokenizer.max_length,)

    def check(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 2 or batch.shape[1:] != self.shape:
            raise EngineError(
                f"expected token ids of shape [B, {self.tokenizer.max_length}], "
                f"got {list(batch.shape)}"
            )
        return np.ascontiguousarray(batch, dtype=np.int64)

    def fixed(self, batch_size: int) -> np.ndarray:
        return self._texts(np.full((batch_size,), 8), np.random.default_rng(1))

    def varied(self, count: int) -> np.ndarray:
        """Texts of different lengths, from one token to the full context."""
        rng = np.random.default_rng(0)
        lengths = np.linspace(1, self.tokenizer.max_length - 2, count).astype(int)
        return self._texts(lengths, rng)

    def _texts(self, lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The start token (if the family has one), `length` ordinary tokens, the end token,
        then padding."""
        spec = self.tokenizer
        ordinary = spec.ordinary_ids
        start = 0 if spec.start_token_id is None else 1
        ids = np.full((len(lengths), spec.max_length), spec.pad_token_id, dtype=np.int64)
        for row, length in zip(ids, lengths, strict=True):
            if spec.start_token_id is not None:
                row[0] = spec.start_token_id
            row[start : start + length] = rng.integers(ordinary.start, ordinary.stop, size=length)
            row[start + length] = spec.end_token_id
        return ids


def _token_inputs(graph: Graph) -> GraphInputs:
    if graph.tokenizer is None:
        raise ModelLoadError("the text graph's manifest entry has no tokenizer; re-export")
    return TokenInputs(graph.tokenizer)


INPUTS_BY_ROLE: dict[str, Callable[[Graph], GraphInputs]] = {
    "image": ImageInputs.of,
    "text": _token_inputs,
}


def choose_variant(graph: Graph, asked: Precision | None, *, on_gpu: bool) -> tuple[Variant, str]:
    """The variant asked for, or the best one for the device (fp16 on GPU, int8 on CPU) that
    the export kept; and, when a better one was rejected at export, which and why."""
    variants = graph.variants
    if asked is not None:
        if asked in graph.rejected:
            raise ModelLoadError(
                f"the export rejected its {asked.value} variant of this graph "
                f"({_first_line(graph.rejected[asked])}); ask for another --precision "
                f"(has: {', '.join(p.value for p in variants)})"
            )
        if asked not in variants:
            have = ", ".join(p.value for p in variants)
            raise ModelLoadError(
                f"the export has no {asked.value} variant (has: {have}); "
                f"re-export with --precision {asked.value}"
            )
        return variants[asked], ""
    preference = PRECISION_PREFERENCE["gpu" if on_gpu else "cpu"]
    for precision in preference:
        if precision in variants:
            passed_over = [
                f"{better.value} rejected at export: {_first_line(graph.rejected[better])}"
                for better in preference[: preference.index(precision)]
                if better in graph.rejected
            ]
            return variants[precision], "; ".join(passed_over)
    raise ModelLoadError("the export lists no variants")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def read_manifest(model_dir: Path) -> Manifest:
    """The package's manifest; ModelLoadError if it is missing or unreadable."""
    try:
        return Manifest.load(model_dir)
    except ManifestError as exc:
        raise ModelLoadError(str(exc)) from exc


def _served_graph(manifest: Manifest, role: str, model_dir: Path) -> Graph:
    """The package's graph of this role, if this Lookalike can serve it."""
    graph = manifest.graphs.get(role)
    if graph is None:
        have = ", ".join(manifest.graphs)
        raise ModelLoadError(f"{model_dir} has no {role!r} graph (has: {have})")
    if role not in INPUTS_BY_ROLE:
        raise ModelLoadError(f"this Lookalike cannot serve a {role!r} graph")
    return graph


class OnnxEngine:
    """Loads one graph of an export package (`settings.graph`, by role) and embeds with it."""

    def __init__(self, model_dir: Path, settings: EngineSettings = EngineSettings()) -> None:
        try:
            self._ort = import_onnxruntime()
        except RuntimeMissingError as exc:
            raise ModelLoadError(str(exc)) from exc
        manifest = read_manifest(model_dir)
        graph = _served_graph(manifest, settings.graph, model_dir)
        self.inputs = INPUTS_BY_ROLE[settings.graph](graph)
        self.input_name, self.output_name = graph.input, graph.output
        providers = self._choose_providers(settings.provider)
        on_gpu = providers[0] != "CPUExecutionProvider"
        if on_gpu:
            self._preload_cuda_libraries()
        self.variant, passed_over = choose_variant(graph, settings.precision, on_gpu=on_gpu)
        if passed_over:
            log.warning("%s graph: %s", settings.graph, passed_over)
        self.model_file = path = model_dir / self.variant.file
        _verify_file(path, self.variant)
        source = manifest.source
        if source.random_weights:
            log.warning(
                "RANDOM WEIGHTS: %s was exported with --random-init %s; its embeddings carry "
                "no meaning (fine for tests and benchmarks, useless for search)",
                model_dir,
                source.id,
            )
        threads = settings.intra_op_threads or physical_cores()
        self._session = self._create_session(path, settings, providers, threads=threads)
        providers = require_provider(providers[0], self._session.get_providers())
        self._run_rows = settings.run_rows or (GPU_RUN_ROWS if on_gpu else None)
        self._on_gpu, self._buffers = on_gpu, threading.local()
        self._use_io_binding = (
            providers[0] != "CPUExecutionProvider"
            if settings.io_binding is None
            else settings.io_binding
        )
        self._parallel_session = None
        self._workers: concurrent.futures.ThreadPoolExecutor | None = None
        self._keep_batch_invariance(path, settings, providers, threads)
        self.info = ModelInfo(
            model_id=source.id,
            source_kind=source.kind,
            revision=source.revision,
            random_weights=source.random_weights,
            role=settings.graph,
            dims=graph.output_dim,
            precision=self.variant.precision,
            providers=tuple(providers),
            threads=threads,
            per_image=self._workers is not None,
            run_rows=self._run_rows,
            passed_over=passed_over,
            family=manifest.family,
            manifest_sha256=sha256_file(model_dir / MANIFEST_FILE),
            scores=manifest.scores,
        )
        log.info(
            "engine: %s %s graph, %s on %s, %d threads, %d-d embeddings, %s",
            source.id,
            settings.graph,
            self.variant.precision.value,
            ", ".join(providers),
            threads,
            graph.output_dim,
            "one input per run (batching would change results)"
            if self.info.per_image
            else f"runs of {self._run_rows} (short batches padded)"
            if self._run_rows
            else "batched",
        )

    def _keep_batch_invariance(
        self, path: Path, settings: EngineSettings, providers: list[str], threads: int
    ) -> None:
        """Where batching changes results, inputs run one per run: by default in parallel on a
        one-thread session (a lone input still gets every thread)."""
        probes = self.inputs.varied(INVARIANCE_PROBES)
        if not self._batch_changes_results(probes):
            return
        parallel = settings.parallel_per_input and threads > 1
        self._parallel_session = (
            self._create_session(path, settings, providers, threads=1)
            if parallel
            else self._session
        )
        self._workers = concurrent.futures.ThreadPoolExecutor(
            threads if parallel else 1, thread_name_prefix="engine"
        )
        if not self._thread_count_keeps_results(probes):
            log.warning("1-thread and %d-thread runs differ: all on 1 thread", threads)
            self._session = self._parallel_session

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """A batch of this graph's inputs -> float32[B, D], rows of unit norm."""
        batch = self.inputs.check(batch)
        try:
            embeds = self._infer(batch)
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise EngineError(f"inference failed: {exc}") from exc
        return _unit_rows(embeds)

    def embed_rows(self, rows, count: int) -> np.ndarray:
        """The first `count` inputs of `rows`, an ort.OrtValue of this graph's inputs (pixels
        resized where they were decoded: `device_decode`) -> float32[count, D]. On a GPU it runs
        where it lies, as one run of `run_rows`; in host memory, or where inputs run one per run
        (batching would change results), it runs as `embed` runs a batch."""
        if rows.device_name().lower() == "cpu" or self._workers is not None:
            return self.embed(rows.numpy()[:count])
        if rows.shape()[0] != self._run_rows or tuple(rows.shape()[1:]) != self.inputs.shape:
            raise EngineError(f"expected {self._run_rows} rows of {self.inputs.shape} on a device")
        try:
            binding = self._session.io_binding()
            binding.bind_ortvalue_input(self.input_name, rows)
            binding.bind_output(self.output_name)
            self._session.run_with_iobinding(binding)
            embeds = binding.copy_outputs_to_cpu()[0][:count]
        except Exception as exc:
            raise EngineError(f"inference failed: {exc}") from exc
        return _unit_rows(embeds)

    def warm_up(self, batch_size: int = 1) -> None:
        """The first run allocates and tunes; do it before taking traffic."""
        self.embed(self.inputs.fixed(batch_size))

    def self_test(self) -> None:
        """Raise EngineError unless a known input embeds to a finite unit vector."""
        embeds = self.embed(self.inputs.fixed(1))
        if embeds.shape != (1, self.info.dims) or abs(float(np.linalg.norm(embeds)) - 1) > 1e-3:
            raise EngineError(f"self-test produced an embedding of shape {embeds.shape}")

    def close(self) -> None:
        if self._workers is not None:
            self._workers.shutdown(wait=True)

    def _batch_changes_results(self, probes: np.ndarray) -> bool:
        alone = np.concatenate([self._run(self._session, image[None]) for image in probes])
        # The batched probe grows the memory arena; hand that back, as an engine that then
        # runs one input per run never needs it (about 50 MB for ViT-B/32's text tower).
        shrink = self._ort.RunOptions()
        shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        together = self._run(self._session, probes, shrink)
        return bool(np.max(np.abs(together - alone)) > INVARIANCE_TOLERANCE)

    def _thread_count_keeps_results(self, probes: np.ndarray) -> bool:
        if self._parallel_session is self._session:
            return True
        return all(
            np.array_equal(
                self._run(self._session, image[None]),
                self._run(self._parallel_session, image[None]),
            )
            for image in probes
        )

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self._workers is None or len(batch) == 1:
            return self._run(self._session, batch)
        session = self._parallel_session
        runs = self._workers.map(lambda image: self._run(session, image[None]), batch)
        return np.concatenate(list(runs))

    def _run(self, session, batch: np.ndarray, options=None) -> np.ndarray:
        """`batch` through `session` (an ort.InferenceSession), with ort.RunOptions if given:
        one run, or runs of exactly `run_rows` inputs (on a GPU, GPU_RUN_ROWS)."""
        if self._run_rows is None:
            return self._run_once(session, batch, options)
        buffer = self._run_buffer()
        outputs = []
        for start in range(0, len(batch), self._run_rows):
            chunk = batch[start : start + self._run_rows]
            buffer[: len(chunk)] = chunk  # rows after it keep earlier inputs: rows never mix
            outputs.append(self._run_once(session, buffer, options)[: len(chunk)])
        return np.concatenate(outputs)

    def _run_buffer(self) -> np.ndarray:
        """This thread's buffer of one run's inputs, pinned on a GPU (fast copies to it)."""
        buffer = getattr(self._buffers, "rows", None)
        if buffer is None:
            assert self._run_rows is not None
            shape, dtype = (self._run_rows, *self.inputs.shape), self.inputs.fixed(1).dtype
            buffer = pinned_zeros(shape, dtype) if self._on_gpu else np.zeros(shape, dtype)
            self._buffers.rows = buffer
        return buffer

    def _run_once(self, session, batch: np.ndarray, options=None) -> np.ndarray:
        if not self._use_io_binding:
            return session.run([self.output_name], {self.input_name: batch}, options)[0]
        binding = session.io_binding()
        binding.bind_cpu_input(self.input_name, batch)  # one host-to-device copy
        binding.bind_output(self.output_name)
        session.run_with_iobinding(binding, options)
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

    def _preload_cuda_libraries(self) -> None:
        """Load CUDA and cuDNN from NVIDIA's pip packages where they are installed (what
        `onnxruntime-gpu[cuda,cudnn]` brings); libraries on the system path load anyway."""
        preload = getattr(self._ort, "preload_dlls", None)
        if preload is None:
            return
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):  # it prints what failed to load
            preload()
        for line in filter(None, printed.getvalue().splitlines()):
            log.warning("onnxruntime.preload_dlls: %s", line)

    def _create_session(
        self, path: Path, settings: EngineSettings, providers: list[str], *, threads: int
    ):
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = settings.inter_op_threads
        options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        provider_options = [
            CUDA_OPTIONS if name == "CUDAExecutionProvider" else {} for name in providers
        ]
        return self._ort.InferenceSession(
            str(path),
            sess_options=options,
            providers=providers,
            provider_options=provider_options,
        )


def require_provider(wanted: str, got: list[str]) -> list[str]:
    """The session's providers, if it got the one asked for. ONNX Runtime falls back to the CPU
    with a warning when a GPU provider fails to start (no visible GPU, CUDA or cuDNN missing):
    a GPU server that quietly runs on the CPU is worse than one that does not start."""
    if got and got[0] == wanted:
        return got
    raise ModelLoadError(
        f"{wanted} did not start (ONNX Runtime fell back to {', '.join(got) or 'nothing'}; "
        "its log above says why: no visible GPU, or CUDA/cuDNN libraries missing or of "
        "another major version); refusing to serve on the CPU instead: fix the GPU setup, "
        "or pass --provider cpu"
    )


def _unit_rows(embeds: np.ndarray) -> np.ndarray:
    """Each embedding scaled to unit norm; EngineError for a non-finite or zero one."""
    norms = np.linalg.norm(embeds, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms < NORM_TOLERANCE):
        raise EngineError("inference produced non-finite or zero embeddings")
    return (embeds / norms).astype(np.float32, copy=False)


def physical_cores() -> int:
    """Cores this process may run on, SMT siblings counted once (ONNX Runtime's default)."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        try:
            siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
            cores.add(siblings.read_text().strip())
        except OSError:
            return len(cpus)
    return len(cores) or 1


def _verify_file(path: Path, variant: Variant) -> None:
    if not path.is_file():
        raise ModelLoadError(f"model file {path} is missing")
    actual = sha256_file(path)
    if actual != variant.sha256:
        raise ModelLoadError(
            f"model file {path} is corrupt or was replaced: sha256 {actual[:16]}... does not "
            f"match the manifest's {variant.sha256[:16]}...; re-export the model"
        )
