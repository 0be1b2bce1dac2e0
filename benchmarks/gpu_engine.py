"""ONNX Runtime on CUDA beside PyTorch eager on the same GPU, in one run.

    python benchmarks/gpu_engine.py --model-dir models/gpu-vit-b-32 [--out results]
    python benchmarks/gpu_engine.py --dry-run   # no GPU: every step on the CPU, tiny sizes

Image tower, fp16 and fp32, at batch 1, 32, 128, 256 and 512: images/s and latency of ONNX
Runtime with IO binding (the graph's pixels from host memory in, embeddings back: what a
server does; also as two half-batch runs at once from pinned memory, whether one's copy
overlaps the other's compute), of the same session on pixels already on the GPU (what the GPU
itself does), and of PyTorch eager (SDPA attention) on the same host pixels; each as a
fraction of the card's dense
fp16 matrix rate, measured in the same run. The text tower's texts/s at batch 256. The engine
as served (runs of GPU_RUN_ROWS inputs, padded) and with other run sizes. Correctness: fp16
and fp32 against PyTorch fp32 (TF32 off) on real photographs; an image alone and in a batch
of 256, with and without the engine's fixed-size runs (max difference, and whether its own
copy still ranks first); the providers the engine got; and that asking for CUDA with no
visible GPU fails at load.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import entry_point, measure, print_table, write_result
from benchmarks.engine import flops_per_image, random_pixels
from lookalike.export.manifest import Manifest, PixelLayout, Precision
from lookalike.server.embed.host_memory import pinned_zeros
from lookalike.server.embed.onnx_engine import (
    CUDA_OPTIONS,
    EngineSettings,
    OnnxEngine,
    Provider,
)

log = logging.getLogger("benchmarks.gpu_engine")

BATCH_SIZES = (1, 32, 128, 256, 512)
TEXT_BATCH = 256
RUN_ROWS_SWEEP = (16, 32, 128)  # beside the default GPU_RUN_ROWS
INVARIANCE_BATCH = 256
MATMUL_SIZE = 8192


class Device:
    """Where the run happens: CUDA, or the CPU in a dry run (tiny sizes, same code paths)."""

    def __init__(self, dry_run: bool) -> None:
        import torch

        self.dry_run = dry_run
        self.torch_device = "cpu" if dry_run else "cuda"
        self.provider = Provider.CPU if dry_run else Provider.CUDA
        self.ort_device = "cpu" if dry_run else "cuda"
        if not dry_run and not torch.cuda.is_available():
            raise SystemExit("no CUDA device visible to PyTorch; use --dry-run on a CPU machine")

    def synchronize(self) -> None:
        import torch

        if not self.dry_run:
            torch.cuda.synchronize()


def dense_fp16_rate(device: Device, size: int) -> float:
    """FLOP/s of a size^3 fp16 matrix product (cuBLAS through PyTorch): the card's ceiling."""
    import torch

    dtype = torch.float32 if device.dry_run else torch.float16
    a = torch.randn(size, size, device=device.torch_device, dtype=dtype)
    b = torch.randn(size, size, device=device.torch_device, dtype=dtype)

    def product() -> None:
        torch.matmul(a, b)
        device.synchronize()

    timing = measure(product, min_seconds=0.5, min_runs=10, warmup=3)
    return 2 * size**3 / timing.median


def ort_session(model_dir: Path, precision: Precision, graph: str, device: Device):
    """A bare ONNX Runtime session on one of the package's variants, as the engine makes it."""
    import onnxruntime as ort

    manifest = Manifest.load(model_dir)
    variant = manifest.graphs[graph].variants[precision]
    providers = (
        ["CPUExecutionProvider"]
        if device.dry_run
        else ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    options = [CUDA_OPTIONS if name.startswith("CUDA") else {} for name in providers]
    session = ort.InferenceSession(
        str(model_dir / variant.file), providers=providers, provider_options=options
    )
    return session, manifest.graphs[graph]


def ort_runs(session, graph, device: Device) -> dict[str, Callable[[np.ndarray], object]]:
    """Three ways to run a batch: host pixels in and out (IO binding, one copy each way), from
    ordinary or from pinned memory (the batch copied into a pinned buffer first, as the engine
    does), and pixels already on the GPU (what the GPU itself takes; the output stays there)."""
    import onnxruntime as ort

    def from_host(batch: np.ndarray) -> np.ndarray:
        binding = session.io_binding()
        binding.bind_cpu_input(graph.input, batch)
        binding.bind_output(graph.output)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    pinned: dict[tuple[int, ...], np.ndarray] = {}

    def from_pinned(batch: np.ndarray) -> np.ndarray:
        buffer = pinned.get(batch.shape)
        if buffer is None:
            buffer = pinned[batch.shape] = pinned_zeros(batch.shape, batch.dtype)
        buffer[:] = batch
        return from_host(buffer)

    resident: dict[int, object] = {}

    def on_device(batch: np.ndarray) -> None:
        value = resident.get(id(batch))
        if value is None:  # one copy per distinct batch, outside the timing
            value = resident[id(batch)] = ort.OrtValue.ortvalue_from_numpy(
                batch, device.ort_device, 0
            )
        binding = session.io_binding()
        binding.bind_ortvalue_input(graph.input, value)
        binding.bind_output(graph.output, device.ort_device)
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    halves = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="overlap")

    def overlapped(batch: np.ndarray) -> None:
        """The batch as two runs at once from two threads: whether one run's host-to-device
        copy overlaps the other's compute (what a second inference thread would gain)."""
        middle = max(1, len(batch) // 2)
        list(
            halves.map(from_pinned, [batch[:middle], batch[middle:]] if len(batch) > 1 else [batch])
        )

    return {
        "onnxruntime": from_host,
        "onnxruntime pinned input": from_pinned,
        "onnxruntime pinned, 2 runs at once": overlapped,
        "onnxruntime on-device input": on_device,
    }


def torch_towers(manifest: Manifest, device: Device, dtype_name: str):
    """The package's checkpoint in PyTorch eager with SDPA attention (what a user runs)."""
    import torch

    from lookalike.export.source import load_checkpoint
    from lookalike.export.towers import FromPixels

    source = manifest.source
    if source.kind == "random-init":  # same seed, same weights
        checkpoint = load_checkpoint(random_init=source.id, text="text" in manifest.graphs)
    else:
        checkpoint = load_checkpoint(source.id, revision=source.revision)
    dtype = getattr(torch, dtype_name)
    towers = [checkpoint.image.tower] + ([checkpoint.text.tower] if checkpoint.text else [])
    modules = []
    for tower in towers:
        for part in tower.module.modules():  # the Hugging Face models inside each tower
            if hasattr(part, "set_attn_implementation"):
                part.set_attn_implementation("sdpa")
        modules.append(tower.module.to(device.torch_device, dtype).eval())
    if PixelLayout.of(manifest.graphs["image"]) is PixelLayout.UINT8_NHWC:  # as the graph takes
        as_graph = FromPixels(modules[0], checkpoint.image.preprocess)
        modules[0] = as_graph.to(device.torch_device, dtype)
    return modules[0], (modules[1] if len(modules) > 1 else None)


def torch_image_embed(model, device: Device) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    dtype = next(model.parameters()).dtype

    def embed(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            pixels = torch.from_numpy(batch).to(device.torch_device)
            pixels = pixels.to(dtype) if pixels.is_floating_point() else pixels
            return model(pixels).float().cpu().numpy()

    return embed


def torch_resident_embed(model, device: Device) -> Callable[[np.ndarray], None]:
    """PyTorch on pixels already on the GPU, in the model's dtype (the GPU's own work)."""
    import torch

    dtype = next(model.parameters()).dtype
    resident: dict[int, object] = {}

    def embed(batch: np.ndarray) -> None:
        pixels = resident.get(id(batch))
        if pixels is None:  # one copy per distinct batch, outside the timing
            pixels = resident[id(batch)] = torch.from_numpy(batch).to(device.torch_device, dtype)
        with torch.inference_mode():
            model(pixels)
        device.synchronize()

    return embed


def torch_text_embed(model, device: Device) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def embed(ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(ids).to(device.torch_device)).float().cpu().numpy()

    return embed


def throughput_rows(
    runs: dict[str, Callable[[np.ndarray], object]],
    batches: dict[int, np.ndarray],
    *,
    precision: str,
    flops_per_input: float,
    peak: float,
    min_seconds: float,
) -> list[dict]:
    rows = []
    for backend, run in runs.items():
        for size, batch in batches.items():
            timing = measure(lambda run=run, batch=batch: run(batch), min_seconds=min_seconds)
            rate = size / timing.median
            rows.append(
                {
                    "backend": backend,
                    "precision": precision,
                    "batch": size,
                    "per_s": rate,
                    "latency_ms": timing.median * 1e3,
                    "p99_ms": timing.percentile(99) * 1e3,
                    "of_dense_fp16_peak": rate * flops_per_input / peak,
                    "runs": len(timing.seconds),
                }
            )
            log.warning("%s %s batch %d: %.0f/s", backend, precision, size, rate)
    return rows


def photo_batch(manifest: Manifest) -> np.ndarray:
    """The offline sample photographs and their mirror images, preprocessed as served."""
    from PIL import ImageOps

    from benchmarks.photos import jpeg_bytes, sample_photos
    from lookalike.server.embed.preprocess import Preprocessor

    preprocess = Preprocessor.for_package(manifest)
    images = [image for _, photo in sample_photos() for image in (photo, ImageOps.mirror(photo))]
    return np.stack([preprocess(jpeg_bytes(image)) for image in images])


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def invariance(embed: Callable[[np.ndarray], np.ndarray], photos: np.ndarray) -> dict:
    """Each photo alone, and the same photos at the start of a batch of INVARIANCE_BATCH
    (the rest other pixels): the largest difference, and whether each photo's own batched
    copy is still its nearest neighbour among the batch's vectors."""
    rng = np.random.default_rng(3)
    filler = rng.normal(size=(INVARIANCE_BATCH - len(photos), *photos.shape[1:]))
    if photos.dtype == np.uint8:
        filler = np.clip(128 + 64 * filler, 0, 255).round()
    batch = np.concatenate([photos, filler.astype(photos.dtype)])
    alone = np.concatenate([embed(photo[None]) for photo in photos])
    together = embed(batch)
    alone = alone / np.linalg.norm(alone, axis=1, keepdims=True)
    together = together / np.linalg.norm(together, axis=1, keepdims=True)
    nearest = np.argmax(alone @ together.T, axis=1)
    return {
        "max_abs_diff": float(np.max(np.abs(together[: len(photos)] - alone))),
        "own_copy_ranks_first": int(np.sum(nearest == np.arange(len(photos)))),
        "photos": len(photos),
    }


def position_spread(embed: Callable[[np.ndarray], np.ndarray], photo: np.ndarray, rows: int):
    """One photo at every position of a run of `rows`: the largest difference between rows."""
    out = embed(np.repeat(photo[None], rows, axis=0))
    return float(np.max(np.abs(out - out[0])))


def cuda_without_gpu(model_dir: Path) -> dict:
    """Load the engine with --provider cuda and no visible GPU: it must refuse, loudly."""
    code = (
        "from pathlib import Path\n"
        "from lookalike.server.embed.onnx_engine import OnnxEngine, EngineSettings, Provider\n"
        f"OnnxEngine(Path({str(model_dir)!r}), EngineSettings(provider=Provider.CUDA))\n"
    )
    environment = dict(os.environ, CUDA_VISIBLE_DEVICES="-1")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300
    )
    last = [line for line in result.stderr.splitlines() if line.strip()][-1:]
    return {"exit_code": result.returncode, "error": last[0] if last else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/gpu-vit-b-32"))
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--min-seconds", type=float, default=0.6, help="per measurement")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: CPU, tiny sizes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    device = Device(args.dry_run)
    run = Run(
        model_dir=args.model_dir,
        device=device,
        batch_sizes=(1, 4) if args.dry_run else BATCH_SIZES,
        text_batch=4 if args.dry_run else TEXT_BATCH,
        min_seconds=0.1 if args.dry_run else args.min_seconds,
    )
    started = time.perf_counter()
    try:
        run.image_tower()
        run.pytorch()
        run.text_tower()
        if not args.dry_run:
            run.results["cuda_without_gpu"] = cuda_without_gpu(args.model_dir)
    except Exception as exc:  # keep what was measured; say where it stopped
        log.exception("stopped early")
        run.results["stopped_early"] = repr(exc)
    run.results["seconds"] = time.perf_counter() - started
    run.report()
    path = write_result(
        "gpu-engine",
        args.out,
        settings={
            "model_dir": str(args.model_dir),
            "model": run.manifest.source.id,
            "flops_per_image": run.flops,
            "batch_sizes": list(run.batch_sizes),
            "text_batch": run.text_batch,
            "min_seconds": run.min_seconds,
            "dry_run": args.dry_run,
            "cuda_options": CUDA_OPTIONS,
        },
        results=run.results,
    )
    plot(run.results, path.with_suffix(".png"))
    print(f"wrote {path} and its plot")


PLOTTED = (
    "onnxruntime",
    "onnxruntime on-device input",
    "pytorch eager",
    "pytorch eager on-device input",
)


def plot(results: dict, path: Path) -> None:
    """Images/s against batch size per backend, fp16 and fp32 side by side, with the rate the
    dense fp16 matrix product allows."""
    from benchmarks.common import figure_file

    rows = results["image"]
    with figure_file(path, columns=2, size=(12, 4.5)) as axes:
        for axis, precision in zip(axes, ("fp16", "fp32"), strict=True):
            for backend in PLOTTED:
                points = [
                    (r["batch"], r["per_s"])
                    for r in rows
                    if r["backend"] == backend and r["precision"] == precision
                ]
                if points:
                    axis.plot(*zip(*points, strict=True), marker="o", label=backend)
            # images/s the dense fp16 matrix rate allows
            ceiling = next(
                (r["per_s"] / r["of_dense_fp16_peak"] for r in rows if r["of_dense_fp16_peak"]),
                None,
            )
            if ceiling:
                axis.axhline(ceiling, linestyle="--", color="gray", label="dense fp16 rate")
            axis.set_xscale("log", base=2)
            axis.set_xlabel("batch")
            axis.set_ylabel("images / s")
            axis.set_title(f"CLIP ViT-B/32 image tower, {precision}")
            axis.legend(fontsize=8)


class Run:
    """The measurements of one run, in the order they are taken; `results` grows with each."""

    def __init__(
        self,
        *,
        model_dir: Path,
        device: Device,
        batch_sizes: tuple[int, ...],
        text_batch: int,
        min_seconds: float,
    ) -> None:
        self.model_dir, self.device = model_dir, device
        self.batch_sizes, self.text_batch, self.min_seconds = batch_sizes, text_batch, min_seconds
        self.manifest = Manifest.load(model_dir)
        size = int(self.manifest.preprocess.image_size)
        cpu_vision, _ = torch_towers(self.manifest, Device(dry_run=True), "float32")
        from lookalike.export.towers import FromPixels

        tower = cpu_vision.tower if isinstance(cpu_vision, FromPixels) else cpu_vision
        self.flops = flops_per_image(tower, size)  # 8.82 G for ViT-B/32
        del cpu_vision
        self.peak = dense_fp16_rate(device, 1024 if device.dry_run else MATMUL_SIZE)
        log.warning("dense fp16 matrix rate: %.0f TFLOP/s", self.peak / 1e12)
        rng = np.random.default_rng(0)
        self.batches = {b: random_pixels(rng, b, self.manifest) for b in batch_sizes}
        self.photos = photo_batch(self.manifest)
        self.embedded_photos: dict[str, np.ndarray] = {}
        self.results: dict = {
            "dense_fp16_flops_per_s": self.peak,
            "image": [],
            "text": [],
            "parity": {},
            "engines": {},
        }

    def precisions(self, graph: str) -> list[Precision]:
        variants = self.manifest.graphs[graph].variants
        return [p for p in (Precision.FP16, Precision.FP32) if p in variants]

    def rows(self, runs, batches, precision: str, *, text: bool = False) -> None:
        self.results["text" if text else "image"] += throughput_rows(
            runs,
            batches,
            precision=precision,
            flops_per_input=0.0 if text else self.flops,
            peak=self.peak,
            min_seconds=self.min_seconds,
        )

    def image_tower(self) -> None:
        for precision in self.precisions("image"):
            session, graph = ort_session(self.model_dir, precision, "image", self.device)
            runs = ort_runs(session, graph, self.device)
            self.rows(runs, self.batches, precision.value)
            engine = OnnxEngine(
                self.model_dir, EngineSettings(provider=self.device.provider, precision=precision)
            )
            self.results["engines"][precision.value] = {
                "providers": list(engine.info.providers),
                "run_rows": engine.info.run_rows,
                "per_image": engine.info.per_image,
                "batch_invariance_raw_session": invariance(runs["onnxruntime"], self.photos),
                "batch_invariance_engine": invariance(engine.embed, self.photos),
                "position_spread_engine_run": position_spread(
                    engine.embed, self.photos[0], engine.info.run_rows or 8
                ),
            }
            served = {b: batch for b, batch in self.batches.items() if b in (1, 4, 256)}
            self.rows({"engine (as served)": engine.embed}, served, precision.value)
            self.embedded_photos[precision.value] = engine.embed(self.photos)
            engine.close()
        self.run_rows_sweep(self.precisions("image")[0])

    def run_rows_sweep(self, precision: Precision) -> None:
        """The engine with other fixed run sizes: a lone image's latency against throughput."""
        served = {b: batch for b, batch in self.batches.items() if b in (1, 4, 256)}
        for rows in RUN_ROWS_SWEEP:
            settings = EngineSettings(
                provider=self.device.provider, precision=precision, run_rows=rows
            )
            engine = OnnxEngine(self.model_dir, settings)
            self.rows({f"engine, runs of {rows}": engine.embed}, served, precision.value)
            self.results["engines"][f"{precision.value}, runs of {rows}"] = {
                "per_image": engine.info.per_image,
                "batch_invariance_engine": invariance(engine.embed, self.photos),
            }
            engine.close()

    def pytorch(self) -> None:
        for dtype, precision in (("float16", "fp16"), ("float32", "fp32")):
            vision, text = torch_towers(self.manifest, self.device, dtype)
            embed = torch_image_embed(vision, self.device)
            runs = {
                "pytorch eager": embed,
                "pytorch eager on-device input": torch_resident_embed(vision, self.device),
            }
            self.rows(runs, self.batches, precision)
            if text is not None:
                ids = text_ids(self.manifest, self.text_batch)
                self.rows(
                    {"pytorch eager": torch_text_embed(text, self.device)},
                    {len(ids): ids},
                    precision,
                    text=True,
                )
            if dtype == "float32":
                import torch

                torch.backends.cuda.matmul.allow_tf32 = False
                torch.backends.cudnn.allow_tf32 = False
                reference = embed(self.photos)
                for name, got in self.embedded_photos.items():
                    self.results["parity"][name] = {
                        "min_cosine_to_pytorch_fp32": min_cosine(got, reference),
                        "photos": len(self.photos),
                    }

    def text_tower(self) -> None:
        if "text" not in self.manifest.graphs:
            return
        ids = text_ids(self.manifest, self.text_batch)
        for precision in self.precisions("text"):
            settings = EngineSettings(provider=self.device.provider, precision=precision)
            engine = OnnxEngine(self.model_dir, dataclasses.replace(settings, graph="text"))
            session, graph = ort_session(self.model_dir, precision, "text", self.device)
            runs = {
                "onnxruntime": ort_runs(session, graph, self.device)["onnxruntime"],
                "engine (as served)": engine.embed,
            }
            self.rows(runs, {len(ids): ids}, precision.value, text=True)
            engine.close()

    def report(self) -> None:
        results = self.results
        print(f"dense fp16 matrix rate {self.peak / 1e12:.0f} TFLOP/s")
        print_table(
            ["backend", "precision", "batch", "images/s", "ms", "p99 ms", "of peak"],
            [
                [
                    r["backend"],
                    r["precision"],
                    r["batch"],
                    r["per_s"],
                    r["latency_ms"],
                    r["p99_ms"],
                    f"{r['of_dense_fp16_peak']:.1%}",
                ]
                for r in results["image"]
            ],
        )
        print_table(
            ["text backend", "precision", "batch", "texts/s", "ms"],
            [
                [r["backend"], r["precision"], r["batch"], r["per_s"], r["latency_ms"]]
                for r in results["text"]
            ],
        )
        for key in ("parity", "engines", "cuda_without_gpu", "stopped_early"):
            print(key, results.get(key))


def text_ids(manifest: Manifest, count: int) -> np.ndarray:
    from lookalike.server.embed.onnx_engine import TokenInputs

    tokenizer = manifest.graphs["text"].tokenizer
    assert tokenizer is not None
    return TokenInputs(tokenizer).varied(count)


if __name__ == "__main__":
    entry_point(main)
