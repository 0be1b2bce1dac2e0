"""The `lookalike` commands that need no server: the offline jobs on Ray (`ingest`,
`build-index`, `import`), moving a data directory to a new model in this process (`reembed`),
a data directory's ids stored before ids were normalised (`legacy-ids`), a built index's
versions (`versions`), and `cluster serve`, which starts a server whose shards run on Ray
Serve. Their work lives in `lookalike.batch` (and, for serving, in
`lookalike.server.cluster`), imported only when one of them runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from lookalike.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_SOME_FAILED,
    EXIT_UNREACHABLE,
    CommandError,
    read_file,
)
from lookalike.client.api import REGION_POLICIES
from lookalike.server.cluster.ray_session import RayConnectionError
from lookalike.server.index.settings import BUILT_INDEX_SETTINGS, DTYPES

__all__ = ["add_commands"]

LEGACY_IDS_PAGE = 10_000  # items read from the store at a time
CLUSTER_SERVE_HELP = (
    "serve a built index on Ray Serve: every shard and the embedder as Serve deployments, "
    "behind this process's gRPC front (lookalike-server --index INDEX --shards-on-ray "
    "--embed-on-ray, plus the flags given)"
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add this family's commands (they take no server connection options)."""
    for add in (
        _add_ingest,
        _add_build_index,
        _add_import,
        _add_reembed,
        _add_legacy_ids,
        _add_versions,
    ):
        add(commands)
    _add_cluster(commands)


def _command(
    commands: argparse._SubParsersAction,
    name: str,
    help_text: str,
    run: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text
    )
    parser.set_defaults(run=run)
    return parser


def _add_ingest(commands: argparse._SubParsersAction) -> None:
    """`lookalike ingest`"""
    ingest = _command(
        commands,
        "ingest",
        "embed a large collection on Ray into a resumable Parquet dataset (no server needed)",
        ingest_command,
    )
    ingest.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="folder, image, glob, or list file (.txt, .csv or .parquet with a path column)",
    )
    ingest.add_argument("--model-dir", type=Path, required=True, help="a lookalike-export package")
    ingest.add_argument("--output", "-o", type=Path, required=True, help="the dataset directory")
    ingest.add_argument(
        "--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)"
    )
    ingest.add_argument("--actors", type=int, default=0, help="most embedding actors (0: CPUs)")
    ingest.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per actor")
    ingest.add_argument("--batch-size", type=int, default=32, help="images per inference batch")
    ingest.add_argument(
        "--vector-dtype", choices=["f16", "f32"], default="f16", help="stored vector type"
    )
    ingest.add_argument(
        "--partitions", type=int, default=0, help="fixed at creation (0: one per 1,000 images)"
    )
    ingest.add_argument(
        "--precision",
        choices=["fp32", "fp16", "int8"],
        help="model variant (default: as the server picks, int8 on CPU actors, fp16 on GPU)",
    )
    ingest.add_argument(
        "--preprocess",
        choices=["fast", "exact"],
        default="fast",
        help="as the server's --preprocess: the same choice gives the server's vectors",
    )
    ingest.add_argument(
        "--image-decoder",
        choices=["pillow", "nvimgcodec"],
        default="pillow",
        help="as the server's --image-decoder: nvimgcodec decodes JPEGs in the embedding "
        "actors, on their GPU with --gpus-per-actor (needs the gpu extra on the workers)",
    )
    ingest.add_argument(
        "--regions",
        choices=sorted(REGION_POLICIES),
        default="none",
        help="also embed regions of each image as a server's --regions makes them, for object "
        "search on the built index: grid (9 overlapping boxes of half the width and height) or "
        "none (default; fixed when the dataset is made)",
    )
    _verbose_option(ingest)


def _add_build_index(commands: argparse._SubParsersAction) -> None:
    """`lookalike build-index`"""
    build = _command(
        commands,
        "build-index",
        "build (or update) a sharded index from an ingested dataset, on Ray",
        build_index_command,
    )
    build.add_argument("dataset", type=Path, help="a dataset directory made by `ingest`")
    build.add_argument("--output", "-o", type=Path, required=True, help="the index directory")
    build.add_argument(
        "--shards", type=int, default=0, help="a new index's shard count (default 1); kept after"
    )
    defaults = BUILT_INDEX_SETTINGS
    build.add_argument(
        "--dtype",
        choices=DTYPES,
        help="vector type in a new index's shards (default: bf16 where the CPU has native bf16 "
        "dot products, else f16)",
    )
    build.add_argument(
        "--connectivity", type=int, default=defaults.connectivity, help="HNSW graph degree"
    )
    build.add_argument(
        "--expansion-add", type=int, default=defaults.expansion_add, help="HNSW build breadth"
    )
    build.add_argument(
        "--expansion-search",
        type=int,
        default=defaults.expansion_search,
        help="HNSW search breadth recorded in the index (servers may override it)",
    )
    build.add_argument(
        "--delete",
        action="append",
        default=[],
        metavar="ID",
        help="remove this id from the new version (repeatable)",
    )
    build.add_argument("--delete-file", type=Path, help="remove the ids listed, one per line")
    build.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local)")
    _verbose_option(build)


def _verbose_option(parser: argparse.ArgumentParser) -> None:
    """`--verbose`, as every command on Ray takes it."""
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="show Ray's and Ray Data's own output (progress lines, worker logs) here; "
        "without it, that output stays in Ray's log folder, said at the start",
    )


def _add_import(commands: argparse._SubParsersAction) -> None:
    """`lookalike import`"""
    load = _command(
        commands,
        "import",
        "load a dataset's vectors into a stopped server's --data-dir (no re-embedding)",
        import_command,
    )
    load.add_argument("dataset", type=Path, help="a dataset directory made by `ingest`")
    load.add_argument("--data-dir", type=Path, required=True, help="the server's data directory")


def _add_reembed(commands: argparse._SubParsersAction) -> None:
    """`lookalike reembed`"""
    move = _command(
        commands,
        "reembed",
        "move a data directory's collection to a new model: re-embed every item from its "
        "recorded source into a new data directory (resumable; the old server keeps serving)",
        reembed_command,
    )
    move.add_argument("data_dir", type=Path, help="the old server's --data-dir (only read)")
    move.add_argument("--model-dir", type=Path, required=True, help="the new model package")
    move.add_argument(
        "--output", "-o", type=Path, required=True, help="the new data directory (made or resumed)"
    )
    move.add_argument(
        "--precision",
        choices=["fp32", "fp16", "int8"],
        help="model variant (default: as the server picks)",
    )


def _add_legacy_ids(commands: argparse._SubParsersAction) -> None:
    """`lookalike legacy-ids`"""
    legacy = _command(
        commands,
        "legacy-ids",
        "list a data directory's ids that a server would not store today (not in Unicode NFC, "
        "or holding an invisible or format character): stored before ids were normalised, each "
        "is still served under its id as stored (only read: its server may keep serving)",
        legacy_ids_command,
    )
    legacy.add_argument("data_dir", type=Path, help="a server's --data-dir")
    legacy.add_argument("--json", action="store_true", help="print one JSON object")


def _add_versions(commands: argparse._SubParsersAction) -> None:
    """`lookalike versions`"""
    versions = _command(
        commands,
        "versions",
        "list a built index's versions, or make a kept one current",
        versions_command,
    )
    versions.add_argument("index", type=Path, help="a built index (lookalike build-index)")
    versions.add_argument(
        "--current",
        metavar="VERSION",
        help="serve this version (e.g. v00002) from now on: a rollback, or forward again",
    )


def _add_cluster(commands: argparse._SubParsersAction) -> None:
    """`lookalike cluster serve`"""
    cluster = commands.add_parser(
        "cluster", help="run Lookalike on a Ray cluster", description="run Lookalike on Ray"
    )
    cluster_commands = cluster.add_subparsers(
        dest="cluster_command", required=True, help="serve: a built index on Ray Serve"
    )
    cluster_serve = cluster_commands.add_parser(
        "serve",
        help=CLUSTER_SERVE_HELP,
        description=CLUSTER_SERVE_HELP,
    )
    cluster_serve.add_argument("index", type=Path, help="a built index (lookalike build-index)")
    cluster_serve.add_argument(
        "server_flags",
        nargs=argparse.REMAINDER,
        help="lookalike-server's flags: --model-dir M (required), --ray-address, "
        "--shard-replicas, --embed-replicas, --embed-max-replicas, --port, --token, ...",
    )
    cluster_serve.set_defaults(run=cluster_command)


@contextlib.contextmanager
def _cluster_extra(command: str) -> Iterator[None]:
    """Around the imports of a command that needs `lookalike[cluster]` (Ray, pyarrow)."""
    try:
        yield
    except ImportError as exc:
        raise CommandError(
            f"{command} needs Ray and pyarrow ({exc.name} is missing): "
            "pip install 'lookalike[cluster]'",
            EXIT_BAD_INPUT,
        ) from exc


def ingest_command(args: argparse.Namespace) -> int:
    """Runs on Ray, not through a server (as build-index and import do)."""
    with _cluster_extra("ingest"):
        from lookalike.batch.dataset import DatasetError
        from lookalike.batch.ingest import IngestSettings, ingest
        from lookalike.batch.sources import SourceError
    from lookalike.export.manifest import Precision
    from lookalike.server.embed.preprocess import PreprocessMode
    from lookalike.server.embed.settings import ImageDecoder
    from lookalike.server.regions import RegionPolicy

    settings = IngestSettings(
        model_dir=args.model_dir,
        output=args.output,
        address=args.address,
        actors=args.actors,
        gpus_per_actor=args.gpus_per_actor,
        batch_size=args.batch_size,
        vector_dtype=args.vector_dtype,
        partitions=args.partitions,
        precision=Precision(args.precision) if args.precision else None,
        preprocess_mode=PreprocessMode(args.preprocess),
        image_decoder=ImageDecoder(args.image_decoder),
        regions=RegionPolicy(args.regions),
        verbose=args.verbose,
    )
    try:
        summary = ingest(args.sources, settings)
    except (SourceError, DatasetError) as error:
        raise CommandError(str(error), EXIT_BAD_INPUT) from error
    except RayConnectionError as error:
        raise CommandError(str(error), EXIT_UNREACHABLE) from error
    print(summary.describe())
    return EXIT_SOME_FAILED if summary.failures or summary.failed_before else 0


def _dtype_for_this_cpu(output: Path) -> str:
    """The dtype a new index gets on this CPU, said; an existing index keeps its own."""
    from lookalike.server.index.built_index import CURRENT_FILE
    from lookalike.server.index.vector_index import dtype_for_this_cpu

    choice = dtype_for_this_cpu(dims=512)  # the kernel does not depend on the width
    if not (output / CURRENT_FILE).is_file():
        print(f"dtype {choice.dtype}: {choice.reason} (--dtype to choose)")
    return choice.dtype


def build_index_command(args: argparse.Namespace) -> int:
    with _cluster_extra("build-index"):
        from lookalike.batch.build_index import BuildSettings, build_index
        from lookalike.batch.dataset import DatasetError
        from lookalike.server.index.built_index import BuiltIndexError
    from lookalike.server.errors import InvalidArgumentError

    delete = list(args.delete)
    if args.delete_file:
        lines = read_file(args.delete_file).decode("utf-8").splitlines()
        delete += [line.strip() for line in lines if line.strip()]
    settings = BuildSettings(
        dataset=args.dataset,
        output=args.output,
        shards=args.shards,
        index=dataclasses.replace(
            BUILT_INDEX_SETTINGS,
            dtype=args.dtype or _dtype_for_this_cpu(args.output),
            connectivity=args.connectivity,
            expansion_add=args.expansion_add,
            expansion_search=args.expansion_search,
        ),
        delete=delete,
        address=args.address,
        verbose=args.verbose,
    )
    try:
        summary = build_index(settings)
    except (DatasetError, BuiltIndexError, InvalidArgumentError) as error:
        raise CommandError(str(error), EXIT_BAD_INPUT) from error
    except RayConnectionError as error:
        raise CommandError(str(error), EXIT_UNREACHABLE) from error
    print(summary.describe())
    return 0


def versions_command(args: argparse.Namespace) -> int:
    """Reads and writes the index directory."""
    from lookalike.server.index.built_index import (
        BuiltIndexError,
        list_versions,
        make_current,
        read_manifest,
    )

    try:
        if args.current:
            manifest = make_current(args.index, args.current)
            print(
                f"{args.index} now serves {manifest.name} ({manifest.items} items): fronts with "
                "--shards-on-ray switch to it by themselves; restart --index servers"
            )
            return 0
        current = read_manifest(args.index).name
        for manifest in list_versions(args.index):
            built = time.strftime("%Y-%m-%d %H:%M", time.localtime(manifest.created))
            mark = "*" if manifest.name == current else " "
            print(
                f"{mark} {manifest.name}  {built}  {manifest.items} items  "
                f"{len(manifest.shards)} shards  {manifest.settings.dtype}"
            )
    except BuiltIndexError as error:
        raise CommandError(str(error), EXIT_BAD_INPUT) from error
    return 0


def import_command(args: argparse.Namespace) -> int:
    with _cluster_extra("import"):
        from lookalike.batch.dataset import DatasetError
        from lookalike.batch.importer import import_dataset
    from lookalike.server.errors import DataDirError

    with tqdm(unit="vector", desc="stored durably", disable=None) as progress:
        try:
            summary = import_dataset(args.dataset, args.data_dir, on_commit=progress.update)
        except (DatasetError, DataDirError) as error:
            raise CommandError(str(error), EXIT_BAD_INPUT) from error
    print(summary.describe())
    return 0


def reembed_command(args: argparse.Namespace) -> int:
    """In this process, with the server's own core (no Ray, no server)."""
    from lookalike.batch.reembed import ReembedSettings, reembed
    from lookalike.export.manifest import Precision
    from lookalike.server.embed.onnx_engine import EngineSettings
    from lookalike.server.errors import DataDirError, ModelLoadError
    from lookalike.server.index.local_repository import DATABASE_FILE
    from lookalike.server.index.store import StoreReader

    settings = ReembedSettings(
        source=args.data_dir,
        model_dir=args.model_dir,
        output=args.output,
        engine=EngineSettings(precision=Precision(args.precision) if args.precision else None),
    )
    try:
        total = StoreReader(args.data_dir / DATABASE_FILE).count()
        with tqdm(total=total, unit="item", desc="re-embedded", disable=None) as progress:
            summary = asyncio.run(reembed(settings, on_item=progress.update))
    except (DataDirError, ModelLoadError) as error:
        raise CommandError(str(error), EXIT_BAD_INPUT) from error
    print(summary.describe())
    return EXIT_SOME_FAILED if summary.failed else 0


def legacy_ids_command(args: argparse.Namespace) -> int:
    """Each id is shown as a Python string literal: what makes it a legacy one is invisible."""
    from lookalike.server.errors import DataDirError
    from lookalike.server.index.local_repository import DATABASE_FILE
    from lookalike.server.index.store import StoreReader
    from lookalike.server.item_ids import stored_id_problem

    legacy: dict[str, str] = {}
    scanned = 0
    try:
        for item in StoreReader(args.data_dir / DATABASE_FILE).items(LEGACY_IDS_PAGE):
            scanned += 1
            problem = stored_id_problem(item.id)
            if problem is not None:
                legacy[item.id] = problem
    except DataDirError as error:
        raise CommandError(str(error), EXIT_BAD_INPUT) from error
    if args.json:
        rows = [{"id": item_id, "problem": problem} for item_id, problem in legacy.items()]
        print(json.dumps({"scanned": scanned, "legacy": rows}))
        return 0
    for item_id, problem in legacy.items():
        print(f"  {item_id!a}  {problem}")
    print(
        f"{len(legacy)} of {scanned:,} ids stored before ids were normalised; each is served "
        "as stored: to replace one, add its item under a new id, then delete the old id"
    )
    return 0


def cluster_command(args: argparse.Namespace) -> int:
    """`cluster serve`: the server in this process, as its front."""
    with _cluster_extra("cluster serve"):
        import ray  # noqa: F401  (the extra, checked before the server starts)
    from lookalike.server.app import main as serve

    return serve(
        ["--index", str(args.index), "--shards-on-ray", "--embed-on-ray", *args.server_flags]
    )
