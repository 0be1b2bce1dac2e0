"""`lookalike duplicates`: groups of near-duplicates (each item's neighbours above a threshold,
grouped transitively), or a threshold calibrated on the user's own images."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from lookalike.cli.common import (
    EXIT_BAD_INPUT,
    CommandError,
    Progress,
    filter_option,
    key_value_pairs,
    read_file,
)
from lookalike.cli.connection import server_command
from lookalike.client.api import Client, ImageFacts
from lookalike.client.duplicates import (
    DuplicateGroup,
    Pair,
    TooFewImagesError,
    calibrate,
    calibration_report,
    group_pairs,
)
from lookalike.client.files import file_id, image_files
from lookalike.client.keep import KeepRule, keep_plan
from lookalike.client.report import render_groups_html, source_file_bytes

__all__ = ["add_command", "duplicates_command"]


def add_command(commands: argparse._SubParsersAction) -> None:
    """`lookalike duplicates`: groups above a threshold, or --calibrate one."""
    duplicates = server_command(
        commands,
        "duplicates",
        "groups of near-duplicate items in the collection (each item's neighbours above "
        "--threshold, grouped transitively); or --calibrate a threshold on your own images",
        duplicates_command,
    )
    duplicates.add_argument(
        "--threshold", type=float, help="the lowest cosine of a pair (find one with --calibrate)"
    )
    duplicates.add_argument("-k", type=int, default=10, help="neighbours looked at per item")
    filter_option(duplicates)
    duplicates.add_argument("--json", action="store_true", help="print one JSON object")
    duplicates.add_argument("--html", type=Path, help="also write a page showing each group")
    duplicates.add_argument(
        "--keep",
        choices=[rule.value for rule in KeepRule],
        help="which copy of each group to keep: largest (most pixels, then the largest file; "
        "copies of unknown size last), smallest (file), first (id); prints the plan",
    )
    duplicates.add_argument(
        "--delete",
        action="store_true",
        help="with --keep: delete every copy the plan does not keep",
    )
    duplicates.add_argument(
        "--dry-run",
        action="store_true",
        help="with --delete: print the plan as JSON and delete nothing",
    )
    duplicates.add_argument(
        "--calibrate",
        type=Path,
        metavar="FOLDER",
        help="instead: make transformed copies of a sample of FOLDER's images, embed them "
        "through the server, print precision and recall per threshold, recommend one",
    )
    duplicates.add_argument(
        "--precision",
        type=float,
        default=0.99,
        help="with --calibrate: the precision the recommended threshold must reach",
    )
    duplicates.add_argument(
        "--sample", type=int, default=100, help="with --calibrate: most images used"
    )


def duplicates_command(client: Client, args: argparse.Namespace) -> int:
    if args.calibrate is not None:
        return _calibrate(client, args)
    if args.threshold is None:
        raise CommandError(
            "give --threshold T (the lowest cosine of a pair; it depends on the model: "
            "find one with --calibrate FOLDER)",
            EXIT_BAD_INPUT,
        )
    if (args.delete or args.dry_run) and args.keep is None:
        raise CommandError(
            "--delete needs --keep RULE: which copy of each group stays", EXIT_BAD_INPUT
        )
    if args.dry_run and not args.delete:
        raise CommandError("--dry-run goes with --delete", EXIT_BAD_INPUT)
    filters = key_value_pairs(args.filter, "--filter")
    pairs, scanned, images = [], 0, {}
    progress = Progress(unit="item", desc="scanning", file=sys.stderr, disable=None)
    try:
        for page in client.neighbours(args.threshold, k=args.k, filter=filters):
            progress.total = page.total
            progress.update(page.scanned - scanned)
            scanned = page.scanned
            pairs += [Pair(a, b, s) for a, near in page.neighbours.items() for b, s in near]
            images.update(page.images)
    finally:
        progress.close()
    groups = group_pairs(pairs)
    if args.keep is not None:
        return _keep(client, args, groups, images, scanned)
    if args.html:
        stats = client.stats()
        pictures = {i: source_file_bytes(client.get(i).metadata) for g in groups for i in g.ids}
        args.html.write_text(
            render_groups_html(groups, pictures, args.threshold, stats.model_id, scanned),
            encoding="utf-8",
        )
    if args.json:
        document = {"threshold": args.threshold, "scanned": scanned, "groups": groups}
        print(json.dumps(document, default=dataclasses.asdict))
        return 0
    for number, group in enumerate(groups, 1):
        links = f"{group.lowest_link:.4f}-{group.pairs[0].score:.4f}"
        print(f"group {number}: {len(group.ids)} items, links {links}")
        for item_id in group.ids:
            print(f"  {item_id}")
    in_groups = sum(len(group.ids) for group in groups)
    print(
        f"{len(groups)} groups, {in_groups} items in them, of {scanned} scanned "
        f"(threshold {args.threshold:g})"
    )
    if args.html:
        print(f"wrote {args.html}")
    return 0


def _keep(
    client: Client,
    args: argparse.Namespace,
    groups: list[DuplicateGroup],
    images: dict[str, ImageFacts],
    scanned: int,
) -> int:
    """The plan of what each group keeps and deletes; carried out with --delete."""
    rule = KeepRule(args.keep)
    plans = keep_plan(groups, images, rule)
    doomed = [item_id for plan in plans for item_id in plan.delete]
    if args.json or args.dry_run:
        document = {
            "threshold": args.threshold,
            "scanned": scanned,
            "keep": rule.value,
            "groups": [
                {
                    "keep": plan.keep,
                    "delete": plan.delete,
                    "images": {i: _image_json(images.get(i)) for i in group.ids},
                }
                for plan, group in zip(plans, groups, strict=True)
            ],
            "deleted": 0,
        }
        if args.delete and not args.dry_run:
            document["deleted"] = _delete(client, doomed)
        print(json.dumps(document))
        return 0
    print(f"keeping {rule.description}:")
    for number, (plan, group) in enumerate(zip(plans, groups, strict=True), 1):
        print(f"group {number}: {len(group.ids)} items")
        print(f"  keep    {plan.keep}  {_size(images.get(plan.keep))}")
        for item_id in plan.delete:
            print(f"  delete  {item_id}  {_size(images.get(item_id))}")
    if not args.delete:
        print(
            f"{len(doomed)} copies to delete in {len(groups)} groups, of {scanned} scanned: "
            "nothing deleted (add --delete to delete them)"
        )
        return 0
    deleted = _delete(client, doomed)
    print(f"deleted {deleted} copies in {len(groups)} groups, of {scanned} scanned")
    return 0


DELETE_CHUNK = 1000  # ids per durable commit


def _delete(client: Client, ids: list[str]) -> int:
    """Delete the ids, a durable commit per chunk; how many were deleted."""
    return sum(
        client.delete(ids[start : start + DELETE_CHUNK]).deleted
        for start in range(0, len(ids), DELETE_CHUNK)
    )


def _image_json(image: ImageFacts | None) -> dict[str, int] | None:
    return None if image is None else dataclasses.asdict(image)


def _size(image: ImageFacts | None) -> str:
    if image is None:
        return "(size not recorded)"
    return f"{image.width}x{image.height} px, {image.bytes:,} bytes"


def _calibrate(client: Client, args: argparse.Namespace) -> int:
    folder = args.calibrate
    if not folder.is_dir():
        raise CommandError(f"{folder} is not a directory", EXIT_BAD_INPUT)
    files = image_files(folder, recursive=True)
    if len(files) > args.sample:
        chosen = np.random.default_rng(0).choice(len(files), args.sample, replace=False)
        files = [files[i] for i in sorted(chosen)]
    if len(files) < 2:
        raise CommandError(f"{folder} has {len(files)} image files; at least 2", EXIT_BAD_INPUT)
    ids = [file_id(path, folder) for path in files]
    stats = client.stats()
    try:
        calibration = calibrate([read_file(path) for path in files], client.embed)
    except TooFewImagesError as error:
        first, reason = next(iter(error.skipped.items()))
        raise CommandError(
            f"{folder}: {error} (e.g. {ids[first]}: {reason})", EXIT_BAD_INPUT
        ) from error
    skipped = {ids[number]: reason for number, reason in calibration.skipped.items()}
    if args.json:
        best = calibration.recommend(args.precision)
        document = {
            **dataclasses.asdict(calibration),
            "skipped": skipped,
            "precision_asked": args.precision,
            "recommended": dataclasses.asdict(best) if best is not None else None,
            "model": stats.model_id,
            "random_weights": stats.random_weights,
        }
        print(json.dumps(document))
        return 0
    if skipped:
        print(f"{len(skipped)} of {len(files)} images skipped: the server cannot read them")
        for item_id, reason in skipped.items():
            print(f"  skipped  {item_id}: {reason}")
    print(calibration_report(calibration, args.precision, stats.model_id, stats.random_weights))
    return 0
