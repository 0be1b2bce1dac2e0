"""The export, step by step, into a temporary directory renamed into place at the end.

A crash, a failed parity check or a full disk leaves no half-written package that looks valid.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import errno
import gc
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path

import onnx
import torch

from lookalike.export.convert import DEFAULT_OPSET
from lookalike.export.durable import fsync_directory, fsync_file
from lookalike.export.errors import ExportError, OutputExistsError, ParityError
from lookalike.export.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    Graph,
    Manifest,
    ParityFigures,
    PixelLayout,
    Precision,
    Variant,
    sha256_file,
)
from lookalike.export.optimize import (
    count_ops,
    fused_op_counts,
    optimize_graph,
    quantize_int8,
    save_fp16,
    split_for_cpu,
)
from lookalike.export.runtime import RuntimeMissingError, import_onnxruntime
from lookalike.export.source import DEFAULT_MODEL, Checkpoint, load_checkpoint
from lookalike.export.towers import GraphJob, graph_jobs
from lookalike.export.verify import check_parity

__all__ = ["ExportRequest", "run_export", "variant_file"]

log = logging.getLogger(__name__)

STAGING_BYTES_PER_PARAMETER = 10  # raw fp32 + fp16 + optimized fp32 graphs side by side
DISK_FULL_BYTES = 1 << 20  # this little free after a failed write means the disk filled up


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportRequest:
    output: Path
    model: str = DEFAULT_MODEL
    revision: str | None = None
    random_init: str | None = None
    precisions: tuple[Precision, ...] = tuple(Precision)
    opset: int = DEFAULT_OPSET
    overwrite: bool = False
    text: bool = True  # the text tower beside the image tower
    image_input: PixelLayout = PixelLayout.UINT8_NHWC  # what the image graph takes


def variant_file(role: str, precision: Precision) -> str:
    return f"{role}_{precision.value}.onnx"


def run_export(request: ExportRequest) -> Manifest:
    """Export, optimize, verify and package; return the manifest written to `request.output`."""
    import_onnxruntime()  # fail before minutes of work when the runtime is missing
    output = request.output.resolve()
    _check_output_replaceable(output, overwrite=request.overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        with _disk_full_is_explained(output):
            manifest = _build(request, staging)
            _publish(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %s", output)
    return manifest


def _check_output_replaceable(output: Path, *, overwrite: bool) -> None:
    if not output.exists():
        return
    if not overwrite:
        raise OutputExistsError(f"{output} already exists; pass --overwrite to replace it")
    is_export = (output / MANIFEST_FILE).is_file()
    if not output.is_dir() or not (is_export or not any(output.iterdir())):
        raise OutputExistsError(
            f"{output} is not an earlier export (no {MANIFEST_FILE}); refusing to replace it "
            "even with --overwrite: choose another --output or remove it yourself"
        )


def _build(request: ExportRequest, staging: Path) -> Manifest:
    graphs = 1 + request.text
    steps = _Steps(total=2 + graphs + graphs * len(request.precisions))
    with steps("loading model"):
        checkpoint = load_checkpoint(
            request.model,
            revision=request.revision,
            random_init=request.random_init,
            text=request.text,
        )
    _check_free_space([tower.module for tower in checkpoint.towers], staging)
    _log_shapes(checkpoint)
    with (
        steps(
            f"exporting ONNX ({' and '.join(['image', 'text'][:graphs])} tower, pooling, "
            "L2 norm) and PyTorch reference embeddings"
        ),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # tracer chatter about Python control flow
        jobs = graph_jobs(checkpoint, staging, opset=request.opset, image_input=request.image_input)
    family, source, scores = checkpoint.family, checkpoint.source, checkpoint.scores
    preprocess = checkpoint.image.preprocess
    del checkpoint  # the PyTorch weights are done with: free them before the ONNX steps
    graphs_by_role = {}
    for job in jobs:
        with steps(f"optimizing the {job.role} graph: ONNX Runtime fusions per target"):
            int8_source = _optimize(job, request.precisions, staging)
        job.raw.unlink()
        variants: dict[Precision, Variant] = {}
        rejected: dict[Precision, str] = {}
        for precision in request.precisions:
            with steps(f"verifying {job.role} {precision.value}"):
                try:
                    variants[precision] = _variant(job, precision, staging, int8_source)
                except ParityError as exc:
                    if precision is Precision.FP32 or len(request.precisions) == 1:
                        raise  # the export itself is wrong, or nothing would be left
                    (staging / variant_file(job.role, precision)).unlink(missing_ok=True)
                    rejected[precision] = str(exc)
                    log.warning(
                        "%s %s REJECTED (the other variants are kept): %s",
                        job.role,
                        precision.value,
                        exc,
                    )
        del int8_source
        if not variants:
            raise ParityError(f"no variant of the {job.role} graph met its parity bar")
        graphs_by_role[job.role] = _graph(job, variants, rejected)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        source=source,
        embedding_dim=graphs_by_role["image"].output_dim,
        preprocess=preprocess,
        opset=request.opset,
        graphs=graphs_by_role,
        tools=_tool_versions(),
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        family=family,
        scores=scores,
    )
    manifest.write(staging)
    return manifest


def _log_shapes(checkpoint: Checkpoint) -> None:
    image = checkpoint.image
    log.info(
        "%s image tower: %d layers, width %d, %dpx, patch %d -> %d-d embeddings",
        checkpoint.family,
        image.tower.num_layers,
        image.tower.hidden_size,
        image.image_size,
        image.patch_size,
        image.tower.dims,
    )
    if checkpoint.text is not None:
        text = checkpoint.text
        log.info(
            "text tower: %d layers, width %d, %d heads, vocabulary %d, %d tokens -> %d-d",
            text.tower.num_layers,
            text.tower.hidden_size,
            text.tower.num_heads,
            text.vocab_size,
            text.context_length,
            text.tower.dims,
        )


def _optimize(
    job: GraphJob, precisions: tuple[Precision, ...], staging: Path
) -> onnx.ModelProto | None:
    """Write the fp32 and fp16 graphs; return the graph int8 quantizes, if int8 is wanted.

    Each target gets the fusions that are fastest on its hardware (see benchmarks/README.md):
    fp16 (CUDA) keeps every fusion; fp32 (CPU) runs attention as plain MatMuls, about 4%
    faster than ONNX Runtime's fused CPU Attention; int8 needs the fused Attention to become
    QAttention. The CPU graphs split SkipLayerNormalization (see `split_for_cpu`).
    """
    shape = {"num_heads": job.num_heads, "hidden_size": job.hidden_size}
    if Precision.FP32 in precisions:
        fp32 = optimize_graph(job.raw, **shape, fuse_attention=False)
        split_for_cpu(fp32)
        fp32.save_model_to_file(str(staging / variant_file(job.role, Precision.FP32)))
        del fp32
        _release_memory()  # one graph in memory at a time
    if Precision.FP16 not in precisions and Precision.INT8 not in precisions:
        return None
    fused = optimize_graph(job.raw, **shape, fuse_attention=True)
    log.info("fused: %s", ", ".join(f"{n} {op}" for op, n in fused_op_counts(fused).items()))
    if Precision.FP16 in precisions:
        save_fp16(fused, staging / variant_file(job.role, Precision.FP16))
        _release_memory()
    if Precision.INT8 not in precisions:
        return None
    split_for_cpu(fused)
    job.prepare_int8(fused.model)
    return fused.model


def _variant(
    job: GraphJob, precision: Precision, staging: Path, int8_source: onnx.ModelProto | None
) -> Variant:
    path = staging / variant_file(job.role, precision)
    notes: dict[str, object] = {}
    if precision is Precision.INT8:
        assert int8_source is not None
        parity, notes = _int8_meeting_bar(job, int8_source, path)
    else:
        parity = check_parity(path, precision, job.input_name, job.parity_inputs, job.reference)
    notes["ops"] = count_ops(path)
    log.info(
        "%s %s parity: min cosine %.6f (bar %s), max abs diff %.2g",
        job.role,
        precision.value,
        parity.min_cosine,
        parity.bar,
        parity.max_abs_diff,
    )
    return Variant(
        precision=precision,
        file=path.name,
        sha256=sha256_file(path),
        bytes=path.stat().st_size,
        parity=parity,
        notes=notes,
    )


def _int8_meeting_bar(
    job: GraphJob, source: onnx.ModelProto, path: Path
) -> tuple[ParityFigures, dict[str, object]]:
    """Quantize with the lightest plan that meets the int8 bar (the job's plans, in order)."""
    failures = []
    for plan in job.quantization_plans:
        kept = quantize_int8(source, path, plan)
        try:
            parity = check_parity(
                path, Precision.INT8, job.input_name, job.parity_inputs, job.reference
            )
        except ParityError as exc:
            log.warning("int8 plan %s missed the bar: %s; trying the next", plan.name, exc)
            failures.append(f"{plan.name}: {exc}")
            continue
        return parity, {"plan": plan.name, "fp32_nodes": kept}
    raise ParityError(
        f"no int8 quantization plan met the bar for the {job.role} graph:\n  "
        + "\n  ".join(failures)
    )


def _graph(
    job: GraphJob, variants: dict[Precision, Variant], rejected: dict[Precision, str]
) -> Graph:
    return Graph(
        input=job.input_name,
        input_shape=job.input_shape,
        input_dtype=job.input_dtype,
        output=job.output_name,
        output_dim=job.output_dim,
        l2_normalized=True,
        variants=variants,
        tokenizer=job.tokenizer,
        rejected=rejected,
    )


def _tool_versions() -> dict[str, str]:
    names = ("lookalike", "torch", "transformers", "onnx")
    versions = {name: _version(name) for name in names}
    versions["onnxruntime"] = import_onnxruntime().__version__
    return versions


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _publish(staging: Path, output: Path) -> None:
    """fsync every file, then swap the staging directory into place."""
    for path in staging.iterdir():
        fsync_file(path)
    if output.exists():
        retired = output.with_name(f".{output.name}.old-{os.getpid()}")
        output.rename(retired)
        staging.rename(output)
        shutil.rmtree(retired)
    else:
        staging.rename(output)
    fsync_directory(output.parent)


@contextlib.contextmanager
def _disk_full_is_explained(output: Path) -> Iterator[None]:
    """Name a full disk as the cause: ONNX writers often fail with a corrupt file, not ENOSPC."""
    try:
        yield
    except (ExportError, RuntimeMissingError):
        raise
    except Exception as exc:
        free = shutil.disk_usage(output.parent).free
        if not (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) and free > DISK_FULL_BYTES:
            raise
        raise ExportError(
            f"disk full while exporting ({free / 1e6:.1f} MB free in {output.parent}); "
            f"nothing was written to {output} ({type(exc).__name__}: {exc})"
        ) from exc


def _check_free_space(models: Sequence[torch.nn.Module], directory: Path) -> None:
    """Refuse before minutes of work when the staging peak cannot fit."""
    parameters = sum(p.numel() for model in models for p in model.parameters())
    needed = parameters * STAGING_BYTES_PER_PARAMETER
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise ExportError(
            f"not enough disk space in {directory}: the export needs about "
            f"{needed / 1e6:.0f} MB, {free / 1e6:.0f} MB are free"
        )


class _Steps:
    """Numbered progress lines with timings for the steps that take seconds."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0

    @contextlib.contextmanager
    def __call__(self, title: str) -> Iterator[None]:
        self.done += 1
        log.info("[%d/%d] %s ...", self.done, self.total, title)
        started = time.perf_counter()
        yield
        _release_memory()
        log.info(
            "[%d/%d] done in %.1fs (peak memory so far %.1f GB)",
            self.done,
            self.total,
            time.perf_counter() - started,
            _peak_rss_bytes() / 1e9,
        )


def _release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc keeps it otherwise).

    The ONNX graphs are hundreds of MB each; without this the freed memory of one step stays
    resident under the next one's peak. With it, and one graph in memory at a time, the
    exporter's peak for ViT-B/32 fell from 5.6 GB to 3.7 GB.
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB
