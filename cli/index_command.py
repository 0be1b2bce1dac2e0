"""`lookalike index DIR`: add a folder's images to a server, skipping those it has, with a
progress bar, the failures listed, and a clean stop on Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from lookalike.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_SOME_FAILED,
    CommandError,
    Progress,
    key_value_pairs,
    read_file,
)
from lookalike.cli.connection import server_command
from lookalike.client.api import REGION_POLICIES, Client, NewItem
from lookalike.client.errors import ItemNotFoundError
from lookalike.client.files import SOURCE_PATH_KEY, file_id, image_files

__all__ = ["add_command", "index_command"]


def add_command(commands: argparse._SubParsersAction) -> None:
    """`lookalike index DIR`: add a folder's images."""
    index = server_command(
        commands, "index", "add a folder's images (id: path relative to DIR)", index_command
    )
    index.add_argument("directory", type=Path, help="folder of images (.jpg, .png, .webp, ...)")
    index.add_argument("--recursive", "-r", action="store_true", help="include subfolders")
    index.add_argument(
        "--metadata",
        "-m",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="stored with every image (repeatable); searches can filter on it",
    )
    index.add_argument("--reindex", action="store_true", help="re-add files already indexed")
    index.add_argument(
        "--regions",
        choices=sorted(REGION_POLICIES),
        help="also store regions of each image as vectors of their own, for object search: "
        "grid (9 overlapping boxes of half the width and height) or none (default: the "
        "server's --regions)",
    )


def index_command(client: Client, args: argparse.Namespace) -> int:
    directory = args.directory
    if not directory.is_dir():
        raise CommandError(f"{directory} is not a directory", EXIT_BAD_INPUT)
    extra = key_value_pairs(args.metadata, "--metadata")
    files = image_files(directory, recursive=args.recursive)
    todo = (
        files if args.reindex else [f for f in files if not _indexed(client, file_id(f, directory))]
    )
    skipped = len(files) - len(todo)
    failures: list[tuple[str, str]] = []
    stored = 0
    progress = Progress(total=len(todo), unit="img", desc="indexing", file=sys.stderr, disable=None)
    interrupted = False
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        items = (_new_item(path, directory, extra, args.regions) for path in todo)
        for outcome in client.add_many(items):
            if outcome.ok:
                stored += 1
            else:
                failures.append((outcome.id, outcome.error))
            progress.update(1)
            progress.set_postfix(errors=len(failures), refresh=False)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        signal.signal(signal.SIGINT, previous)
    state = "interrupted: " if interrupted else ""
    print(
        f"{state}{stored} stored, {skipped} already indexed, {len(failures)} failed "
        f"(of {len(files)} image files in {directory})"
    )
    for item_id, reason in failures:
        print(f"  failed  {item_id}: {reason}")
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_SOME_FAILED if failures else 0


def _indexed(client: Client, item_id: str) -> bool:
    try:
        client.get(item_id)
    except ItemNotFoundError:
        return False
    return True


def _new_item(
    path: Path, directory: Path, extra: dict[str, str], region_policy: str | None
) -> NewItem:
    metadata = {**extra, SOURCE_PATH_KEY: str(path.resolve())}
    return NewItem(
        file_id(path, directory),
        image=read_file(path),
        metadata=metadata,
        region_policy=region_policy,
    )
