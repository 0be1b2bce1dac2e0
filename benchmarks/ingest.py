"""Bulk indexing: images/s through `lookalike index` on a folder, and where the time goes.

    python benchmarks/ingest.py [--quick] [--images 2000] [--out results] [--model-dir DIR]

Starts a real server (subprocess, loopback) on the benchmark model, indexes a folder of
generated JPEGs (mixed sizes, 640x480 to 1920x1080) with the `lookalike` CLI, and splits the
server's time into its stages (decode+preprocess, inference, commit) from its own Prometheus
metrics.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    DEFAULT_MODEL_DIR,
    ensure_benchmark_model,
    figure_file,
    lookalike_server,
    print_table,
    write_result,
)

SIZES = ((640, 480), (1280, 720), (1920, 1080), (1024, 768))
STAGES = ("preprocess", "inference", "commit")


def make_folder(directory: Path, count: int) -> int:
    """`count` photo-like JPEGs; returns their total bytes."""
    rng = np.random.default_rng(0)
    total = 0
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        field = rng.normal(size=(height // 48 + 2, width // 48 + 2, 3)).cumsum(0).cumsum(1)
        field = ((field - field.min()) / np.ptp(field) * 255).astype(np.uint8)
        image = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
        path = directory / f"img-{index:05d}.jpg"
        image.save(path, "JPEG", quality=88)
        total += path.stat().st_size
    return total


def stage_seconds(metrics_port: int) -> dict[str, float]:
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        .read()
        .decode()
    )
    sums = {}
    for stage in STAGES:
        found = re.search(rf'lookalike_stage_seconds_sum{{stage="{stage}"}} ([0-9.e+-]+)', text)
        sums[stage] = float(found.group(1)) if found else 0.0
    return sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--quick", action="store_true", help="smoke test: 100 images")
    args = parser.parse_args()
    count = 100 if args.quick else args.images
    model_dir = ensure_benchmark_model(args.model_dir)
    lookalike = str(Path(sys.executable).parent / "lookalike")

    with tempfile.TemporaryDirectory() as scratch, lookalike_server(model_dir) as server:
        folder = Path(scratch) / "photos"
        folder.mkdir()
        print(f"generating {count} JPEGs ...", flush=True)
        total_bytes = make_folder(folder, count)
        client = [lookalike, "--server", server.address]
        print("indexing with `lookalike index` ...", flush=True)
        started = time.perf_counter()
        indexed = subprocess.run([*client, "index", str(folder)], capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if indexed.returncode != 0:
            raise SystemExit(indexed.stderr)
        stages = stage_seconds(server.metrics_port)
        stats = subprocess.run([*client, "stats", "--json"], capture_output=True, text=True).stdout
    images_per_s = count / elapsed
    result = {
        "images": count,
        "megabytes": total_bytes / 1e6,
        "seconds": elapsed,
        "images_per_s": images_per_s,
        "stage_seconds": stages,
        "stage_ms_per_image": {stage: s / count * 1e3 for stage, s in stages.items()},
        "summary": indexed.stdout.strip().splitlines()[-1],
        "server_stats": stats,
    }
    print()
    print(result["summary"])
    print_table(
        ("images", "seconds", "img/s", *(f"{s} ms/img" for s in STAGES)),
        [(count, elapsed, images_per_s, *result["stage_ms_per_image"].values())],
    )
    print("(stages overlap: preprocessing runs in threads while a batch is in inference)")
    path = write_result(
        "ingest",
        args.out,
        settings={
            "model_dir": str(model_dir),
            "images": count,
            "sizes": SIZES,
            "quick": args.quick,
        },
        results=result,
    )
    plot(result, path.with_suffix(".png"))
    print(f"\nwrote {path} and {path.with_suffix('.png')}")


def plot(result: dict, path: Path) -> None:
    with figure_file(path, size=(7, 3.5)) as (axis,):
        per_image = result["stage_ms_per_image"]
        axis.barh(
            list(per_image), list(per_image.values()), color=["#4c72b0", "#dd8452", "#55a868"]
        )
        axis.axvline(
            1e3 / result["images_per_s"], color="gray", linestyle="--", label="wall time per image"
        )
        axis.set_xlabel("ms per image (server stage time; stages overlap)")
        axis.set_title(
            f"lookalike index: {result['images']} JPEGs, {result['images_per_s']:.1f} img/s"
        )
        axis.legend(fontsize=8)


if __name__ == "__main__":
    main()
