"""`lookalike search`: the most similar items to images, a text, a stored item or a vector
(with examples of what not to find), as a table, JSON or an HTML page."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lookalike.cli.common import (
    EXIT_BAD_INPUT,
    CommandError,
    filter_option,
    key_value_pairs,
    read_file,
)
from lookalike.cli.connection import server_command
from lookalike.client.api import Client, Example, Match, Region
from lookalike.client.errors import InvalidRequestError
from lookalike.client.files import SOURCE_PATH_KEY
from lookalike.client.report import (
    describe_region,
    render_html,
    source_file_bytes,
)

__all__ = ["add_command", "search_command"]


def add_command(commands: argparse._SubParsersAction) -> None:
    """`lookalike search`: by images, a text, an id or a vector, with negatives."""
    search = server_command(
        commands,
        "search",
        "the most similar indexed images, to an image or a text, or to several examples "
        "(a.jpg b.jpg --not c.jpg)",
        search_command,
    )
    search.add_argument(
        "images", nargs="*", type=Path, help="query image file(s); several: like all of them"
    )
    query = search.add_mutually_exclusive_group()
    query.add_argument(
        "--text", "-t", help='query by a description, e.g. "a red car in the rain" (CLIP text)'
    )
    query.add_argument("--id", help="query by a stored item's id (itself excluded)")
    query.add_argument("--vector", type=Path, help="query by an embedding saved with numpy.save")
    search.add_argument(
        "--not",
        dest="negatives",
        action="append",
        type=Path,
        default=[],
        metavar="IMAGE",
        help="an image of what not to find (repeatable); the search moves away from it",
    )
    search.add_argument(
        "--not-text",
        action="append",
        default=[],
        metavar="TEXT",
        help="a description of what not to find (repeatable)",
    )
    search.add_argument(
        "--negative-weight",
        type=float,
        help="how far to move away from the negatives, 0 to 1 (default: the server's, 0.5)",
    )
    search.add_argument("-k", type=int, default=10, help="how many matches (default: 10)")
    filter_option(search)
    search.add_argument("--min-score", type=float, help="only matches with at least this cosine")
    search.add_argument(
        "--box",
        type=_box,
        metavar="X0,Y0,X1,Y1",
        help="with an image: search with this part of it (of the first, given several; "
        "fractions of its width and height, e.g. 0.5,0,1,0.5 for the top right quarter)",
    )
    search.add_argument(
        "--json", action="store_true", help="print a JSON array on stdout and nothing else"
    )
    search.add_argument("--html", type=Path, help="also write a self-contained HTML page here")


def search_command(client: Client, args: argparse.Namespace) -> int:
    filters = key_value_pairs(args.filter, "--filter")
    images: list[Path] = args.images
    image_bytes = [read_file(path) for path in images]
    positives = [Example(image=data) for data in image_bytes]
    if args.text is not None:
        positives.append(Example(text=args.text))
    elif args.id:
        positives.append(Example(id=args.id))
    elif args.vector:
        positives.append(Example(vector=_read_vector(args.vector).ravel()))
    negatives = [Example(image=read_file(path)) for path in args.negatives]
    negatives += [Example(text=text) for text in args.not_text]
    if not positives:
        raise CommandError("give a query: image file(s), --text, --id or --vector", EXIT_BAD_INPUT)
    if args.box is not None and not images:
        raise CommandError("--box goes with a query image: give an image file", EXIT_BAD_INPUT)
    query, *more = positives  # the first is the query, with its box; the rest join it
    try:
        matches = client.search(
            image=query.image,
            text=query.text,
            id=query.id,
            vector=query.vector,
            box=args.box,
            positives=more,
            negatives=negatives,
            negative_weight=args.negative_weight,
            k=args.k,
            filter=filters,
            min_score=args.min_score,
            exclude_self=args.id is not None,  # a stored item is not shown as like itself
        )
    except InvalidRequestError as error:  # say which file the server could not read
        if not images and not args.negatives:
            raise
        named = ", ".join(map(str, images + args.negatives))
        raise CommandError(f"{named}: {error}", EXIT_BAD_INPUT) from error
    label = _query_label(args)
    query_image = image_bytes[0] if image_bytes else None
    if args.id and query_image is None:
        query_image = source_file_bytes(client.get(args.id).metadata)
    if args.html:
        stats = client.stats()
        page = render_html(
            label,
            query_image,
            matches,
            model=stats.model_id,
            random_weights=stats.random_weights,
            query_text=args.text,
            query_box=args.box,
        )
        args.html.write_text(page, encoding="utf-8")
    if args.json:
        print(json.dumps([_match_json(m) for m in matches]))
    else:
        _print_matches(matches, empty_index=not matches and client.stats().items == 0)
        if args.html:
            print(f"wrote {args.html}")
    return 0


def _box(text: str) -> Region:
    try:
        return Region.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _query_label(args: argparse.Namespace) -> str:
    """What the search looked for, in a few words (the HTML page's title)."""
    named = [str(path) for path in args.images]
    if args.text is not None:
        named.append(f"text: {args.text}")
    elif args.id:
        named.append(f"id {args.id}")
    elif args.vector:
        named.append(str(args.vector))
    label = named[0] + (f" and {len(named) - 1} more" if len(named) > 1 else "")
    negatives = len(args.negatives) + len(args.not_text)
    return label + (
        f", not like {negatives} other{'s' if negatives > 1 else ''}" if negatives else ""
    )


def _match_json(match: Match) -> dict[str, object]:
    region = dataclasses.asdict(match.region) if match.region else None
    return {"id": match.id, "score": match.score, "metadata": match.metadata, "region": region}


def _read_vector(path: Path) -> np.ndarray:
    """A vector saved with numpy.save; never unpickles (allow_pickle stays off)."""
    try:
        vector = np.load(path, allow_pickle=False)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}", EXIT_BAD_INPUT) from exc
    except ValueError as exc:
        raise CommandError(
            f"{path} is not a .npy file of numbers (save one with numpy.save)", EXIT_BAD_INPUT
        ) from exc
    if not isinstance(vector, np.ndarray) or not np.issubdtype(vector.dtype, np.number):
        raise CommandError(f"{path} does not hold an array of numbers", EXIT_BAD_INPUT)
    return vector


def _print_matches(matches: Sequence[Match], *, empty_index: bool) -> None:
    if empty_index:
        print("no matches: the index is empty (add images with `lookalike index DIR`)")
        return
    if not matches:
        print("no matches (try a lower --min-score or fewer --filter)")
        return
    width = max(len(m.id) for m in matches)
    print(f"{'rank':>4}  {'score':>7}  {'id':<{width}}  {'matched by':<23}  metadata")
    for rank, match in enumerate(matches, 1):
        shown = {k: v for k, v in match.metadata.items() if k != SOURCE_PATH_KEY}
        metadata = " ".join(f"{k}={v}" for k, v in sorted(shown.items()))
        where = describe_region(match.region)
        print(f"{rank:>4}  {match.score:>7.4f}  {match.id:<{width}}  {where:<23}  {metadata}")
