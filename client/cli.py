"""The `lookalike` commands that talk to a server: index a folder, search by image, text, id or
vector, find near-duplicates, and inspect or edit what it holds. `lookalike.cli` puts them
together with the commands that need no server (`lookalike.batch.cli`)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike.client.api import REGION_POLICIES, Client, Example, Match, NewItem, Region
from lookalike.client.duplicates import Pair, calibrate, calibration_report, group_pairs
from lookalike.client.errors import (
    InvalidRequestError,
    ItemNotFoundError,
    LookalikeClientError,
    ServerUnavailableError,
    UnauthenticatedError,
)
from lookalike.client.files import file_id, image_files
from lookalike.client.report import (
    SOURCE_PATH_KEY,
    describe_region,
    render_groups_html,
    render_html,
    source_file_bytes,
)

__all__ = [
    "add_commands",
    "connection_options",
    "run_with_client",
    "CommandError",
    "read_file",
    "EXIT_CODES_HELP",
    "EXIT_BAD_INPUT",
    "EXIT_SOME_FAILED",
    "EXIT_UNREACHABLE",
    "EXIT_INTERRUPTED",
    "EXIT_BROKEN_PIPE",
]

EXIT_ERROR, EXIT_UNREACHABLE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_BAD_INPUT = 1, 3, 4, 5, 6
EXIT_SOME_FAILED = 7  # `index`: the other files are indexed; the failed ones are listed
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what Unix tools exit with when the reader has gone
EXIT_CODES_HELP = """exit codes:
  0  done (for index: every image file in the folder is indexed)
  1  other error      3  server unreachable    4  token refused
  5  unknown id       6  bad input or file     7  index: some files failed (listed)
  130  interrupted (Ctrl-C)    141  the reader of stdout went away (e.g. | head)"""
DEFAULT_SERVER = "127.0.0.1:50051"


class CommandError(Exception):
    """A one-line message for the user, with the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """How to reach the server: accepted before the command and after it.

    The copies after the command default to SUPPRESS, so they never overwrite a value that
    was given before it.
    """

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("server connection")
    group.add_argument(
        "--server",
        default=default(os.environ.get("LOOKALIKE_SERVER", DEFAULT_SERVER)),
        help=f"HOST:PORT of the server [LOOKALIKE_SERVER] (default: {DEFAULT_SERVER})",
    )
    group.add_argument(
        "--token",
        default=default(os.environ.get("LOOKALIKE_TOKEN")),
        help="bearer token, when the server was started with --token [LOOKALIKE_TOKEN]",
    )
    group.add_argument(
        "--tls", action="store_true", default=default(False), help="connect with TLS"
    )
    group.add_argument(
        "--ca-cert",
        type=Path,
        default=default(None),
        help="PEM file of the CA to trust (implies --tls)",
    )
    group.add_argument(
        "--timeout", type=float, default=default(30.0), help="seconds per call (default: 30)"
    )


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the commands that talk to a server, each taking the connection options too."""

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        connection_options(sub, defaults=False)
        return sub

    index = command("index", "add a folder's images (id: path relative to DIR)")
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

    search = command(
        "search",
        "the most similar indexed images, to an image or a text, or to several examples "
        "(a.jpg b.jpg --not c.jpg)",
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
    _filter_option(search)
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

    duplicates = command(
        "duplicates",
        "groups of near-duplicate items in the collection (each item's neighbours above "
        "--threshold, grouped transitively); or --calibrate a threshold on your own images",
    )
    duplicates.add_argument(
        "--threshold", type=float, help="the lowest cosine of a pair (find one with --calibrate)"
    )
    duplicates.add_argument("-k", type=int, default=10, help="neighbours looked at per item")
    _filter_option(duplicates)
    duplicates.add_argument("--json", action="store_true", help="print one JSON object")
    duplicates.add_argument("--html", type=Path, help="also write a page showing each group")
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

    stats = command("stats", "what the server runs and holds")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    get = command("get", "one item's metadata")
    get.add_argument("id", help="the item's id (for `index`: its path relative to the folder)")
    get.add_argument("--json", action="store_true", help="print one JSON object")
    delete = command("delete", "remove items")
    delete.add_argument("ids", nargs="+", metavar="ID", help="ids of the items to remove")
    for name, handler in COMMANDS.items():
        commands.choices[name].set_defaults(run=functools.partial(run_with_client, handler))


def _filter_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--filter",
        "-f",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only items whose metadata has this value (repeatable: all must match)",
    )


def run_with_client(handler: Handler, args: argparse.Namespace) -> int:
    """Run a command with a client connected as the options say; the client's errors become
    one line for a person and the exit code their kind has."""
    try:
        root_certificates = read_file(args.ca_cert) if args.ca_cert else None
        with Client(
            args.server,
            token=args.token,
            tls=args.tls,
            root_certificates=root_certificates,
            timeout=args.timeout,
        ) as client:
            return handler(client, args)
    except LookalikeClientError as error:
        raise CommandError(_explain(error), _exit_code(error)) from error


def _explain(error: LookalikeClientError) -> str:
    if isinstance(error, ServerUnavailableError) and not error.server_error:
        return f"cannot reach a Lookalike server at {error.target} ({error.details})"
    if isinstance(error, UnauthenticatedError):
        return "the server refused the token: pass --token or set LOOKALIKE_TOKEN"
    return str(error)


def _exit_code(error: LookalikeClientError) -> int:
    if isinstance(error, ServerUnavailableError):
        return EXIT_UNREACHABLE
    if isinstance(error, UnauthenticatedError):
        return EXIT_AUTH
    if isinstance(error, ItemNotFoundError):
        return EXIT_NOT_FOUND
    return EXIT_BAD_INPUT if error.code.name == "INVALID_ARGUMENT" else EXIT_ERROR


# -- index ----------------------------------------------------------------------------------


class IndexProgress(tqdm):
    """A progress bar whose clock starts with the first result.

    The first result waits for the server's first commit group (and, on a fresh server, its
    warm-up); timed from the start, the first estimate would be many times too long.
    """

    def update(self, n: float | None = 1) -> bool | None:
        if not self.n:
            self.reset(total=self.total)
        return super().update(n)


def index_command(client: Client, args: argparse.Namespace) -> int:
    directory = args.directory
    if not directory.is_dir():
        raise CommandError(f"{directory} is not a directory", EXIT_BAD_INPUT)
    extra = _pairs(args.metadata, "--metadata")
    files = image_files(directory, recursive=args.recursive)
    todo = (
        files if args.reindex else [f for f in files if not _indexed(client, file_id(f, directory))]
    )
    skipped = len(files) - len(todo)
    failures: list[tuple[str, str]] = []
    stored = 0
    progress = IndexProgress(
        total=len(todo), unit="img", desc="indexing", file=sys.stderr, disable=None
    )
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


def _box(text: str) -> Region:
    try:
        return Region.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


# -- search ---------------------------------------------------------------------------------


def search_command(client: Client, args: argparse.Namespace) -> int:
    filters = _pairs(args.filter, "--filter")
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


# -- stats, get, delete ---------------------------------------------------------------------------


def duplicates_command(client: Client, args: argparse.Namespace) -> int:
    if args.calibrate is not None:
        return _calibrate(client, args)
    if args.threshold is None:
        raise CommandError(
            "give --threshold T (the lowest cosine of a pair; it depends on the model: "
            "find one with --calibrate FOLDER)",
            EXIT_BAD_INPUT,
        )
    filters = _pairs(args.filter, "--filter")
    pairs, scanned = [], 0
    progress = IndexProgress(unit="item", desc="scanning", file=sys.stderr, disable=None)
    try:
        for page in client.neighbours(args.threshold, k=args.k, filter=filters):
            progress.total = page.total
            progress.update(page.scanned - scanned)
            scanned = page.scanned
            pairs += [Pair(a, b, s) for a, near in page.neighbours.items() for b, s in near]
    finally:
        progress.close()
    groups = group_pairs(pairs)
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
    stats = client.stats()
    try:
        calibration = calibrate([read_file(path) for path in files], client.embed)
    except InvalidRequestError as error:
        raise CommandError(f"an image of {folder} was refused: {error}", EXIT_BAD_INPUT) from error
    if args.json:
        best = calibration.recommend(args.precision)
        document = {
            **dataclasses.asdict(calibration),
            "precision_asked": args.precision,
            "recommended": dataclasses.asdict(best) if best is not None else None,
            "model": stats.model_id,
            "random_weights": stats.random_weights,
        }
        print(json.dumps(document))
        return 0
    print(calibration_report(calibration, args.precision, stats.model_id, stats.random_weights))
    return 0


def stats_command(client: Client, args: argparse.Namespace) -> int:
    stats = client.stats()
    if args.json:
        print(json.dumps(dataclasses.asdict(stats)))
        return 0
    weights = "RANDOM WEIGHTS (results carry no meaning)" if stats.random_weights else "trained"
    print(f"server      {client.target} (lookalike {stats.version})")
    print(f"items       {stats.items} ({stats.vectors} vectors: whole images and regions)")
    revision = f"@{stats.model_revision}" if stats.model_revision else ""
    print(
        f"model       {stats.model_id}{revision} ({stats.model_family}), {stats.dims}-d, "
        f"{weights}; manifest sha256 {stats.manifest_sha256[:16]}"
    )
    if stats.score_scale:
        scale = stats.score_scale
        print(
            f"probability {scale['kind']}(cosine * {scale['scale']:.4g} {scale['bias']:+.4g}) "
            "for an image and a text"
        )
    providers = ", ".join(stats.providers)
    print(f"engine      {stats.precision} on {providers}, preprocess {stats.preprocess_mode}")
    text = (
        f"{stats.text_precision}, queue {stats.text_queue_depth}" if stats.text_enabled else "off"
    )
    print(f"text        {text}")
    print(f"index       {', '.join(f'{k}={v}' for k, v in stats.index.items())}")
    if stats.index_version:
        print(f"version     {stats.index_version}, {len(stats.shards)} shards")
        for shard in stats.shards:
            print(
                f"  shard {shard['number']:<5} {shard['items']} items, {shard['vectors']} "
                f"vectors, {shard['replicas']} replicas answering"
            )
    print(
        f"batching    {stats.batches} batches, mean size {stats.mean_batch_size:.1f}, "
        f"queue {stats.queue_depth}"
    )
    print(f"uptime      {stats.uptime_seconds:.0f}s")
    return 0


def get_command(client: Client, args: argparse.Namespace) -> int:
    item = client.get(args.id)
    if args.json:
        regions = [dataclasses.asdict(region) for region in item.regions]
        print(json.dumps({"id": item.id, "metadata": item.metadata, "regions": regions}))
    else:
        print(item.id)
        for key, value in sorted(item.metadata.items()):
            print(f"  {key} = {value}")
        for region in item.regions:
            print(f"  region {describe_region(region)}")
    return 0


CLUSTER_SERVE_HELP = (
    "serve a built index on Ray Serve: every shard and the embedder as Serve deployments, "
    "behind this process's gRPC front (lookalike-server --index INDEX --shards-on-ray "
    "--embed-on-ray, plus the flags given)"
)


def delete_command(client: Client, args: argparse.Namespace) -> int:
    result = client.delete(args.ids)
    print(f"deleted {result.deleted}")
    for item_id in result.missing:
        print(f"  not found  {item_id}")
    return 0


Handler = Callable[[Client, argparse.Namespace], int]
COMMANDS: dict[str, Handler] = {
    "index": index_command,
    "search": search_command,
    "duplicates": duplicates_command,
    "stats": stats_command,
    "get": get_command,
    "delete": delete_command,
}


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise CommandError(f"{flag} takes KEY=VALUE, got {value!r}", EXIT_BAD_INPUT)
        pairs[key] = item
    return pairs


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}", EXIT_BAD_INPUT) from exc
