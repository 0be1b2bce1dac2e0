"""Preprocessing cost: CLIPImageProcessor vs Lookalike's exact and fast modes, per image size.

    python benchmarks/preprocess.py [--quick] [--out results] [--model-dir models/random-vit-b-32]

Times decode + resize + crop + normalise for JPEGs of 640x480, 1920x1080 and 4000x3000 (12 MP)
and a 1920x1080 PNG, single-threaded, and reports the cosine between the embeddings of the
fast and exact tensors through the benchmark model.
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    DEFAULT_MODEL_DIR,
    ensure_benchmark_model,
    entry_point,
    figure_file,
    measure,
    print_table,
    write_result,
)
from lookalike.export.manifest import Manifest, Precision
from lookalike.server.embed.onnx_engine import EngineSettings, OnnxEngine
from lookalike.server.embed.preprocess import PreprocessMode, Preprocessor

SIZES = {
    "jpeg-640x480": ((640, 480), "JPEG"),
    "jpeg-1920x1080": ((1920, 1080), "JPEG"),
    "jpeg-4000x3000": ((4000, 3000), "JPEG"),
    "png-1920x1080": ((1920, 1080), "PNG"),
}


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour fields with grain and edges: encodes to photo-like sizes."""
    rng = np.random.default_rng(seed)
    field = rng.normal(size=(height // 60 + 2, width // 60 + 2, 3)).cumsum(0).cumsum(1)
    field = ((field - field.min()) / np.ptp(field) * 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC))
    grain = rng.integers(-10, 11, size=(height, width, 3), dtype=np.int16)
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


def encoded(size: tuple[int, int], fmt: str, seed: int) -> bytes:
    buffer = io.BytesIO()
    photo_like(*size, seed).save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--min-seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--quick", action="store_true", help="smoke test: short measurements")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    min_seconds = 0.2 if args.quick else args.min_seconds

    from transformers import CLIPImageProcessor

    model_dir = ensure_benchmark_model(args.model_dir)
    manifest = Manifest.load(model_dir)
    spec = manifest.preprocess
    reference = CLIPImageProcessor(
        size={"shortest_edge": spec.resize_shortest_edge},
        crop_size={"height": spec.crop_height, "width": spec.crop_width},
        image_mean=list(spec.mean),
        image_std=list(spec.std),
    )
    modes = {mode: Preprocessor.for_package(manifest, mode=mode) for mode in PreprocessMode}
    engine = OnnxEngine(model_dir, EngineSettings(precision=Precision.FP32))

    def with_reference(data: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(data))
        return reference(images=image, return_tensors="np")["pixel_values"][0]

    methods = {
        "CLIPImageProcessor": with_reference,
        "lookalike-exact": modes[PreprocessMode.EXACT],
        "lookalike-fast": modes[PreprocessMode.FAST],
    }
    rows, results = [], []
    for seed, (name, (size, fmt)) in enumerate(SIZES.items()):
        data = encoded(size, fmt, seed)
        print(f"  {name} ({len(data) / 1e6:.2f} MB) ...", flush=True)
        ms = {}
        for method, run in methods.items():
            ms[method] = measure(functools.partial(run, data), min_seconds=min_seconds).median * 1e3
        exact, fast = engine.embed(
            np.stack([methods["lookalike-exact"](data), methods["lookalike-fast"](data)])
        )
        cosine = float(np.dot(exact, fast))
        speedup = ms["lookalike-exact"] / ms["lookalike-fast"]
        results.append(
            {
                "image": name,
                "bytes": len(data),
                "ms_per_image": ms,
                "fast_speedup_vs_exact": speedup,
                "fast_speedup_vs_reference": ms["CLIPImageProcessor"] / ms["lookalike-fast"],
                "embedding_cosine_fast_vs_exact": cosine,
            }
        )
        rows.append((name, *ms.values(), f"{speedup:.1f}x", f"{cosine:.5f}"))

    print()
    print_table(("image", *(f"{m} ms" for m in methods), "fast/exact", "cos(fast,exact)"), rows)
    settings = {
        "model_dir": str(model_dir),
        "model": manifest.source.id,
        "threads": 1,
        "min_seconds": min_seconds,
        "quick": args.quick,
    }
    path = write_result("preprocess", args.out, settings=settings, results=results)
    plot(results, list(methods), path.with_suffix(".png"))
    print(f"\nwrote {path} and {path.with_suffix('.png')}")


def plot(results: list[dict], methods: list[str], path: Path) -> None:
    width = 0.8 / len(methods)
    with figure_file(path) as (axis,):
        for i, method in enumerate(methods):
            positions = [x + (i - (len(methods) - 1) / 2) * width for x in range(len(results))]
            axis.bar(positions, [r["ms_per_image"][method] for r in results], width, label=method)
        axis.set_xticks(range(len(results)), [r["image"] for r in results])
        axis.set_yscale("log")
        axis.set_ylabel("ms per image (log scale, 1 thread)")
        axis.set_title("Preprocessing: decode, resize, crop, normalise")
        axis.legend(fontsize=8)


if __name__ == "__main__":
    entry_point(main)
