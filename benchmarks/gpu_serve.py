"""End to end over gRPC with the engine on a GPU: what bounds a server whose GPU is fast.

    python benchmarks/gpu_serve.py --model-dir models/gpu-vit-b-32 [--out results]
    python benchmarks/gpu_serve.py --dry-run   # no GPU: the same steps on the CPU, short

First, decoding and resizing alone at 1 to all cores (the server's `fast` preprocessing, in
threads and in processes as the server runs them) and on the GPU (`--image-decoder
nvimgcodec`: nvImageCodec decoding runs of 64 JPEGs, the resize graph cutting each into its
row): images/s and images/s per worker, for 640x480, 1920x1080 and 4000x3000 JPEGs (how the
rate falls with megapixels). Then a real `lookalike-server --provider cuda` (its defaults
otherwise) driven from client processes with the first two at 16, 64 and 256 requests in
flight: images/s, p50/p99, the mean batch, the cores the server process (and its decoding
processes) used and the GPU's busy fraction (NVML), beside the bare engine on preprocessed
pixels measured in this process; once with the server decoding in its threads (the default),
once in `--preprocess-processes` worker processes, once on the GPU. Last, the same load at
256 in flight with other `--max-batch` settings, to choose the GPU default.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import entry_point, lookalike_server, measure, print_table, write_result
from benchmarks.preprocess import encoded
from benchmarks.serve import PAYLOADS, batches_so_far, load_run
from lookalike.export.manifest import Manifest

log = logging.getLogger("benchmarks.gpu_serve")

CONCURRENCY = (16, 64, 256)
CLIENT_PROCESSES = 4  # enough to keep 256 calls in flight; each takes a core from the server
MAX_BATCH_SWEEP = (64, 256)
DEVICE_RUN = 64  # the engine's GPU_RUN_ROWS: JPEGs the server decodes in one call on a GPU
DECODE_ONLY = {"jpeg-4000x3000": (4000, 3000)}  # decoding rates only: the megapixel envelope


def decode_rates(
    manifest: Manifest, payload: bytes, workers: int, seconds: float, *, processes: bool
) -> float:
    """Images/s of the server's preprocessing with `workers` threads (one interpreter) or
    `workers` processes (`--preprocess-processes`: pixels back through shared memory), each
    as the server runs it."""
    from lookalike.server.embed.preprocess import Preprocessor
    from lookalike.server.embed.preprocess_pool import ProcessPreprocessor

    local = Preprocessor.for_package(manifest)
    in_flight = workers * 2 if processes else workers  # a thread waits on each process's image
    work = ProcessPreprocessor(local, workers) if processes else local
    per_round = workers * 8
    try:
        with concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
            timing = measure(
                lambda: list(pool.map(work, [payload] * per_round)), min_seconds=seconds
            )
    finally:
        if isinstance(work, ProcessPreprocessor):
            work.close()
    return per_round / timing.median


def device_decode_rate(
    manifest: Manifest, payload: bytes, seconds: float, *, on_gpu: bool, run: int = DEVICE_RUN
) -> float:
    """Images/s of `--image-decoder nvimgcodec`'s decoding: runs of `run` JPEGs decoded in one
    call and each resized and cropped into its row, as the server's inference thread does
    (each resize run ends synchronised, so a run is done when the call returns)."""
    from lookalike.server.embed.device_decode import DeviceDecoder
    from lookalike.server.embed.preprocess import ImageLimits

    decoder = DeviceDecoder(manifest.preprocess, ImageLimits(), on_gpu=on_gpu)
    rows = decoder.new_rows(run, manifest.preprocess.image_size)

    def decode_run() -> None:
        for index, image in enumerate(decoder.decode([payload] * run)):
            if image is None or not decoder.fill(rows, index, image):
                raise RuntimeError("nvImageCodec did not decode the benchmark's JPEG")

    return run / measure(decode_run, min_seconds=seconds).median


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process and its live child processes (preprocessing
    workers) have used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    used = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                used += cpu_seconds(int(child))
    return used


class GpuBusy:
    """The GPU's busy fraction (NVML utilization, sampled every 100 ms) while in the block."""

    def __init__(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._nvml = pynvml
        except Exception:  # no NVIDIA driver: a dry run
            self._nvml = None
        self.samples: list[int] = []

    def __enter__(self) -> GpuBusy:
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while self._nvml is not None and not self._stop.wait(0.1):
            rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            self.samples.append(int(rates.gpu))

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) / 100 if self.samples else None


def loaded_run(address: str, pid: int, payload: bytes, concurrency: int, seconds: float) -> dict:
    """One load level, with the server's cores used, its mean batch and the GPU's busy time."""
    before_batches, before_cpu = batches_so_far(address), cpu_seconds(pid)
    with GpuBusy() as busy:
        run = load_run(address, payload, concurrency, seconds, processes=CLIENT_PROCESSES)
    served = run["images_per_s"] * seconds
    run.update(
        mean_batch_size=served / max(batches_so_far(address) - before_batches, 1),
        server_cores_used=(cpu_seconds(pid) - before_cpu) / run["wall_seconds"],
        gpu_busy=busy.mean,
    )
    return run


def bare_engine_rate(model_dir: Path, provider: str, batch: int, seconds: float) -> float:
    """Images/s of the engine as the server makes it, on preprocessed pixels in memory."""
    from lookalike.server.embed.onnx_engine import EngineSettings, OnnxEngine, Provider

    engine = OnnxEngine(model_dir, EngineSettings(provider=Provider(provider)))
    pixels = engine.inputs.varied(batch)
    timing = measure(lambda: engine.embed(pixels), min_seconds=seconds)
    engine.close()
    return batch / timing.median


LOAD_COLUMNS = (
    ("images/s", "images_per_s"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("batch", "mean_batch_size"),
    ("cores", "server_cores_used"),
    ("gpu busy", "gpu_busy"),
)


def print_runs(lead: tuple, runs: list[dict], tail: tuple = ()) -> None:
    """A table of load runs: the `lead` columns, what every run measures, then `tail`."""
    columns = (*lead, *LOAD_COLUMNS, *tail)
    print_table([title for title, _ in columns], [[r[key] for _, key in columns] for r in runs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/gpu-vit-b-32"))
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--seconds", type=float, default=5.0, help="per load level")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: CPU, short")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    provider = "cpu" if args.dry_run else "cuda"
    seconds = 1.5 if args.dry_run else args.seconds
    concurrency = (16,) if args.dry_run else CONCURRENCY
    manifest = Manifest.load(args.model_dir)
    cores = len(os.sched_getaffinity(0))
    sizes = dict(list(PAYLOADS.items())[:1]) if args.dry_run else PAYLOADS  # dry: one size
    payloads = {name: encoded(size, "JPEG", seed=1) for name, size in sizes.items()}
    started = time.perf_counter()

    decode_seconds = 0.3 if args.dry_run else 1.0
    decoding = []
    decode_payloads = {
        **payloads,
        **{name: encoded(size, "JPEG", seed=1) for name, size in DECODE_ONLY.items()},
    }
    for name, payload in decode_payloads.items():
        rate = device_decode_rate(
            manifest,
            payload,
            decode_seconds,
            on_gpu=not args.dry_run,
            run=2 if args.dry_run else DEVICE_RUN,  # its CPU backend decodes 12 MP at ~5/s
        )
        decoding.append(
            {
                "payload": name,
                "workers": 1,
                "kind": "nvimgcodec" + ("" if args.dry_run else " (GPU)"),
                "images_per_s": rate,
                "per_worker": rate,
            }
        )
        log.warning("decode %s nvimgcodec: %.0f/s", name, rate)
        if args.dry_run and name in DECODE_ONLY:
            continue  # a dry run: the large image on the device decoder alone
        for workers in sorted({1, 2, 4, 8, cores} & set(range(1, cores + 1))):
            for processes in (False, True):
                rate = decode_rates(manifest, payload, workers, decode_seconds, processes=processes)
                decoding.append(
                    {
                        "payload": name,
                        "workers": workers,
                        "kind": "processes" if processes else "threads",
                        "images_per_s": rate,
                        "per_worker": rate / workers,
                    }
                )
                log.warning(
                    "decode %s %d %s: %.0f/s",
                    name,
                    workers,
                    "processes" if processes else "threads",
                    rate,
                )

    # the server decoding in its threads (the default), then in processes on the cores the
    # clients leave it
    processes = max(1, cores - CLIENT_PROCESSES - 2)
    decoders = {
        "threads": (),
        f"{processes} processes": ("--preprocess-processes", str(processes)),
        "nvimgcodec": ("--image-decoder", "nvimgcodec"),
    }
    runs, sweep, server_info, stopped = [], [], {}, None
    try:
        bare = bare_engine_rate(args.model_dir, provider, 256, 0.3 if args.dry_run else 2.0)
        for decoder, flags in decoders.items():
            with lookalike_server(args.model_dir, "--provider", provider, *flags) as server:
                from lookalike.client import Client

                with Client(server.address) as client:
                    stats = client.stats()
                server_info = {"providers": list(stats.providers), "precision": stats.precision}
                for name, payload in payloads.items():
                    for level in concurrency:
                        run = loaded_run(server.address, server.pid, payload, level, seconds)
                        run.update(payload=name, decoder=decoder, bare_engine_images_per_s=bare)
                        runs.append(run)
                        log.warning(
                            "%s, %s at %d in flight: %.0f/s",
                            decoder,
                            name,
                            level,
                            run["images_per_s"],
                        )
        for max_batch in MAX_BATCH_SWEEP:
            extra = ("--provider", provider, "--max-batch", str(max_batch))
            with lookalike_server(args.model_dir, *extra) as server:
                payload = payloads["jpeg-640x480"]
                run = loaded_run(server.address, server.pid, payload, max(concurrency), seconds)
                run.update(payload="jpeg-640x480", max_batch=max_batch)
                sweep.append(run)
                log.warning("max batch %d: %.0f/s", max_batch, run["images_per_s"])
    except (Exception, SystemExit) as exc:  # keep what was measured; say where it stopped
        log.exception("stopped early")
        stopped = repr(exc)

    print(f"server: {server_info}; stopped early: {stopped}")
    print_table(
        ["payload", "workers", "kind", "images/s", "per worker"],
        [
            [d["payload"], d["workers"], d["kind"], d["images_per_s"], d["per_worker"]]
            for d in decoding
        ],
    )
    print_runs(
        (("decoding", "decoder"), ("payload", "payload"), ("in flight", "concurrency")),
        runs,
        (("bare engine", "bare_engine_images_per_s"),),
    )
    print_runs((("max batch", "max_batch"),), sweep)
    path = write_result(
        "gpu-serve",
        args.out,
        settings={
            "model_dir": str(args.model_dir),
            "provider": provider,
            "seconds": seconds,
            "client_processes": CLIENT_PROCESSES,
            "dry_run": args.dry_run,
        },
        results={
            "server": server_info,
            "stopped_early": stopped,
            "decoding": decoding,
            "runs": runs,
            "max_batch_sweep": sweep,
            "seconds": time.perf_counter() - started,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    entry_point(main)
