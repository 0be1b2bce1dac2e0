"""Memory a serving user sizes machines by: exporter peak, model files, server RSS.

    python benchmarks/memory.py [--quick] [--out results] [--model-dir DIR] [--minutes 10]

Measures the exporter's peak RSS (a fresh `lookalike-export --random-init vit-b-32`), each
variant's file size, the server's RSS idle per precision and, for int8, with and without the
text tower (`--no-text`: what the text tower costs), and the server's RSS sampled every few
seconds through a long load run (16 requests in flight, 640x480 JPEGs) to show whether it
stays flat. Index bytes per vector per dtype come from `search.py`.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    DEFAULT_MODEL_DIR,
    ensure_benchmark_model,
    entry_point,
    figure_file,
    lookalike_server,
    print_table,
    write_result,
)
from benchmarks.preprocess import encoded
from benchmarks.serve import load_run, rss_mb
from lookalike.export.manifest import Manifest

SAMPLE_S = 5.0
IDLE_STARTS = 3  # idle RSS varies by tens of MB from start to start: the median of these


def exporter_peak_mb(preset: str) -> float:
    """Peak RSS of one export run, as the kernel accounted it for the child process."""
    with tempfile.TemporaryDirectory() as scratch:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        subprocess.run(
            [
                str(Path(sys.executable).parent / "lookalike-export"),
                "--random-init",
                preset,
                "--output",
                str(Path(scratch) / "model"),
                "--quiet",
            ],
            check=True,
        )
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(peak_kb, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load run")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny export, 20 s load")
    args = parser.parse_args()
    minutes = 1 / 3 if args.quick else args.minutes
    model_dir = ensure_benchmark_model(args.model_dir)
    manifest = Manifest.load(model_dir)

    print("exporter peak RSS ...", flush=True)
    preset = "tiny" if args.quick else "vit-b-32"
    exporter = {"preset": preset, "peak_rss_mb": exporter_peak_mb(preset)}
    files = {
        f"{role} {p.value}" if role != "image" else p.value: v.bytes / 2**20
        for role, graph in manifest.graphs.items()
        for p, v in graph.variants.items()
    }

    runs = {"fp32": ("--precision", "fp32"), "int8": ("--precision", "int8")}
    if "text" in manifest.graphs:
        runs["int8, no text tower"] = ("--precision", "int8", "--no-text")
    starts: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(1 if args.quick else IDLE_STARTS):  # interleaved, so drift hits all alike
        for name, flags in runs.items():
            with lookalike_server(model_dir, *flags) as server:
                starts[name].append(rss_mb(server.pid))
    idle = {name: statistics.median(values) for name, values in starts.items()}
    text_tower = idle["int8"] - idle["int8, no text tower"] if "text" in manifest.graphs else None
    print(f"load run: {minutes:g} min at 16 in flight ...", flush=True)
    samples: list[tuple[float, float]] = []
    payload = encoded((640, 480), "JPEG", seed=1)
    with lookalike_server(model_dir) as server:
        started = time.monotonic()
        done = threading.Event()

        def sample() -> None:
            while not done.wait(SAMPLE_S):
                samples.append((time.monotonic() - started, rss_mb(server.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        samples.append((0.0, rss_mb(server.pid)))
        run = load_run(server.address, payload, 16, minutes * 60)
        done.set()
        sampler.join()
    settled = [rss for at, rss in samples if at >= min(60.0, minutes * 30)]  # after warm-up
    drift = (max(settled) - min(settled)) / min(settled) if settled else float("nan")
    result = {
        "exporter": exporter,
        "model_file_mb": files,
        "server_idle_rss_mb": idle,
        "server_idle_rss_mb_each_start": starts,
        "text_tower_rss_mb": text_tower,
        "load_run": {
            "minutes": minutes,
            "images_per_s": run["images_per_s"],
            "errors": run["errors"],
            "rss_samples": samples,
            "rss_drift_after_warmup": drift,
        },
    }
    print()
    print_table(
        ("what", "MB"),
        [
            (f"exporter peak ({preset})", exporter["peak_rss_mb"]),
            *((f"model file {name}", size) for name, size in files.items()),
            *((f"server idle, {name}", rss) for name, rss in idle.items()),
            *([("text tower (int8, idle)", text_tower)] if text_tower is not None else []),
            ("server under load, first sample", samples[0][1]),
            ("server under load, last sample", samples[-1][1]),
        ],
    )
    print(
        f"RSS drift after warm-up: {drift:.1%} over {minutes:g} min "
        f"({run['images_per_s']:.1f} img/s, {run['errors']} errors)"
    )
    path = write_result(
        "memory",
        args.out,
        settings={
            "model_dir": str(model_dir),
            "minutes": minutes,
            "quick": args.quick,
            "sample_s": SAMPLE_S,
        },
        results=result,
    )
    with figure_file(path.with_suffix(".png"), size=(8, 4)) as (axis,):
        axis.plot([at / 60 for at, _ in samples], [rss for _, rss in samples], "o-")
        axis.set_xlabel("minutes under load (16 in flight)")
        axis.set_ylabel("server RSS, MB")
        axis.set_ylim(bottom=0)
        axis.set_title(f"Server memory under load ({manifest.source.id}, int8)")
    print(f"\nwrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    entry_point(main)
