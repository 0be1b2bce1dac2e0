"""The near-duplicate finder: how well it groups copies, and how long a scan takes.

    python benchmarks/duplicates.py [--quick] [--sizes 10000,100000] [--out results]

1. Quality, on real photographs (the samples inside scikit-image and scikit-learn): half of
   them calibrate a threshold (`lookalike duplicates --calibrate`'s code: transformed copies
   embedded through the server, the lowest threshold reaching precision 0.99); the other half
   and six transformed copies of each (resized, cropped, recompressed, flipped, rotated,
   colour-shifted) are indexed among distinct images (non-overlapping tiles cut from every
   photo), then grouped at that threshold. Reported: precision and recall against the true
   pairs (a photo and its copies, the copies among themselves) of the pairs found above the
   threshold, and of every pair inside a group (grouping is transitive).
2. Speed: a full Neighbours scan (k=10, threshold 0.9) of `--sizes` 512-d vectors clustered
   like real embeddings (benchmarks/search.py's), against what a user would otherwise run:
   every pair's score by blocked numpy matrix products (O(n^2)).

The benchmark model has RANDOM weights: its threshold and the figures of part 1 describe how a
random network scores pixels, not what a trained CLIP does (which tells copies from distinct
photos far better); part 2 does not depend on the weights.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

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
from benchmarks.photos import jpeg_bytes, sample_photos
from benchmarks.search import clustered
from lookalike.client import Client, NewItem
from lookalike.client.duplicates import (
    TRANSFORMS,
    Pair,
    calibrate,
    group_pairs,
    transformed_copies,
)

TARGET_PRECISION = 0.99
TILES = 4  # each photo cut into TILES x TILES distinct images


def quality(client: Client) -> dict:
    photos = [image for _, image in sample_photos()]
    calibration_photos, test_photos = photos[::2], photos[1::2]

    calibration = calibrate([jpeg_bytes(p) for p in calibration_photos], client.embed)
    chosen = calibration.recommend(TARGET_PRECISION) or max(
        (row for row in calibration.rows if row.recall > 0), key=lambda row: row.precision
    )
    items, truth = [], set()
    for number, photo in enumerate(test_photos):
        family = [f"photo{number}"] + [f"photo{number}-{kind}" for kind in TRANSFORMS]
        items.append(NewItem(family[0], image=jpeg_bytes(photo)))
        copies = transformed_copies(photo, seed=1000 + number)
        items += [NewItem(f"photo{number}-{kind}", image=_png(copies[kind])) for kind in copies]
        truth |= {(a, b) for a in family for b in family if a < b}
    for number, photo in enumerate(photos):
        width, height = photo.size
        for row in range(TILES):
            for column in range(TILES):
                box = (
                    column * width // TILES,
                    row * height // TILES,
                    (column + 1) * width // TILES,
                    (row + 1) * height // TILES,
                )
                items.append(NewItem(f"tile{number}-{row}-{column}", image=_png(photo.crop(box))))
    failed = [o.error for o in client.add_many(items) if not o.ok]
    if failed:
        raise SystemExit(f"{len(failed)} images failed, e.g. {failed[0]}")
    pairs = [
        Pair(a, b, score)
        for page in client.neighbours(chosen.threshold, k=10)
        for a, near in page.neighbours.items()
        for b, score in near
    ]
    groups = group_pairs(pairs)
    direct = {(min(p.a, p.b), max(p.a, p.b)) for p in pairs}
    grouped = {(a, b) for g in groups for a in g.ids for b in g.ids if a < b}
    return {
        "threshold": chosen.threshold,
        "calibration_precision": chosen.precision,
        "calibration_recall": chosen.recall,
        "items": len(items),
        "true_pairs": len(truth),
        "pairs_found": _scored(direct, truth),  # the pairs above the threshold
        "pairs_grouped": _scored(grouped, truth),  # every pair inside a group (transitive)
        "groups": len(groups),
        "largest_group": max((len(g.ids) for g in groups), default=0),
    }


def _scored(predicted: set, truth: set) -> dict:
    right = len(predicted & truth)
    return {
        "pairs": len(predicted),
        "precision": right / len(predicted) if predicted else 1.0,
        "recall": right / len(truth),
    }


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def scan_speed(model_dir: Path, size: int, dims: int) -> dict:
    vectors = clustered(size, seed=size)[:, :dims]  # all 512 for ViT-B/32; fewer for tiny
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with (
        lookalike_server(model_dir, "--no-text") as server,
        Client(server.address, timeout=600) as client,
    ):
        items = (NewItem(f"v{n}", vector=vector) for n, vector in enumerate(vectors))
        failed = sum(not outcome.ok for outcome in client.add_many(items))
        assert not failed, f"{failed} vectors refused"
        started = time.perf_counter()
        found = sum(len(page.neighbours) for page in client.neighbours(0.9, k=10))
        scan_s = time.perf_counter() - started
    started = time.perf_counter()
    all_pairs_above(vectors, 0.9)
    brute_s = time.perf_counter() - started
    return {
        "items": size,
        "scan_s": scan_s,
        "items_with_neighbours": found,
        "all_pairs_numpy_s": brute_s,
        "speedup": brute_s / scan_s,
    }


def all_pairs_above(vectors: np.ndarray, threshold: float, block: int = 4096) -> int:
    """What a user would otherwise run: every pair's cosine, a block of rows at a time."""
    count = 0
    for start in range(0, len(vectors), block):
        scores = vectors[start : start + block] @ vectors.T
        count += int((scores >= threshold).sum()) - min(block, len(vectors) - start)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--quick", action="store_true", help="smoke test: 2,000 vectors")
    args = parser.parse_args()
    model_dir = ensure_benchmark_model(args.model_dir)
    sizes = [2000] if args.quick else [int(s) for s in args.sizes.split(",")]
    with (
        lookalike_server(model_dir, "--no-text") as server,
        Client(server.address, timeout=120) as client,
    ):
        stats = client.stats()
        found = quality(client)
    speeds = [scan_speed(model_dir, size, stats.dims) for size in sizes]
    print_table(
        ("pairs", "threshold", "precision", "recall", "pairs", "true pairs", "items"),
        [
            (
                kind,
                found["threshold"],
                found[kind]["precision"],
                found[kind]["recall"],
                found[kind]["pairs"],
                found["true_pairs"],
                found["items"],
            )
            for kind in ("pairs_found", "pairs_grouped")
        ],
    )
    print_table(
        ("items", "scan s", "all pairs (numpy) s", "speedup"),
        [(s["items"], s["scan_s"], s["all_pairs_numpy_s"], s["speedup"]) for s in speeds],
    )
    path = write_result(
        "duplicates",
        args.out,
        settings={
            "model_dir": str(model_dir),
            "random_weights": stats.random_weights,
            "target_precision": TARGET_PRECISION,
            "tiles_per_photo": TILES * TILES,
            "sizes": sizes,
            "quick": args.quick,
        },
        results={"quality": found, "scan": speeds},
    )
    plot(speeds, path.with_suffix(".png"))
    print(f"\nwrote {path} and {path.with_suffix('.png')}")


def plot(speeds: list[dict], path: Path) -> None:
    with figure_file(path, size=(7, 4.2)) as (axes,):
        sizes = [s["items"] for s in speeds]
        axes.plot(sizes, [s["scan_s"] for s in speeds], "o-", label="Neighbours scan (k=10)")
        axes.plot(sizes, [s["all_pairs_numpy_s"] for s in speeds], "s--", label="all pairs, numpy")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("items")
        axes.set_ylabel("seconds")
        axes.set_title("Finding near-duplicates: one scan vs every pair")
        axes.legend()


if __name__ == "__main__":
    entry_point(main)
