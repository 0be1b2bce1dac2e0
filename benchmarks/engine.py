"""Model throughput: PyTorch eager fp32 vs ONNX Runtime fp32 vs int8, against this CPU's limits.

    python benchmarks/engine.py [--quick] [--out results] [--model-dir models/random-vit-b-32]
    python benchmarks/engine.py --families [vit-b-32,vit-b-16,siglip-base-patch16-224]

Same thread count and the same input tensors for every backend, in one run. The machine's own
fp32 MatMul and int8 MatMulInteger rates, measured in ONNX Runtime on ViT-shaped operands,
turn every figure into a fraction of what this CPU can do. When the package has a text tower,
also its texts/s at batch 1, 8 and 32 for the same backends, on the same token ids (real
sentences, padded to 77 tokens as the server pads them): int8 as the server runs it (one input
after another on one session) and with the parallel one-thread session the image tower uses.

`--families` compares model families instead, each a random-init preset at full size (exported
into models/random-PRESET when missing): GFLOP per image, then images/s (batch 8) and texts/s
(batch 8) for PyTorch eager fp32 and ONNX Runtime fp32 and int8 (as the server runs them), the
models interleaved in rounds so that every one sees the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    DEFAULT_MODEL_DIR,
    Timing,
    ensure_benchmark_model,
    entry_point,
    figure_file,
    measure,
    print_table,
    write_result,
)
from lookalike.export.manifest import Manifest, PixelLayout, Precision
from lookalike.export.verify import PARITY_TEXTS
from lookalike.server.embed.onnx_engine import EngineSettings, OnnxEngine

GEMM_SHAPE = (800, 768, 3072)  # 16 images x 50 tokens, ViT-B width -> MLP width
TEXT_BATCH_SIZES = (1, 8, 32)
ROUNDS = 3  # GEMM probes and model runs alternate this many times per batch size


class GemmProbe:
    """This CPU's GEMM rates in ONNX Runtime on ViT-shaped operands, weights constant.

    fp32 `MatMul` (GFLOP/s) and int8 `MatMulInteger` (GOP/s) are the limits the model figures
    are measured against. The third, ONNX Runtime's own dynamic-int8 MatMul (what
    `quantize_dynamic` produces: activations quantized at run time, per-channel weights), is
    the ceiling an int8 model can reach with these kernels. Sessions are built once, so the
    rates can be measured between the model runs: on a shared VM the CPU's speed drifts, and a
    fraction is only meaningful when both sides saw the same conditions.
    """

    def __init__(self, threads: int) -> None:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic

        m, k, n = GEMM_SHAPE
        rng = np.random.default_rng(0)
        fp32_activations = rng.normal(size=(m, k)).astype(np.float32)
        int8_activations = rng.integers(0, 256, size=(m, k), dtype=np.uint8)
        fp32_matmul = _gemm_model("MatMul", fp32_activations, rng.normal(size=(k, n)))
        int8_weights = rng.integers(-128, 128, size=(k, n), dtype=np.int8)
        with tempfile.TemporaryDirectory() as scratch, _quiet_quantizer():
            quantized = Path(scratch, "dynamic_int8.onnx")
            quantize_dynamic(
                fp32_matmul, str(quantized), per_channel=True, weight_type=QuantType.QInt8
            )
            dynamic_int8 = onnx.load(str(quantized))
        cases = {
            "fp32_matmul_gflops": (fp32_matmul, fp32_activations),
            "int8_matmulinteger_gops": (
                _gemm_model("MatMulInteger", int8_activations, int8_weights),
                int8_activations,
            ),
            "int8_dynamic_matmul_gops": (dynamic_int8, fp32_activations),
        }
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self._runs = {
            name: functools.partial(
                ort.InferenceSession(
                    model.SerializeToString(), options, providers=["CPUExecutionProvider"]
                ).run,
                None,
                {"a": activations},
            )
            for name, (model, activations) in cases.items()
        }

    def rates(self, min_seconds: float) -> dict[str, float]:
        m, k, n = GEMM_SHAPE
        return {
            name: 2 * m * k * n / measure(run, min_seconds=min_seconds).median / 1e9
            for name, run in self._runs.items()
        }


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer logs advice about pre-processing to the root logger; not ours to act on."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def op_breakdown(
    model: Path, pixels: np.ndarray, threads: int, runs: int, warmup: int = 2
) -> dict[str, float]:
    """Milliseconds per batch spent in each op type, from ONNX Runtime's own profiler."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch, "profile"))
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            session.run(None, {session.get_inputs()[0].name: pixels})
        events = json.loads(Path(session.end_profiling()).read_text())
    timed = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e["name"] == "model_run")
    timed = timed[warmup:]
    totals: dict[str, float] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        if any(start <= event["ts"] <= end for start, end in timed):
            op = event["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + event["dur"] / 1e3 / len(timed)
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def batch_dependent_runs(engine: OnnxEngine, threads: int) -> dict[str, Callable]:
    """The same graph run as whole batches (results depend on the batch) and image by image
    on one all-thread session: the two alternatives to the engine's parallel per-image runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        str(engine.model_file), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name

    def whole_batch(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: batch})[0]

    def sequential(batch: np.ndarray) -> np.ndarray:
        return np.concatenate([whole_batch(image[None]) for image in batch])

    return {"whole-batch": whole_batch, "sequential": sequential}


def _median_rates(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {name: float(np.median([r[name] for r in rounds])) for name in rounds[0]}


def _gemm_model(op: str, activations: np.ndarray, weights: np.ndarray) -> onnx.ModelProto:
    """`y = op(a, w)` with `w` a constant, as ONNX Runtime sees a model's weights."""
    from onnx import TensorProto, helper, numpy_helper

    if op == "MatMul":
        weights = weights.astype(np.float32)
    out_type = TensorProto.FLOAT if op == "MatMul" else TensorProto.INT32
    m, n = activations.shape[0], weights.shape[1]
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "w"], ["y"])],
        "gemm",
        [
            helper.make_tensor_value_info(
                "a", helper.np_dtype_to_tensor_dtype(activations.dtype), list(activations.shape)
            )
        ],
        [helper.make_tensor_value_info("y", out_type, [m, n])],
        [numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def pytorch_checkpoint(manifest: Manifest, threads: int):
    """The checkpoint the package came from, in PyTorch eager fp32 (the usual baseline)."""
    import torch

    from lookalike.export.source import load_checkpoint

    torch.set_num_threads(threads)
    source = manifest.source
    text = "text" in manifest.graphs
    if source.kind == "random-init":  # same seed, same weights
        return load_checkpoint(random_init=source.id, text=text)
    return load_checkpoint(source.id, revision=source.revision, text=text)


def pytorch_image_embed(
    checkpoint, layout: PixelLayout = PixelLayout.FLOAT32_NCHW
) -> Callable[[np.ndarray], np.ndarray]:
    """PyTorch's image tower, taking pixels as an image graph of `layout` takes them (uint8
    pixels go through the same rescaling and normalisation as the graph's first operations)."""
    import torch

    from lookalike.export.towers import FromPixels

    tower = checkpoint.image.tower.module
    if layout is PixelLayout.UINT8_NHWC:
        tower = FromPixels(tower, checkpoint.image.preprocess).eval()

    def embed(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return tower(torch.from_numpy(batch)).numpy()

    return embed


def random_pixels(rng: np.random.Generator, count: int, manifest: Manifest) -> np.ndarray:
    """`count` noise images as the package's image graph takes them."""
    size = int(manifest.preprocess.image_size)
    if PixelLayout.of(manifest.graphs["image"]) is PixelLayout.UINT8_NHWC:
        return rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)
    return rng.normal(size=(count, 3, size, size)).astype(np.float32)


def text_runs(
    model_dir: Path, checkpoint, threads: int, batch_sizes: list[int], min_seconds: float
) -> list[dict]:
    """Texts/s of the text tower per backend and batch size, interleaved in rounds."""
    import torch

    text = checkpoint.text
    sentences = list(PARITY_TEXTS) * (max(batch_sizes) // len(PARITY_TEXTS) + 1)
    all_ids = text.token_ids(sentences)

    def torch_embed(ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return text.tower.module(torch.from_numpy(ids)).numpy()

    backends: dict[str, Callable[[np.ndarray], np.ndarray]] = {"pytorch-eager-fp32": torch_embed}
    for name, precision, parallel in (
        ("onnxruntime-fp32", Precision.FP32, True),
        ("onnxruntime-int8", Precision.INT8, False),  # the server's: one session
        ("onnxruntime-int8-parallel", Precision.INT8, True),  # + a one-thread session
    ):
        settings = EngineSettings(
            precision=precision,
            intra_op_threads=threads,
            graph="text",
            parallel_per_input=parallel,
        )
        backends[name] = OnnxEngine(model_dir, settings).embed
    results = []
    for batch_size in batch_sizes:
        ids = all_ids[:batch_size]
        reference = torch_embed(ids)
        seconds: dict[str, list[float]] = {name: [] for name in backends}
        for round_ in range(1, ROUNDS + 1):
            print(f"  text batch {batch_size}, round {round_}/{ROUNDS} ...", flush=True)
            for name, embed in backends.items():
                run = functools.partial(embed, ids)
                seconds[name].extend(measure(run, min_seconds=min_seconds / ROUNDS).seconds)
        for name, embed in backends.items():
            timing = Timing(tuple(seconds[name]))
            embeds = embed(ids)
            results.append(
                {
                    "backend": name,
                    "batch_size": batch_size,
                    "texts_per_s": batch_size / timing.median,
                    "latency_ms_p50": timing.median * 1e3,
                    "runs": len(timing.seconds),
                    "min_cosine_to_pytorch": float(np.min(np.sum(embeds * reference, axis=1))),
                }
            )
    baseline = {r["batch_size"]: r["texts_per_s"] for r in results if "pytorch" in r["backend"]}
    for result in results:
        result["speedup_vs_pytorch"] = result["texts_per_s"] / baseline[result["batch_size"]]
    return results


FAMILY_PRESETS = ("vit-b-32", "vit-b-16", "siglip-base-patch16-224", "openclip-vit-b-32")
FAMILY_BATCH = 8


def family_runs(presets: list[str], threads: int, min_seconds: float) -> list[dict]:
    """Per preset and backend: GFLOP/image, images/s and texts/s at FAMILY_BATCH."""
    import torch

    from lookalike.export.pipeline import ExportRequest, run_export

    rng = np.random.default_rng(0)
    models = {}
    for preset in presets:
        model_dir = Path("models") / f"random-{preset}"
        if not (model_dir / "manifest.json").is_file():
            print(f"  exporting {preset} (random weights) into {model_dir} ...", flush=True)
            run_export(ExportRequest(output=model_dir, random_init=preset))
        manifest = Manifest.load(model_dir)
        checkpoint = pytorch_checkpoint(manifest, threads)
        size = int(manifest.preprocess.image_size)
        text = checkpoint.text
        ids = text.token_ids((list(PARITY_TEXTS) * FAMILY_BATCH)[:FAMILY_BATCH])

        def torch_text(batch: np.ndarray, tower=text.tower.module) -> np.ndarray:
            with torch.inference_mode():
                return tower(torch.from_numpy(batch)).numpy()

        layout = PixelLayout.of(manifest.graphs["image"])
        backends = {"pytorch-eager-fp32": (pytorch_image_embed(checkpoint, layout), torch_text)}
        for precision in (Precision.FP32, Precision.INT8):
            image = OnnxEngine(
                model_dir, EngineSettings(precision=precision, intra_op_threads=threads)
            )
            texts = OnnxEngine(
                model_dir,
                EngineSettings(
                    precision=precision,
                    intra_op_threads=threads,
                    graph="text",
                    parallel_per_input=False,
                ),
            )
            backends[f"onnxruntime-{precision.value}"] = (image.embed, texts.embed)
        models[preset] = {
            "family": manifest.family,
            "gflop_per_image": flops_per_image(checkpoint.image.tower.module, size) / 1e9,
            "pixels": random_pixels(rng, FAMILY_BATCH, manifest),
            "ids": ids,
            "backends": backends,
        }
    seconds = {
        (preset, name, kind): []
        for preset, model in models.items()
        for name in model["backends"]
        for kind in ("image", "text")
    }
    for round_ in range(1, ROUNDS + 1):
        print(f"  families, round {round_}/{ROUNDS} ...", flush=True)
        for preset, model in models.items():
            for name, (image_embed, text_embed) in model["backends"].items():
                for kind, embed, inputs in (
                    ("image", image_embed, model["pixels"]),
                    ("text", text_embed, model["ids"]),
                ):
                    run = functools.partial(embed, inputs)
                    timing = measure(run, min_seconds=min_seconds / ROUNDS)
                    seconds[(preset, name, kind)].extend(timing.seconds)
    results = []
    for preset, model in models.items():
        for name in model["backends"]:
            image, text = (Timing(tuple(seconds[(preset, name, k)])) for k in ("image", "text"))
            results.append(
                {
                    "preset": preset,
                    "family": model["family"],
                    "gflop_per_image": model["gflop_per_image"],
                    "backend": name,
                    "batch_size": FAMILY_BATCH,
                    "images_per_s": FAMILY_BATCH / image.median,
                    "texts_per_s": FAMILY_BATCH / text.median,
                }
            )
    for result in results:
        baseline = next(
            r for r in results if r["preset"] == result["preset"] and "pytorch" in r["backend"]
        )
        result["images_vs_pytorch"] = result["images_per_s"] / baseline["images_per_s"]
        result["texts_vs_pytorch"] = result["texts_per_s"] / baseline["texts_per_s"]
    return results


def families_main(presets: list[str], args: argparse.Namespace, min_seconds: float) -> None:
    results = family_runs(presets, args.threads, min_seconds)
    print()
    print_table(
        ("model", "family", "GFLOP/img", "backend", "img/s", "vs PyTorch", "texts/s", "vs PyTorch"),
        [
            (
                r["preset"],
                r["family"],
                r["gflop_per_image"],
                r["backend"],
                r["images_per_s"],
                f"{r['images_vs_pytorch']:.2f}x",
                r["texts_per_s"],
                f"{r['texts_vs_pytorch']:.2f}x",
            )
            for r in results
        ],
    )
    settings = {
        "presets": presets,
        "random_weights": True,
        "threads": args.threads,
        "batch_size": FAMILY_BATCH,
        "min_seconds": min_seconds,
    }
    path = write_result("engine-families", args.out, settings=settings, results=results)
    print(f"\nwrote {path}")


def flops_per_image(model, image_size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, image_size, image_size))
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batch-sizes", default="1,8,16,32")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=4.0,
        help="per backend and batch size, split across the rounds",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: batches 1 and 8, short")
    parser.add_argument(
        "--families",
        nargs="?",
        const=",".join(FAMILY_PRESETS),
        metavar="PRESETS",
        help=f"compare model families instead (default: {','.join(FAMILY_PRESETS)})",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    batch_sizes = [1, 8] if args.quick else [int(b) for b in args.batch_sizes.split(",")]
    min_seconds = 0.3 if args.quick else args.min_seconds
    if args.families:
        families_main(args.families.split(","), args, min_seconds)
        return

    model_dir = ensure_benchmark_model(args.model_dir)
    manifest = Manifest.load(model_dir)
    probe = GemmProbe(args.threads)
    checkpoint = pytorch_checkpoint(manifest, args.threads)
    torch_embed = pytorch_image_embed(checkpoint, PixelLayout.of(manifest.graphs["image"]))
    size = int(manifest.preprocess.image_size)
    flops = flops_per_image(checkpoint.image.tower.module, size)

    backends = {"pytorch-eager-fp32": (torch_embed, None)}
    for precision in manifest.graphs["image"].variants:
        engine = OnnxEngine(
            model_dir, EngineSettings(precision=precision, intra_op_threads=args.threads)
        )
        if engine.info.providers[0] == "CPUExecutionProvider" and precision is Precision.FP16:
            continue  # fp16 is a GPU variant; on CPU it only measures casts
        backends[f"onnxruntime-{precision.value}"] = (engine.embed, engine)
        if engine.info.per_image:  # what batch invariance costs: the alternatives, same session
            for name, embed in batch_dependent_runs(engine, args.threads).items():
                backends[f"onnxruntime-{precision.value}-{name}"] = (embed, engine)

    rng = np.random.default_rng(0)
    rows, results, round_rates = [], [], []
    for batch_size in batch_sizes:
        pixels = random_pixels(rng, batch_size, manifest)
        reference = torch_embed(pixels)
        seconds: dict[str, list[float]] = {name: [] for name in backends}
        batch_rates = []
        for round_ in range(1, ROUNDS + 1):  # interleaved, so drift hits every backend alike
            print(f"  batch {batch_size}, round {round_}/{ROUNDS} ...", flush=True)
            batch_rates.append(probe.rates(min_seconds / ROUNDS))
            for name, (embed, _) in backends.items():
                run = functools.partial(embed, pixels)
                seconds[name].extend(measure(run, min_seconds=min_seconds / ROUNDS).seconds)
        round_rates.extend(batch_rates)
        rates = _median_rates(batch_rates)
        for name, (embed, engine) in backends.items():
            timing = Timing(tuple(seconds[name]))
            images_per_s = batch_size / timing.median
            limit = (
                rates["int8_matmulinteger_gops"] if "int8" in name else rates["fp32_matmul_gflops"]
            )
            fraction = images_per_s * flops / 1e9 / limit
            embeds = embed(pixels)
            cosine = float(np.min(np.sum(embeds * reference, axis=1)))
            alone = np.concatenate([embed(image[None]) for image in pixels])
            batch_effect = float(np.abs(embeds - alone).max())
            provider = engine.info.providers[0] if engine else "torch-cpu"
            results.append(
                {
                    "backend": name,
                    "provider": provider,
                    "batch_size": batch_size,
                    "images_per_s": images_per_s,
                    "latency_ms_p50": timing.median * 1e3,
                    "latency_ms_p90": timing.percentile(90) * 1e3,
                    "runs": len(timing.seconds),
                    "gemm_rates": rates,
                    "fraction_of_gemm_rate": fraction,
                    "min_cosine_to_pytorch": cosine,
                    "max_abs_diff_batched_vs_alone": batch_effect,
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
                    f"{batch_effect:.0e}",
                )
            )
    rates = _median_rates(round_rates)
    profile_batch = max(batch_sizes)
    pixels = random_pixels(rng, profile_batch, manifest)
    breakdowns = {}
    for name, (_, engine) in backends.items():
        if engine is not None and name == f"onnxruntime-{engine.info.precision.value}":
            print(f"  profiling {name} at batch {profile_batch} ...", flush=True)
            breakdowns[name] = op_breakdown(
                engine.model_file, pixels, args.threads, runs=2 if args.quick else 8
            )
    baseline = {
        r["batch_size"]: r["images_per_s"] for r in results if r["backend"].startswith("pytorch")
    }
    for result in results:
        result["speedup_vs_pytorch"] = result["images_per_s"] / baseline[result["batch_size"]]
    texts = []
    if checkpoint.text is not None:
        text_batches = [1, 8] if args.quick else list(TEXT_BATCH_SIZES)
        texts = text_runs(model_dir, checkpoint, args.threads, text_batches, min_seconds)

    print()
    print(
        f"GEMM rates: fp32 {rates['fp32_matmul_gflops']:.0f} GFLOP/s, "
        f"int8 {rates['int8_matmulinteger_gops']:.0f} GOP/s "
        f"(ONNX Runtime's dynamic-int8 MatMul: {rates['int8_dynamic_matmul_gops']:.0f} GOP/s, "
        f"{rates['int8_dynamic_matmul_gops'] / rates['int8_matmulinteger_gops']:.0%}); "
        f"model {flops / 1e9:.2f} GFLOP/image"
    )
    print_table(
        ("backend", "batch", "img/s", "ms/batch", "of GEMM", "min cos", "batch effect"), rows
    )
    if texts:
        print("\ntext tower (77 tokens per text):")
        print_table(
            ("backend", "batch", "texts/s", "ms/batch", "vs PyTorch", "min cos"),
            [
                (
                    r["backend"],
                    r["batch_size"],
                    r["texts_per_s"],
                    r["latency_ms_p50"],
                    f"{r['speedup_vs_pytorch']:.2f}x",
                    f"{r['min_cosine_to_pytorch']:.5f}",
                )
                for r in texts
            ],
        )
    for name, breakdown in breakdowns.items():
        total = sum(breakdown.values())
        print(f"\n{name}, batch {profile_batch}: {total:.1f} ms in kernels (ONNX Runtime profiler)")
        print_table(
            ("op", "ms/batch", "share"),
            [(op, ms, f"{ms / total:.1%}") for op, ms in breakdown.items() if ms / total >= 0.001],
        )
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
        results={
            "gemm_rates": rates,
            "flops_per_image": flops,
            "runs": results,
            "text_runs": texts,
            "op_breakdown_ms": {"batch_size": profile_batch, "backends": breakdowns},
        },
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
            ("int8_dynamic_matmul_gops", "-.", "ORT dynamic-int8 MatMul"),
        ):
            axis.axhline(rates[key] * 1e9 / flops, linestyle=style, color="gray", label=label)
        axis.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
        axis.set_ylabel("images / s")
        axis.set_title("CLIP image tower throughput (same threads, same inputs)")
        axis.legend(fontsize=8)


if __name__ == "__main__":
    entry_point(main)
