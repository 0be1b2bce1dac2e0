"""Bulk ingestion: one server against Ray, and the built index against the loaded one.

    python benchmarks/ingest.py [--quick] [--images 2000] [--vectors 100000] [--out results]

In one run, on the benchmark model:
1. `lookalike index` on a folder of generated JPEGs (mixed sizes, 640x480 to 1920x1080)
   through one real server (subprocess, loopback): images/s and the server's stage times
   (decode+preprocess, inference, commit) from its own Prometheus metrics;
2. `lookalike ingest` of the same folder on a local Ray with 1 embedding actor and with 2
   (Ray told of one CPU more than the machine has, so that 2 actors and the read tasks fit):
   images/s, worker time by stage, and the peak RSS of each kind of Ray worker;
3. on a dataset of `--vectors` synthetic 512-d vectors (f16, as ingest writes them):
   `build-index` vectors/s (2 shards) and `import` vectors/s (durable store) plus the index
   build after it, then a server's RSS over the built index (`--index`, memory-mapped) against
   one over the imported data directory (index in memory), each after the same queries.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

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
from benchmarks.datasets import unit_rows, write_dataset
from lookalike.export.manifest import Manifest, ModelIdentity
from lookalike.server.index.settings import BUILT_INDEX_SETTINGS

SIZES = ((640, 480), (1280, 720), (1920, 1080), (1024, 768))
STAGES = ("preprocess", "inference", "commit")
QUERIES = 200  # searched on each server before its memory is read


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


def index_through_server(model_dir: Path, folder: Path, count: int) -> dict:
    lookalike = str(Path(sys.executable).parent / "lookalike")
    with lookalike_server(model_dir) as server:
        client = [lookalike, "--server", server.address]
        print("indexing with `lookalike index` ...", flush=True)
        started = time.perf_counter()
        indexed = subprocess.run([*client, "index", str(folder)], capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if indexed.returncode != 0:
            raise SystemExit(indexed.stderr)
        stages = stage_seconds(server.metrics_port)
    return {
        "seconds": elapsed,
        "images_per_s": count / elapsed,
        "stage_seconds": stages,
        "stage_ms_per_image": {stage: s / count * 1e3 for stage, s in stages.items()},
        "summary": indexed.stdout.strip().splitlines()[-1],
    }


def ingest_on_ray(model_dir: Path, folder: Path, output: Path, actors: int) -> dict:
    import ray

    from lookalike.batch.ingest import IngestSettings, ingest

    cpus = actors + 1  # the actors, and one CPU for the read tasks (ray issue #44687)
    print(f"`lookalike ingest` on a local Ray, {actors} actor(s), {cpus} CPUs ...", flush=True)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        with peak_worker_rss() as peaks:
            summary = ingest(
                [str(folder)], IngestSettings(model_dir=model_dir, output=output, actors=actors)
            )
    finally:
        ray.shutdown()
    return {
        "actors": actors,
        "ray_cpus": cpus,
        "seconds": summary.seconds,
        "images_per_s": summary.images_per_s,
        "stage_seconds": summary.stage_seconds,
        "failures": summary.failures,
        "peak_rss_mb_by_worker": peaks,
    }


@contextmanager
def peak_worker_rss(every_s: float = 0.5) -> Iterator[dict[str, dict[str, float]]]:
    """The peak memory (MB) of one Ray worker process of each kind while the block runs (kinds:
    `WORKER_KINDS`, from the process titles Ray gives its workers): its RSS, and the private
    part of it (RssAnon: RSS also counts the pages of Ray's shared object store it touched)."""
    peaks: dict[str, dict[str, float]] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(every_s):
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    title = (status.parent / "cmdline").read_bytes().split(b"\0")[0].decode()
                    if not title.startswith("ray::") or title == "ray::IDLE":
                        continue
                    text = status.read_text()
                except (OSError, UnicodeDecodeError):
                    continue
                peak = peaks.setdefault(_worker_kind(title), {"rss": 0.0, "private": 0.0})
                peak["rss"] = max(peak["rss"], _status_mb(text, "VmRSS"))
                peak["private"] = max(peak["private"], _status_mb(text, "RssAnon"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peaks
    finally:
        done.set()
        sampler.join()


WORKER_KINDS = {  # a part of a Ray worker's process title -> what it does for ingest
    "_Embedder": "embedding actor (model loaded)",
    "_prepare_batch": "read + preprocess task",
    "HashShuffle": "group-by-partition task",
    "_write_partition": "write task",
}


def _worker_kind(title: str) -> str:
    return next((kind for part, kind in WORKER_KINDS.items() if part in title), "Ray's own")


def _status_mb(status: str, field: str) -> float:
    found = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else float("nan")


def built_and_imported(model_dir: Path, scratch: Path, count: int) -> dict:
    """build-index and import rates on `count` synthetic vectors, then server memory on each."""
    import ray

    from lookalike.batch.build_index import BuildSettings, build_index
    from lookalike.batch.importer import import_dataset

    manifest = Manifest.load(model_dir)
    identity = ModelIdentity.of(manifest.source, manifest.graphs["image"].output_dim)
    ids = [f"img-{i:08d}" for i in range(count)]
    vectors = unit_rows(count, identity.dims, seed=0)
    dataset, index, data = scratch / "vectors", scratch / "index", scratch / "data"
    print(f"writing a dataset of {count} synthetic vectors ...", flush=True)
    write_dataset(dataset, identity, ids, vectors)
    print("build-index (2 shards) ...", flush=True)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        built = build_index(BuildSettings(dataset=dataset, output=index, shards=2))
    finally:
        ray.shutdown()
    print("import ...", flush=True)
    imported = import_dataset(dataset, data)
    queries = vectors[:: max(1, count // QUERIES)][:QUERIES]
    memory = {
        f"built index (--index, memory-mapped {BUILT_INDEX_SETTINGS.dtype})": server_memory(
            model_dir, ("--index", str(index)), queries
        ),
        "imported data dir (index in memory, f32)": server_memory(
            model_dir, ("--data-dir", str(data)), queries
        ),
    }
    return {
        "vectors": count,
        "build_index": {
            "seconds": built.seconds,
            "vectors_per_s": built.vectors_per_s,
            "shards": built.shards,
            "index_bytes_per_vector": _bytes(index / "shards") / count,
        },
        "dataset_bytes_per_vector": _bytes(dataset / "parts") / count,
        "import": {
            "store_seconds": imported.store_seconds,
            "store_vectors_per_s": count / imported.store_seconds,
            "index_seconds": imported.index_seconds,
            "index_vectors_per_s": count / imported.index_seconds,
        },
        "server_memory_mb": memory,
    }


def server_memory(model_dir: Path, store: tuple[str, str], queries: np.ndarray) -> dict:
    """RSS of a server over `store` after searching `queries`: all of it, and the part that
    is file pages (the memory-mapped shards: shared, and reclaimable by the kernel)."""
    from lookalike.client import Client

    with lookalike_server(model_dir, "--no-text", store=store) as server:
        with Client(server.address) as client:
            for query in queries:
                client.search(vector=query, k=10)
        status = Path(f"/proc/{server.pid}/status").read_text()
    return {field: _status_mb(status, field) for field in ("VmRSS", "RssAnon", "RssFile")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 40 images, 1 actor, 3k vectors"
    )
    args = parser.parse_args()
    count = 40 if args.quick else args.images
    vectors = 3000 if args.quick else args.vectors
    model_dir = ensure_benchmark_model(args.model_dir)

    with tempfile.TemporaryDirectory() as temporary:
        scratch = Path(temporary)
        folder = scratch / "photos"
        folder.mkdir()
        print(f"generating {count} JPEGs ...", flush=True)
        total_bytes = make_folder(folder, count)
        server = index_through_server(model_dir, folder, count)
        ray_runs = [
            ingest_on_ray(model_dir, folder, scratch / f"dataset-{actors}", actors)
            for actors in ((1,) if args.quick else (1, 2))
        ]
        bulk = built_and_imported(model_dir, scratch, vectors)
    result = {
        "images": count,
        "megabytes": total_bytes / 1e6,
        "server": server,
        "ray": ray_runs,
        "bulk": bulk,
    }
    print()
    print(server["summary"])
    print_table(
        ("path", "img/s", "vs one server", "worker s by stage"),
        [
            (
                "lookalike index (one server)",
                server["images_per_s"],
                1.0,
                _stages(server["stage_seconds"]),
            )
        ]
        + [
            (
                f"ingest on Ray, {run['actors']} actor(s)",
                run["images_per_s"],
                run["images_per_s"] / server["images_per_s"],
                _stages(run["stage_seconds"]),
            )
            for run in ray_runs
        ],
    )
    kinds = sorted({kind for run in ray_runs for kind in run["peak_rss_mb_by_worker"]})
    print_table(
        (
            "Ray worker (peak MB)",
            *(h for run in ray_runs for h in (f"RSS, {run['actors']} actor(s)", "private")),
        ),
        [
            (
                kind,
                *(_peak(run, kind, measure) for run in ray_runs for measure in ("rss", "private")),
            )
            for kind in kinds
        ],
    )
    print(
        f"bytes per vector: dataset {bulk['dataset_bytes_per_vector']:.0f}, "
        f"built index {bulk['build_index']['index_bytes_per_vector']:.0f} (shards and tables)"
    )
    print_table(
        ("vectors", "build-index vec/s", "import vec/s (durable)", "import index vec/s"),
        [
            (
                vectors,
                bulk["build_index"]["vectors_per_s"],
                bulk["import"]["store_vectors_per_s"],
                bulk["import"]["index_vectors_per_s"],
            )
        ],
    )
    print_table(
        ("server over", "RSS MB", "anonymous MB", "file pages MB"),
        [
            (name, m["VmRSS"], m["RssAnon"], m["RssFile"])
            for name, m in bulk["server_memory_mb"].items()
        ],
    )
    path = write_result(
        "ingest",
        args.out,
        settings={
            "model_dir": str(model_dir),
            "images": count,
            "sizes": SIZES,
            "vectors": vectors,
            "quick": args.quick,
        },
        results=result,
    )
    plot(result, path.with_suffix(".png"))
    print(f"\nwrote {path} and {path.with_suffix('.png')}")


def _bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir())


def _peak(run: dict, kind: str, measure: str) -> float:
    return run["peak_rss_mb_by_worker"].get(kind, {}).get(measure, float("nan"))


def _stages(seconds: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f}" for name, value in seconds.items())


def plot(result: dict, path: Path) -> None:
    with figure_file(path, size=(7, 3.5)) as (axis,):
        labels = ["one server"] + [f"Ray, {run['actors']} actor(s)" for run in result["ray"]]
        rates = [result["server"]["images_per_s"]] + [run["images_per_s"] for run in result["ray"]]
        axis.barh(labels, rates, color=["#4c72b0", "#dd8452", "#55a868"])
        axis.set_xlabel("images/s (same folder, same machine, one run)")
        axis.set_title(f"{result['images']} JPEGs: lookalike index vs lookalike ingest")


if __name__ == "__main__":
    entry_point(main)
