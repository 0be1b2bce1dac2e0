"""What every benchmark shares: machine facts, timing, the JSON result format, the model."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MODEL_DIR",
    "Timing",
    "machine_info",
    "library_versions",
    "measure",
    "write_result",
    "ensure_benchmark_model",
    "print_table",
    "free_port",
    "RunningServer",
    "lookalike_server",
    "installed_layout",
    "figure_file",
    "entry_point",
]

log = logging.getLogger("benchmarks")

# PyTorch's OpenMP workers otherwise spin-wait after each op and keep stealing the cores from
# whatever is measured next: ONNX Runtime's int8 batch 1 read 21.9 ms right after PyTorch,
# 16.2 ms with passive waiting (PyTorch's own figures moved by under 3%). Set before any
# benchmark imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_MODEL_DIR = Path("models/random-vit-b-32")
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")
LIBRARIES = (
    "lookalike",
    "numpy",
    "pillow",
    "onnxruntime",
    "onnxruntime-gpu",
    "torch",
    "transformers",
    "usearch",
)


def machine_info() -> dict[str, Any]:
    """CPU model and instruction sets, cores, memory and GPU: the figures mean nothing without."""
    cpuinfo = _read("/proc/cpuinfo")
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    flags_line = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    flags = set(flags_line.split(":", 1)[-1].split())
    meminfo = _read("/proc/meminfo")
    mem_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if "MemTotal" in line), 0)
    return {
        "cpu": model,
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(mem_kb / 2**20, 1),
        "gpu": _gpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclasses.dataclass(frozen=True)
class Timing:
    seconds: tuple[float, ...]  # one entry per timed run

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def measure(
    run: Callable[[], object], *, min_seconds: float, min_runs: int = 3, warmup: int = 1
) -> Timing:
    """Time `run` after `warmup` calls, until both `min_runs` and `min_seconds` are reached."""
    for _ in range(warmup):
        run()
    seconds: list[float] = []
    started = time.perf_counter()
    while len(seconds) < min_runs or time.perf_counter() - started < min_seconds:
        begin = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - begin)
    return Timing(tuple(seconds))


def write_result(name: str, out_dir: Path, *, settings: dict[str, Any], results: Any) -> Path:
    """`OUT/<name>-<timestamp>.json` in the format every benchmark shares."""
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    path = out_dir / f"{name}-{now:%Y%m%dT%H%M%SZ}.json"
    document = {
        "benchmark": name,
        "created_at": now.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": library_versions(),
        "settings": settings,
        "results": results,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def ensure_benchmark_model(model_dir: Path) -> Path:
    """The package to benchmark; a missing default is exported as random-weight ViT-B/32."""
    if (model_dir / "manifest.json").is_file():
        return model_dir
    if model_dir != DEFAULT_MODEL_DIR:
        raise SystemExit(f"{model_dir} holds no export (no manifest.json)")
    from lookalike.export.pipeline import ExportRequest, run_export

    log.warning(
        "%s missing: exporting a RANDOM-WEIGHT ViT-B/32 (same compute as the real model)",
        model_dir,
    )
    run_export(ExportRequest(output=model_dir, random_init="vit-b-32"))
    return model_dir


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in cells:
        print("  ".join(value.rjust(w) for value, w in zip(row, widths, strict=True)))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _gpu_name() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or None if result.returncode == 0 else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class RunningServer:
    address: str
    pid: int
    metrics_port: int


def installed_layout(source_tree: Path, into: Path) -> Path:
    """Links that give a checkout the installed package layout (`lookalike.server` is
    `server/`, ...), so that with PYTHONPATH=<returned path> Python imports that checkout's code
    instead of the installed one."""
    package = into / "lookalike"
    package.mkdir(parents=True)
    (package / "__init__.py").symlink_to(source_tree / "protos/lookalike/__init__.py")
    (package / "v1").symlink_to(source_tree / "protos/lookalike/v1")
    for name in ("server", "export", "client", "batch", "cli"):
        if (source_tree / name).is_dir():  # older revisions have fewer packages
            (package / name).symlink_to(source_tree / name)
    return into


@contextlib.contextmanager
def lookalike_server(
    model_dir: Path,
    *extra: str,
    source_tree: Path | None = None,
    store: Sequence[str] = (),
) -> Iterator[RunningServer]:
    """`lookalike-server` as a subprocess on loopback, once it serves; with an empty data dir
    unless `store` says otherwise (`("--index", DIR)` or `("--data-dir", DIR)`).

    With `source_tree`, the server runs that checkout's code (e.g. an older revision).
    """
    from lookalike.client import Client, LookalikeClientError

    port, metrics_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "server.log"
        environment = dict(os.environ)
        if source_tree is not None:
            layout = installed_layout(source_tree.resolve(), Path(scratch) / "layout")
            environment["PYTHONPATH"] = str(layout)
        command = [
            sys.executable,
            "-m",
            "lookalike.server",
            "--model-dir",
            str(model_dir),
            *(store or ("--data-dir", str(Path(scratch) / "data"))),
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            *extra,
        ]
        with log.open("w") as stream:
            server = subprocess.Popen(command, stdout=stream, stderr=stream, env=environment)
        address = f"127.0.0.1:{port}"
        try:
            with Client(address, timeout=5) as client:
                for _ in range(600):
                    try:
                        client.stats()
                        break
                    except LookalikeClientError:
                        if server.poll() is not None:
                            raise SystemExit(f"the server died:\n{log.read_text()}") from None
                        time.sleep(0.2)
            yield RunningServer(address, server.pid, metrics_port)
        finally:
            server.terminate()
            server.wait(60)


@contextlib.contextmanager
def figure_file(
    path: Path, *, columns: int = 1, size: tuple[float, float] = (8, 4.5)
) -> Iterator[list]:
    """Axes of a new figure, saved as PNG to `path` on exit (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, columns, figsize=size, squeeze=False)
    try:
        yield list(axes[0])
        figure.tight_layout()
        figure.savefig(path, dpi=120)
    finally:
        plt.close(figure)


def entry_point(main: Callable[[], None]) -> None:
    """Run a benchmark's `main`: a model or package it cannot get ends in one line saying how to
    get it (the exporter's errors carry the install line), not in a traceback."""
    from lookalike.export.errors import ExportError
    from lookalike.export.runtime import RuntimeMissingError

    try:
        main()
    except (ExportError, RuntimeMissingError) as exc:
        raise SystemExit(f"error: {exc}") from None
