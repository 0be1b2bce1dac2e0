"""Model throughput: PyTorch eager fp32 vs ONNX Runtime fp32 vs int8, against this CPU's limits.

    python benchmarks/engine.py [--quick] [--out results] [--model-dir models/random-vit-b-32]

Same thread count and the same input tensors for every backend, in one run. The machine's own
fp32 MatMul and int8 MatMulInteger rates, measured in ONNX Runtime on ViT-shaped operands,
turn every figure into a fraction of what this CPU can do.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    DEFAULT_MODEL_DIR,
    ensure_benchmark_model,
    figure_file,
    measure,
    print_table,
    write_result,
)
from export.manifest import Manifest, Precision
from server.engine import Engine, EngineSettings

GEMM_SHAPE = (800, 768, 3072)  # 16 images x 50 tokens, ViT-B width -> MLP width
PLOT_FILE = "engine.png"


def gemm_rates(threads: int, min_seconds: float) -> dict[str, float]:
    """fp32 MatMul GFLOP/s and int8 MatMulInteger GOP/s in ONNX Runtime, weights constant."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = GEMM_SHAPE
    rng = np.random.default_rng(0)
    cases = {
        "fp32_matmul_gflops": (
            "MatMul",
            rng.normal(size=(m, k)).astype(np.float32),
            rng.normal(size=(k, n)).astype(np.float32),
            TensorProto.FLOAT,
        ),
        "int8_matmulinteger_gops": (
            "MatMulInteger",
            rng.integers(0, 256, size=(m, k), dtype=np.uint8),
            rng.integers(-128, 128, size=(k, n), dtype=np.int8),
            TensorProto.INT32,
        ),
    }
    rates = {}
    for name, (op, activations, weights, out_type) in cases.items():
        graph = helper.make_graph(
            [helper.make_node(op, ["a", "w"], ["y"])],
            "gemm",
            [
                helper.make_tensor_value_info(
                    "a", helper.np_dtype_to_tensor_dtype(activations.dtype), [m, k]
                )
            ],
            [helper.make_tensor_value_info("y", out_type, [m, n])],
            [numpy_helper.from_array(weights, "w")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        timing = measure(
            functools.partial(session.run, None, {"a": activations}), min_seconds=min_seconds
        )
        rates[name] = 2 * m * k * n / timing.median / 1e9
    return rates


def pytorch_model(manifest: Manifest, threads: int):
    """The checkpoint the package came from, in PyTorch eager fp32 (the usual baseline)."""
    import torch

    from export.source import load_checkpoint

    torch.set_num_threads(threads)
    source = manifest.source
    if source.kind == "random-init":
        checkpoint = load_checkpoint(random_init=source.id)  # same seed, same weights
    else:
        checkpoint = load_checkpoint(source.id, revision=source.revision)
    model = checkpoint.model

    def embed(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(pixel_values=torch.from_numpy(batch)).image_embeds
            return torch.nn.functional.normalize(out, dim=-1).numpy()

    return model, embed


def flops_per_image(model, image_size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(pixel_values=torch.zeros(1, 3, image_size, image_size))
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batch-sizes", default="1,8,16,32")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--quick", action="store_true", help="smoke test: batches 1 and 8, short")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    batch_sizes = [1, 8] if args.quick else [int(b) for b in args.batch_sizes.split(",")]
    min_seconds = 0.3 if args.quick else args.min_seconds

    model_dir = ensure_benchmark_model(args.model_dir)
    manifest = Manifest.load(model_dir)
    print(f"measuring this CPU's GEMM rates ({args.threads} threads) ...", flush=True)
    rates = gemm_rates(args.threads, min_seconds)
    model, torch_embed = pytorch_model(manifest, args.threads)
    size = int(manifest.preprocess.image_size)
    flops = flops_per_image(model, size)

    backends = {"pytorch-eager-fp32": (torch_embed, None)}
    for precision in manifest.graphs["image"].variants:
        engine = Engine(
            model_dir, EngineSettings(precision=precision, intra_op_threads=args.threads)
        )
        if engine.providers[0] == "CPUExecutionProvider" and precision is Precision.FP16:
            continue  # fp16 is a GPU variant; on CPU it only measures casts
        backends[f"onnxruntime-{precision.value}"] = (engine.embed, engine)

    rng = np.random.default_rng(0)
    rows, results = [], []
    for batch_size in batch_sizes:
        pixels = rng.normal(size=(batch_size, 3, size, size)).astype(np.float32)
        reference = torch_embed(pixels)
        for name, (embed, engine) in backends.items():
            print(f"  {name} batch {batch_size} ...", flush=True)
            timing = measure(functools.partial(embed, pixels), min_seconds=min_seconds)
            images_per_s = batch_size / timing.median
            limit = (
                rates["int8_matmulinteger_gops"] if "int8" in name else rates["fp32_matmul_gflops"]
            )
            fraction = images_per_s * flops / 1e9 / limit
            cosine = float(np.min(np.sum(embed(pixels) * reference, axis=1)))
            provider = engine.providers[0] if engine else "torch-cpu"
            results.append(
                {
                    "backend": name,
                    "provider": provider,
                    "batch_size": batch_size,
                    "images_per_s": images_per_s,
                    "latency_ms_p50": timing.median * 1e3,
                    "latency_ms_p90": timing.percentile(90) * 1e3,
                    "runs": len(timing.seconds),
                    "fraction_of_gemm_rate": fraction,
                    "min_cosine_to_pytorch": cosine,
                }
            )
            rows.append(
                (
                    name,
                    batch_size,
                    images_per_s,
                    timing.median * 1e3,
                    f"{fraction:.0%}",
                    f"{cosine:.5f}",
                )
            )
    baseline = {
        r["batch_size"]: r["images_per_s"] for r in results if r["backend"].startswith("pytorch")
    }
    for result in results:
        result["speedup_vs_pytorch"] = result["images_per_s"] / baseline[result["batch_size"]]

    print()
    print(
        f"GEMM rates: fp32 {rates['fp32_matmul_gflops']:.0f} GFLOP/s, "
        f"int8 {rates['int8_matmulinteger_gops']:.0f} GOP/s; model {flops / 1e9:.2f} GFLOP/image"
    )
    print_table(("backend", "batch", "img/s", "ms/batch", "of GEMM", "min cos"), rows)
    settings = {
        "model_dir": str(model_dir),
        "model": manifest.source.id,
        "random_weights": manifest.source.random_weights,
        "threads": args.threads,
        "batch_sizes": batch_sizes,
        "min_seconds": min_seconds,
        "quick": args.quick,
        "gemm_shape_mkn": GEMM_SHAPE,
    }
    path = write_result(
        "engine",
        args.out,
        settings=settings,
        results={"gemm_rates": rates, "flops_per_image": flops, "runs": results},
    )
    plot(results, rates, flops, path.with_suffix(".png"))
    print(f"\nwrote {path} and {path.with_suffix('.png')}")


def plot(results: list[dict], rates: dict[str, float], flops: float, path: Path) -> None:
    backends = list(dict.fromkeys(r["backend"] for r in results))
    batches = list(dict.fromkeys(r["batch_size"] for r in results))
    width = 0.8 / len(backends)
    with figure_file(path) as (axis,):
        for i, backend in enumerate(backends):
            values = [
                next(
                    r["images_per_s"]
                    for r in results
                    if r["backend"] == backend and r["batch_size"] == b
                )
                for b in batches
            ]
            positions = [x + (i - (len(backends) - 1) / 2) * width for x in range(len(batches))]
            axis.bar(positions, values, width, label=backend)
        for key, style, label in (
            ("fp32_matmul_gflops", "--", "fp32 GEMM limit"),
            ("int8_matmulinteger_gops", ":", "int8 GEMM limit"),
        ):
            axis.axhline(rates[key] * 1e9 / flops, linestyle=style, color="gray", label=label)
        axis.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
        axis.set_ylabel("images / s")
        axis.set_title("CLIP image tower throughput (same threads, same inputs)")
        axis.legend(fontsize=8)


if __name__ == "__main__":
    main()
