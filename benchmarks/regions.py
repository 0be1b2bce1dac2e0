"""Object search: whole images only, against region policies, against the true boxes.

    python benchmarks/regions.py [--quick] [--objects 8] [--scenes-per-object 8] [--out results]

A synthetic object-search set made offline from real photographs (the samples shipped inside
scikit-image and scikit-learn, benchmarks/photos.py): `--objects` photos are the objects (their
central part), the others backgrounds. Each object is pasted, at a random place and a width of
20-45% of the scene, into `--scenes-per-object` scenes cut from random backgrounds; as many
scenes again hold no object. Every scene is added to one `lookalike-server` under each policy:
1. whole image only (`none`),
2. grids of regions, given by the client exactly as the server would cut them (2x2 halves,
   3x3 thirds, 3x3 overlapping halves, 4x4 overlapping thirds, 2x2 and 3x3 halves together),
   and the server's own `grid` policy (`region_policy`; the same boxes as 3x3 halves),
3. the true pasted box as a given region (what a perfect detector would give: the ceiling).
Each object's picture is then the query (k=10, filtered to one policy's items): recall@10 of
the scenes holding it. Also: ingest images/s per policy (every region is one more inference)
and stored bytes per item (the data directory's bytes per vector, times vectors per item).

The benchmark model has RANDOM weights: its embeddings are a fixed random function of the
pixels, not of what is in them, so a region matches an object only where it holds nearly the
same pixels. The figures compare policies on that footing (how often a region frames the
object well); with trained weights every policy scores higher, the ranking of the grids is
what carries over.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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
from benchmarks.photos import jpeg_bytes, paste_scene, sample_photos
from lookalike.client import Client, NewItem, Region
from lookalike.server.regions import GridLevel, grid_regions

K = 10
# name -> (client-given grid levels, or "grid" for the server's policy, or "truth")
POLICIES: dict[str, tuple[GridLevel, ...] | str] = {
    "whole image": (),
    "2x2 halves": (GridLevel(2, 0.5),),
    "3x3 thirds": (GridLevel(3, 1 / 3),),
    "3x3 halves": (GridLevel(3, 0.5),),
    "4x4 thirds": (GridLevel(4, 1 / 3),),
    "2x2 + 3x3 halves": (GridLevel(2, 0.5), GridLevel(3, 0.5)),
    "server grid": "grid",
    "true box": "truth",
}


def make_scenes(
    objects: int, per_object: int, seed: int
) -> tuple[list[bytes], list[tuple[str, bytes, int | None, tuple[float, ...] | None]]]:
    """(object query images, scenes as (id, jpeg, object number or None, its box))."""
    rng = np.random.default_rng(seed)
    photos = [image for _, image in sample_photos()]
    order = rng.permutation(len(photos))
    things = [_central(photos[i]) for i in order[:objects]]
    backgrounds = [photos[i] for i in order[objects:]]
    scenes: list[tuple[str, bytes, int | None, tuple[float, ...] | None]] = []
    for number, thing in enumerate(things):
        for copy in range(per_object):
            background = backgrounds[int(rng.integers(len(backgrounds)))]
            scene, box = paste_scene(background, thing, rng)
            scenes.append((f"object{number}-scene{copy}", jpeg_bytes(scene), number, box))
    for plain in range(objects * per_object):
        background = backgrounds[int(rng.integers(len(backgrounds)))]
        scene, _ = paste_scene(background, None, rng)
        scenes.append((f"plain{plain}", jpeg_bytes(scene), None, None))
    return [jpeg_bytes(thing) for thing in things], scenes


def _central(photo):  # the middle 60% of a photo: the "object"
    width, height = photo.size
    return photo.crop((width // 5, height // 5, width - width // 5, height - height // 5))


def new_item(policy: str, scene: tuple, rule: tuple[GridLevel, ...] | str) -> NewItem:
    scene_id, data, _, box = scene
    if rule == "truth":
        regions = [Region(*box)] if box is not None else []
    elif rule == "grid":
        regions = []
    else:
        regions = [Region(r.x0, r.y0, r.x1, r.y1) for r in grid_regions(rule)]
    return NewItem(
        f"{policy}/{scene_id}",
        image=data,
        metadata={"policy": policy},
        regions=regions,
        region_policy="grid" if rule == "grid" else "none",
    )


def run_policy(
    client: Client, policy: str, rule, queries: list[bytes], scenes: list[tuple]
) -> dict:
    vectors_before = client.stats().vectors
    started = time.perf_counter()
    outcomes = list(client.add_many(new_item(policy, scene, rule) for scene in scenes))
    seconds = time.perf_counter() - started
    failed = [o.error for o in outcomes if not o.ok]
    if failed:
        raise SystemExit(f"{policy}: {len(failed)} scenes failed, e.g. {failed[0]}")
    vectors = client.stats().vectors - vectors_before
    recalls, by_region = [], 0
    for number, query in enumerate(queries):
        holding = {f"{policy}/{s[0]}" for s in scenes if s[2] == number}
        matches = client.search(image=query, k=K, filter={"policy": policy})
        found = [m for m in matches if m.id in holding]
        recalls.append(len(found) / min(K, len(holding)))
        by_region += sum(m.region is not None for m in found)
    return {
        "policy": policy,
        "recall_at_10": float(np.mean(recalls)),
        "found_through_a_region": by_region,
        "ingest_images_per_s": len(scenes) / seconds,
        "vectors_per_item": vectors / len(scenes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--scenes-per-object", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 objects, 2 scenes")
    args = parser.parse_args()
    objects, per_object = (2, 2) if args.quick else (args.objects, args.scenes_per_object)
    model_dir = ensure_benchmark_model(args.model_dir)
    queries, scenes = make_scenes(objects, per_object, args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        with (
            lookalike_server(model_dir, "--no-text", store=("--data-dir", str(data))) as server,
            Client(server.address, timeout=120) as client,
        ):
            random_weights = client.stats().random_weights
            runs = [
                run_policy(client, name, rule, queries, scenes) for name, rule in POLICIES.items()
            ]
            total_vectors = client.stats().vectors
        stored_bytes = sum(f.stat().st_size for f in data.iterdir() if f.is_file())
    bytes_per_vector = stored_bytes / total_vectors
    for run in runs:
        run["stored_bytes_per_item"] = run["vectors_per_item"] * bytes_per_vector
    print_table(
        ("policy", "recall@10", "via region", "vectors/item", "ingest img/s", "KB/item"),
        [
            (
                r["policy"],
                r["recall_at_10"],
                r["found_through_a_region"],
                r["vectors_per_item"],
                r["ingest_images_per_s"],
                r["stored_bytes_per_item"] / 1024,
            )
            for r in runs
        ],
    )
    path = write_result(
        "regions",
        args.out,
        settings={
            "model_dir": str(model_dir),
            "random_weights": random_weights,
            "objects": objects,
            "scenes_per_object": per_object,
            "scenes": len(scenes),
            "k": K,
            "seed": args.seed,
            "quick": args.quick,
        },
        results={"runs": runs, "stored_bytes_per_vector": bytes_per_vector},
    )
    plot(runs, random_weights, path.with_suffix(".png"))
    print(f"\nwrote {path} and {path.with_suffix('.png')}")


def plot(runs: list[dict], random_weights: bool, path: Path) -> None:
    with figure_file(path, columns=2, size=(11, 4.2)) as (recall, cost):
        names = [r["policy"] for r in runs]
        recall.barh(names, [r["recall_at_10"] for r in runs], color="#3866d6")
        recall.set_xlabel("recall@10 of the scenes holding the queried object")
        recall.set_xlim(0, 1)
        recall.invert_yaxis()
        weights = "random-weight ViT-B/32" if random_weights else "trained weights"
        recall.set_title(f"Object search ({weights})")
        cost.barh(names, [r["ingest_images_per_s"] for r in runs], color="#888")
        cost.set_xlabel("ingest images/s (each region is one more inference)")
        cost.invert_yaxis()
        cost.set_yticklabels([])
        cost.set_title("What it costs")


if __name__ == "__main__":
    entry_point(main)
