"""How close the served answers are to the exact ones: each speed-up Lookalike takes (fast
preprocessing, int8 or fp16, an HNSW index in a narrower scalar type, shards) against the
reference a careful user would run (the family's own image processor, PyTorch fp32, exact search).

The collection is made from real photographs (scikit-image, scikit-learn): crops of them are the
queries; each query has five transformed copies in the collection (resized, cropped,
recompressed, flipped, colour-jittered), among distractors cut from the same photographs. Per
served configuration, over every query:

- top-1 agreement: the share of queries whose best match is the reference's;
- top-10 agreement: the mean share of the reference's top 10 in the configuration's top 10;
- copies recall@10: the share of each query's true copies in its top 10;
- score drift: the mean absolute difference between its top-10 scores and the reference's,
  rank by rank.

The served pipeline is the server's own: `Preprocessor` (fast or exact) or the device decoder of
`--image-decoder nvimgcodec` (on its CPU backend, or the GPU with `--decoder-on-gpu`),
`OnnxEngine` (one precision) and `VectorIndex` (exact, or HNSW in one dtype; 4 shards split by
`shard_of`, each shard's top 10 merged). With random weights (no download here) the
embeddings carry no meaning: what the figures show is how far each shortcut moves answers, not
how good they are.

    python benchmarks/fidelity.py [--model-dir models/random-vit-b-32] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import io
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    DEFAULT_MODEL_DIR,
    ensure_benchmark_model,
    entry_point,
    figure_file,
    print_table,
    write_result,
)
from benchmarks.engine import pytorch_checkpoint, pytorch_image_embed
from benchmarks.photos import jpeg_bytes, sample_photos
from lookalike.export.manifest import Manifest, PixelLayout, Precision
from lookalike.server.embed.device_decode import DeviceDecoder
from lookalike.server.embed.device_images import DeviceImages
from lookalike.server.embed.onnx_engine import EngineSettings, OnnxEngine
from lookalike.server.embed.preprocess import ImageLimits, PreprocessMode, Preprocessor
from lookalike.server.index.built_index import shard_of
from lookalike.server.index.settings import DTYPES, IndexSettings
from lookalike.server.index.vector_index import VectorIndex
from lookalike.server.metrics import Metrics

K = 10
NVIMGCODEC = "nvimgcodec"  # the preprocessing of --image-decoder nvimgcodec
BATCH = 16
COPIES = ("resized", "cropped", "recompressed", "flipped", "jittered")
SHARDS = (1, 4)
EXACT = "exact"  # exhaustive f32 search, what a data directory under 20,000 items does
# A data directory's server by default: fast preprocessing, int8 on a CPU, exhaustive search
DEFAULT = ("fast", "int8", EXACT, 1)
# A built index by default (lookalike build-index): the same, HNSW in bf16, here in 4 shards
BUILT_DEFAULT = ("fast", "int8", "bf16", 4)


@dataclasses.dataclass(frozen=True)
class Collection:
    queries: list[bytes]  # one crop of a photograph per query
    items: list[bytes]  # the copies of every query, then the distractors
    item_ids: list[str]
    copies_of: list[list[int]]  # per query, the rows of its copies in `items`


def make_collection(bases_per_photo: int, distractors: int, seed: int = 0) -> Collection:
    rng = np.random.default_rng(seed)
    photos = [image for _, image in sample_photos()]
    queries, items, ids, copies_of = [], [], [], []
    for p, photo in enumerate(photos):
        for b in range(bases_per_photo):
            base = _random_crop(photo, rng)
            queries.append(jpeg_bytes(base))
            copies_of.append(list(range(len(items), len(items) + len(COPIES))))
            for name, copy in zip(COPIES, _copies(base, rng), strict=True):
                items.append(copy)
                ids.append(f"photo{p:02d}-crop{b:02d}-{name}")
    for d in range(distractors):
        photo = photos[d % len(photos)]
        items.append(jpeg_bytes(_random_crop(photo, rng)))
        ids.append(f"distractor-{d:05d}")
    return Collection(queries, items, ids, copies_of)


def _random_crop(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A crop of 40-90% of the photograph's short edge, at a random place and aspect."""
    short = min(photo.size)
    width = int(short * rng.uniform(0.4, 0.9))
    height = int(min(photo.height, width * rng.uniform(0.7, 1.4)))
    left = int(rng.integers(0, photo.width - width + 1))
    top = int(rng.integers(0, photo.height - height + 1))
    crop = photo.crop((left, top, left + width, top + height))
    scale = 320 / min(crop.size)
    return crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.BICUBIC)


def _copies(base: Image.Image, rng: np.random.Generator) -> list[bytes]:
    width, height = base.size
    margin_x, margin_y = int(width * rng.uniform(0.05, 0.15)), int(height * rng.uniform(0.05, 0.15))
    jittered = ImageEnhance.Brightness(base).enhance(rng.uniform(0.8, 1.2))
    jittered = ImageEnhance.Contrast(jittered).enhance(rng.uniform(0.8, 1.2))
    jittered = ImageEnhance.Color(jittered).enhance(rng.uniform(0.7, 1.3))
    return [
        jpeg_bytes(base.resize((width // 2, height // 2), Image.BILINEAR)),
        jpeg_bytes(base.crop((margin_x, margin_y, width - margin_x, height - margin_y))),
        jpeg_bytes(base, quality=30),
        jpeg_bytes(ImageOps.mirror(base)),
        jpeg_bytes(jittered),
    ]


def batched(rows: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def embed_all(
    rows: Sequence[bytes], pixels: Callable[[Sequence[bytes]], np.ndarray], embed: Callable
) -> np.ndarray:
    return np.concatenate([embed(pixels(batch)) for batch in batched(rows, BATCH)])


@dataclasses.dataclass(frozen=True)
class Answers:
    ids: np.ndarray  # int[Q, K]: rows of the collection
    scores: np.ndarray  # float[Q, K]


def served_pipeline(
    mode: str, manifest: Manifest, engine: OnnxEngine, *, decoder_on_gpu: bool
) -> tuple[Callable[[Sequence[bytes]], object], Callable[[object], np.ndarray]]:
    """(prepare a batch of images, embed what was prepared), as the server does in `mode`:
    `fast` or `exact` Pillow preprocessing, or `nvimgcodec`: the server's own two stages of
    `--image-decoder nvimgcodec` (on the GPU, or on nvImageCodec's CPU backend), its CPU
    path in exact mode."""
    if mode != NVIMGCODEC:
        preprocess = Preprocessor.for_package(manifest, mode=PreprocessMode(mode))
        return (lambda batch: np.stack([preprocess(data) for data in batch])), engine.embed
    decoder = DeviceDecoder(manifest.preprocess, ImageLimits(), on_gpu=decoder_on_gpu)
    cpu_path = Preprocessor.for_package(manifest, mode=PreprocessMode.EXACT)
    counted = Metrics.create().decoded_images
    rows = engine.info.run_rows or BATCH
    images = DeviceImages(engine, decoder, cpu_path, rows=rows, decoded=counted)
    return (
        lambda batch: [images.prepare(data) for data in batch],
        lambda prepared: np.stack(images.embed(prepared)),
    )


def exact_answers(queries: np.ndarray, items: np.ndarray) -> Answers:
    scores = queries @ items.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    return Answers(top, np.take_along_axis(scores, top, axis=1))


def index_answers(
    queries: np.ndarray, items: np.ndarray, ids: Sequence[str], dtype: str, shards: int
) -> Answers:
    """The server's HNSW index in `dtype` (never exhaustive), in `shards` shards."""
    settings = IndexSettings(dtype=dtype, exact_search_below=0)
    rows_of = [
        [row for row, item_id in enumerate(ids) if shard_of(item_id, shards) == shard]
        for shard in range(shards)
    ]
    per_shard = []
    for rows in rows_of:
        index = VectorIndex(items.shape[1], settings)
        index.add(np.arange(len(rows), dtype=np.uint64), items[rows], threads=1)
        per_shard.append(
            [
                [(hit.score, rows[hit.key]) for hit in hits]
                for hits in (index.search(query, K) for query in queries)
            ]
        )
    merged = [
        heapq.nlargest(K, itertools.chain(*(found[q] for found in per_shard)))
        for q in range(len(queries))
    ]
    return Answers(
        np.array([[row for _, row in best] for best in merged]),
        np.array([[score for score, _ in best] for best in merged]),
    )


def agreement(
    answers: Answers, reference: Answers, copies_of: list[list[int]], similarity: np.ndarray
) -> dict:
    """`similarity`: the reference's cosine of every query to every item."""
    top10 = [len(set(a) & set(r)) / K for a, r in zip(answers.ids, reference.ids, strict=True)]
    recall = [len(set(a) & set(c)) / len(c) for a, c in zip(answers.ids, copies_of, strict=True)]
    rows = np.arange(len(answers.ids))
    return {
        "top1_agreement": float(np.mean(answers.ids[:, 0] == reference.ids[:, 0])),
        "top10_agreement": float(np.mean(top10)),
        "copies_recall_at_10": float(np.mean(recall)),
        "score_drift_mean": float(np.mean(np.abs(answers.scores - reference.scores))),
        # what a different best match costs, in the reference's own similarity
        "top1_similarity_loss": float(
            np.mean(reference.scores[:, 0] - similarity[rows, answers.ids[:, 0]])
        ),
    }


def geometry(items: np.ndarray, reference: Answers) -> dict[str, float]:
    """How tightly the reference's embeddings crowd together: the closer, the smaller the
    perturbation that reorders an answer."""
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, len(items), size=(4096, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    cosines = np.sum(items[pairs[:, 0]] * items[pairs[:, 1]], axis=1)
    return {
        "mean_cosine_of_random_pairs": float(np.mean(cosines)),
        "median_top1_score": float(np.median(reference.scores[:, 0])),
        "median_top1_top2_gap": float(np.median(reference.scores[:, 0] - reference.scores[:, 1])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--bases-per-photo", type=int, default=10, help="queries per photograph")
    parser.add_argument("--distractors", type=int, default=1000)
    parser.add_argument(
        "--precision",
        action="append",
        choices=[p.value for p in Precision],
        help="the engine's variants to measure (repeat; default: all, int8 and fp32 with --quick)",
    )
    parser.add_argument(
        "--decoder-on-gpu",
        action="store_true",
        help="the nvimgcodec rows decode and resize on the GPU (default: its CPU backend)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small collection, the default configurations' pipelines only (the suite's check)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.quick:
        args.bases_per_photo, args.distractors = 1, 40

    model_dir = ensure_benchmark_model(args.model_dir)
    manifest = Manifest.load(model_dir)
    collection = make_collection(args.bases_per_photo, args.distractors)
    print(f"  {len(collection.queries)} queries, {len(collection.items)} items", flush=True)

    checkpoint = pytorch_checkpoint(manifest, threads=len(os.sched_getaffinity(0)))
    reference_pixels = checkpoint.image.reference_pixels

    def decoded(batch: Sequence[bytes]) -> np.ndarray:
        return reference_pixels([Image.open(io.BytesIO(data)).convert("RGB") for data in batch])

    started = time.perf_counter()
    print("  reference: the family's processor, PyTorch fp32 ...", flush=True)
    torch_embed = pytorch_image_embed(checkpoint)
    reference_queries = embed_all(collection.queries, decoded, torch_embed)
    reference_items = embed_all(collection.items, decoded, torch_embed)
    reference = exact_answers(reference_queries, reference_items)
    similarity = reference_queries @ reference_items.T
    reference_copies = agreement(reference, reference, collection.copies_of, similarity)[
        "copies_recall_at_10"
    ]
    spread = geometry(reference_items, reference)

    modes = ("fast",) if args.quick else ("fast", "exact")
    if PixelLayout.of(manifest.graphs["image"]) is PixelLayout.UINT8_NHWC:
        modes += (NVIMGCODEC,)  # the device decoder writes uint8 rows (packages of format 4)
    precisions = args.precision or (("int8", "fp32") if args.quick else ("int8", "fp32", "fp16"))
    indexes = (EXACT, "bf16") if args.quick else (EXACT, *DTYPES)
    results = []
    for precision in precisions:
        engine = OnnxEngine(model_dir, EngineSettings(precision=Precision(precision)))
        for mode in modes:
            if args.quick and mode == NVIMGCODEC and precision != "fp32":
                continue  # the decoder's own drift shows on fp32 alone
            print(f"  {mode} preprocessing, {precision} ...", flush=True)
            prepare, embed = served_pipeline(
                mode, manifest, engine, decoder_on_gpu=args.decoder_on_gpu
            )
            queries = embed_all(collection.queries, prepare, embed)
            items = embed_all(collection.items, prepare, embed)
            for index, shards in itertools.product(indexes, SHARDS):
                if index == EXACT and shards > 1:
                    continue  # exhaustive search gives the same answers in any number of shards
                answers = (
                    exact_answers(queries, items)
                    if index == EXACT
                    else index_answers(queries, items, collection.item_ids, index, shards)
                )
                configuration = (mode, precision, index, shards)
                results.append(
                    {
                        "preprocess": mode,
                        "precision": precision,
                        "index": index,
                        "shards": shards,
                        "default": {DEFAULT: "data directory", BUILT_DEFAULT: "built index"}.get(
                            configuration
                        ),
                        **agreement(answers, reference, collection.copies_of, similarity),
                    }
                )
    seconds = time.perf_counter() - started

    headers = (
        "preprocess",
        "precision",
        "index",
        "shards",
        "top-1",
        "top-10",
        "copies@10",
        "drift",
        "top-1 loss",
        "default",
    )
    columns = (
        "preprocess",
        "precision",
        "index",
        "shards",
        "top1_agreement",
        "top10_agreement",
        "copies_recall_at_10",
        "score_drift_mean",
        "top1_similarity_loss",
        "default",
    )
    print()
    print(f"reference copies recall@10: {reference_copies:.3f}; geometry: {spread}")
    print_table(headers, [[r[c] or "" for c in columns] for r in results])
    settings = {
        "model_dir": str(model_dir),
        "model": manifest.source.id,
        "queries": len(collection.queries),
        "items": len(collection.items),
        "copies": list(COPIES),
        "k": K,
        "quick": args.quick,
        "seconds": seconds,
    }
    path = write_result(
        "fidelity",
        args.out,
        settings=settings,
        results={
            "reference_copies_recall_at_10": reference_copies,
            "reference_geometry": spread,
            "configurations": results,
        },
    )
    plot(results, path.with_suffix(".png"))
    print(f"\nwrote {path}")


def plot(results: list[dict], path: Path) -> None:
    with figure_file(path, size=(9, 4.5)) as (axes,):
        labels = [f"{r['preprocess']}·{r['precision']}·{r['index']}·{r['shards']}" for r in results]
        positions = np.arange(len(results))
        axes.bar(positions - 0.2, [r["top1_agreement"] for r in results], 0.4, label="top-1")
        axes.bar(positions + 0.2, [r["top10_agreement"] for r in results], 0.4, label="top-10")
        axes.set_xticks(positions, labels, rotation=90, fontsize=6)
        axes.set_ylabel("agreement with the reference")
        axes.set_ylim(0, 1)
        axes.legend()


if __name__ == "__main__":
    entry_point(main)
