"""Server settings: frozen, keyword-only, built once in `main` from flags and LOOKALIKE_* env.
The model's part is the embedding runtime's own `EmbedSettings`."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from lookalike.export.manifest import Precision
from lookalike.server.cluster.settings import ClusterSettings, EmbedPlacement, ShardPlacement
from lookalike.server.embed.batcher import BatcherSettings
from lookalike.server.embed.onnx_engine import EngineSettings, Provider
from lookalike.server.embed.preprocess import ImageLimits, PreprocessMode
from lookalike.server.embed.settings import EmbedSettings, ImageDecoder
from lookalike.server.index.settings import DTYPES, IndexSettings
from lookalike.server.regions import RegionPolicy
from lookalike.server.request_types import RequestLimits

__all__ = ["ServerConfig", "parse_config", "ENV_PREFIX"]

ENV_PREFIX = "LOOKALIKE_"
TRUE = ("1", "true", "yes", "on")  # what a switch's environment variable accepts as set


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerConfig:
    embed: EmbedSettings  # the model package, its engines and queues
    data_dir: Path | None = None  # the durable store; or, read-only:
    index_dir: Path | None = None  # a built index (lookalike build-index)
    shards_on_ray: ClusterSettings | None = None  # serve index_dir's shards on Ray Serve
    host: str = "127.0.0.1"
    port: int = 50051
    index: IndexSettings = dataclasses.field(default_factory=IndexSettings)
    max_message_bytes: int = 64 * 2**20
    request_limits: RequestLimits = dataclasses.field(default_factory=RequestLimits)
    regions: RegionPolicy = RegionPolicy.NONE  # what an added image without a policy gets
    thumbnails: bool = True  # keep a small JPEG of each added image (for pages)
    http_port: int | None = None  # serve the JSON API and the web app here too (0: any free)
    http_cors: tuple[str, ...] = ()  # origins whose pages may call the HTTP API
    duplicates_threshold: float | None = None  # calibrated for the model (web app's default)
    snapshot_interval_s: float = 300.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = dataclasses.field(default=None, repr=False)  # never printed
    metrics_port: int | None = None
    grace_s: float = 10.0
    engine_probe_s: float = 5.0  # while the engine fails, self-test it this often
    log_level: str = "INFO"


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Flags:
    """Adds flags to one section of the help, each also read from LOOKALIKE_<FLAG>."""

    def __init__(self, parser: argparse.ArgumentParser, title: str, environ: Mapping[str, str]):
        self._group = parser.add_argument_group(title)
        self._environ = environ

    def __call__(self, name: str, **kwargs: object) -> None:
        env = ENV_PREFIX + name.lstrip("-").replace("-", "_").upper()
        if env in self._environ:
            switch = kwargs.get("action") == "store_true"
            kwargs["default"] = self._environ[env].lower() in TRUE if switch else self._environ[env]
            kwargs["required"] = False
        help_text = str(kwargs.pop("help", ""))
        self._group.add_argument(name, help=f"{help_text} [{env}]", **kwargs)  # type: ignore[arg-type]


DEFAULTS = ServerConfig(embed=EmbedSettings(model_dir=Path()))


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookalike-server",
        formatter_class=_HelpWithDefaults,
        description="Lookalike image search server (gRPC, and HTTP with --http-port). Every "
        f"flag can also be set with the environment variable {ENV_PREFIX}<FLAG> (e.g. "
        f"{ENV_PREFIX}MODEL_DIR).",
    )
    _storage_flags(_Flags(parser, "what it serves", environ))
    _embed_flags(_Flags(parser, "the model and its queues", environ))
    _request_flags(_Flags(parser, "requests", environ))
    _transport_flags(_Flags(parser, "listening", environ))
    _cluster_flags(_Flags(parser, "a built index on Ray Serve (--shards-on-ray)", environ))
    return parser


def _storage_flags(flag: _Flags) -> None:
    index = DEFAULTS.index
    flag("--data-dir", type=Path, help="where the items and index are kept (read and write)")
    flag(
        "--index",
        type=Path,
        help="serve a built index (lookalike build-index) read-only, instead of a --data-dir",
    )
    flag("--index-connectivity", type=int, default=index.connectivity)
    flag("--index-expansion-add", type=int, default=index.expansion_add)
    flag("--index-expansion-search", type=int, default=index.expansion_search)
    flag("--index-dtype", choices=DTYPES, default=index.dtype)
    flag("--exact-search-below", type=int, default=index.exact_search_below)
    flag("--snapshot-interval-s", type=float, default=DEFAULTS.snapshot_interval_s)
    flag(
        "--regions",
        choices=[p.value for p in RegionPolicy],
        default=DEFAULTS.regions.value,
        help="regions the server cuts from each added image (an Add may choose otherwise): "
        "none, or grid (9 overlapping boxes of half the image's width and height, stored as "
        "vectors besides the whole image)",
    )
    flag(
        "--no-thumbnails",
        action="store_true",
        help="keep no thumbnail of added images (saves about 10 KB per item; pages then show "
        "no pictures of results)",
    )


def _embed_flags(flag: _Flags) -> None:
    embed = DEFAULTS.embed
    engine, batcher, text_batcher = embed.engine, embed.batcher, embed.text_batcher
    flag("--model-dir", type=Path, required=True, help="directory written by lookalike-export")
    flag("--precision", choices=[p.value for p in Precision], help="default: int8 CPU, fp16 GPU")
    flag("--provider", choices=[p.value for p in Provider], default=engine.provider.value)
    flag("--threads", type=int, default=engine.intra_op_threads, help="inference threads; 0 all")
    flag("--max-batch", type=int, default=batcher.max_batch, help="images per inference batch")
    flag(
        "--max-delay-ms",
        type=float,
        default=batcher.max_delay_ms,
        help="longest wait for inputs still being prepared to join a batch",
    )
    flag("--max-queue", type=int, default=batcher.max_queue, help="queued images before refusal")
    flag(
        "--preprocess-threads",
        type=int,
        default=batcher.preprocess_threads,
        help="images decoded at once (with --preprocess-processes: handed to the processes)",
    )
    flag(
        "--preprocess-processes",
        type=int,
        default=embed.preprocess_processes,
        help="decode and resize in this many worker processes, beyond one interpreter's GIL "
        "(0: in the server's own threads)",
    )
    flag("--preprocess", choices=[m.value for m in PreprocessMode], default="fast")
    flag(
        "--image-decoder",
        choices=[d.value for d in ImageDecoder],
        default=embed.image_decoder.value,
        help="nvimgcodec: decode JPEGs, resize and crop them where the engine runs (on the "
        "GPU with --provider cuda; needs the gpu extra), as --preprocess exact does",
    )
    flag(
        "--max-pixels",
        type=int,
        default=embed.image_limits.max_pixels,
        help="per image, before decoding",
    )
    flag(
        "--no-text",
        action="store_true",
        help="do not load the text tower (saves its memory; text requests are then refused)",
    )
    flag("--text-max-batch", type=int, default=text_batcher.max_batch, help="texts per batch")
    flag("--text-max-queue", type=int, default=text_batcher.max_queue, help="queued texts")


def _request_flags(flag: _Flags) -> None:
    requests = DEFAULTS.request_limits
    flag("--max-message-bytes", type=int, default=DEFAULTS.max_message_bytes)
    flag(
        "--max-images-per-request",
        type=int,
        default=requests.max_images_per_request,
        help="images, or texts, in one Embed request",
    )
    flag("--max-text-bytes", type=int, default=requests.max_text_bytes, help="UTF-8, per text")
    flag(
        "--max-regions",
        type=int,
        default=requests.max_regions_per_item,
        help="regions per item, given and server-made together",
    )
    flag(
        "--duplicates-threshold",
        type=float,
        help="the cosine the web app's duplicates view starts at: the one `lookalike "
        "duplicates --calibrate` recommends for this model (unset: 0.95, marked uncalibrated)",
    )


def _transport_flags(flag: _Flags) -> None:
    flag("--host", default=DEFAULTS.host, help="address to listen on")
    flag("--port", type=int, default=DEFAULTS.port, help="port; 0 picks a free one")
    flag(
        "--http-port",
        type=int,
        help="also serve the JSON API and the web app over HTTP on this port, with the same "
        "token and TLS certificate (0 picks a free one; off if unset)",
    )
    flag(
        "--http-cors",
        metavar="ORIGIN[,ORIGIN]",
        default="",
        help="let pages from these origins call the HTTP API (e.g. https://app.example.com; "
        "off by default)",
    )
    flag("--tls-cert", type=Path, help="PEM certificate chain; with --tls-key enables TLS")
    flag("--tls-key", type=Path, help="PEM private key")
    flag("--token", help="require 'authorization: Bearer TOKEN' on every call")
    flag(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on this port (off if unset; 0 picks a free one)",
    )
    flag("--grace-s", type=float, default=DEFAULTS.grace_s, help="drain time on shutdown")
    flag("--log-level", default=DEFAULTS.log_level, choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _cluster_flags(flag: _Flags) -> None:
    cluster, placement, embedding = ClusterSettings(), ShardPlacement(), EmbedPlacement()
    flag(
        "--shards-on-ray",
        action="store_true",
        help="with --index: run its shards as Ray Serve deployments (lookalike[cluster]) and "
        "answer as their gRPC front",
    )
    flag("--ray-address", help="with --shards-on-ray (default: RAY_ADDRESS, else a local Ray)")
    flag(
        "--shard-replicas",
        type=int,
        default=placement.replicas,
        help="with --shards-on-ray: replicas per shard",
    )
    flag(
        "--shard-replicas-of",
        metavar="SHARD=N[,SHARD=N]",
        default="",
        help="with --shards-on-ray: other replica counts for these shards (hot ones), e.g. 3=4",
    )
    flag("--shard-cpus", type=float, default=placement.cpus, help="CPUs per shard replica")
    flag(
        "--shard-timeout-s",
        type=float,
        default=cluster.shard_timeout_s,
        help="a shard that has not answered by then fails the call with UNAVAILABLE",
    )
    flag(
        "--watch-interval-s",
        type=float,
        default=cluster.watch_interval_s,
        help="how often the front checks shard replicas' health and the index's current version",
    )
    flag(
        "--embed-on-ray",
        action="store_true",
        help="with --shards-on-ray: embed images and texts in a Ray Serve deployment instead "
        "of this process (the front then loads no model)",
    )
    flag("--embed-replicas", type=int, default=embedding.replicas, help="embedding replicas")
    flag(
        "--embed-max-replicas",
        type=int,
        default=embedding.max_replicas,
        help="above --embed-replicas: Serve autoscales the embedder up to this many on the "
        "images each replica holds",
    )
    flag("--embed-cpus", type=float, default=embedding.cpus, help="CPUs per embedding replica")
    flag(
        "--embed-gpus",
        type=float,
        default=embedding.gpus,
        help="GPUs per embedding replica (with --provider cuda)",
    )
    flag(
        "--retire-after-s",
        type=float,
        default=cluster.retire_after_s,
        help="a replaced version's shards keep running this long after a switch",
    )


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    if (args.data_dir is None) == (args.index is None):
        parser.error("give one of --data-dir (a read-write store) or --index (a built index)")
    if args.shards_on_ray and args.index is None:
        parser.error("--shards-on-ray serves the shards of an --index")
    if args.embed_on_ray and not args.shards_on_ray:
        parser.error("--embed-on-ray goes with --shards-on-ray")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    try:
        return ServerConfig(
            embed=_embed_settings(args),
            data_dir=Path(args.data_dir) if args.data_dir else None,
            index_dir=Path(args.index) if args.index else None,
            shards_on_ray=_cluster_settings(args) if args.shards_on_ray else None,
            host=args.host,
            port=int(args.port),
            index=IndexSettings(
                connectivity=int(args.index_connectivity),
                expansion_add=int(args.index_expansion_add),
                expansion_search=int(args.index_expansion_search),
                dtype=args.index_dtype,
                exact_search_below=int(args.exact_search_below),
            ),
            max_message_bytes=int(args.max_message_bytes),
            request_limits=RequestLimits(
                max_images_per_request=int(args.max_images_per_request),
                max_text_bytes=int(args.max_text_bytes),
                max_regions_per_item=int(args.max_regions),
            ),
            regions=RegionPolicy(args.regions),
            thumbnails=not args.no_thumbnails,
            http_port=None if args.http_port is None else int(args.http_port),
            http_cors=tuple(o.strip() for o in args.http_cors.split(",") if o.strip()),
            duplicates_threshold=None
            if args.duplicates_threshold is None
            else float(args.duplicates_threshold),
            snapshot_interval_s=float(args.snapshot_interval_s),
            tls_cert=Path(args.tls_cert) if args.tls_cert else None,
            tls_key=Path(args.tls_key) if args.tls_key else None,
            token=args.token or None,
            metrics_port=None if args.metrics_port is None else int(args.metrics_port),
            grace_s=float(args.grace_s),
            log_level=args.log_level,
        )
    except ValueError as exc:
        parser.error(str(exc))


def _embed_settings(args: argparse.Namespace) -> EmbedSettings:
    return EmbedSettings(
        model_dir=Path(args.model_dir),
        engine=EngineSettings(
            provider=Provider(args.provider),
            precision=Precision(args.precision) if args.precision else None,
            intra_op_threads=int(args.threads),
        ),
        batcher=BatcherSettings(
            max_batch=int(args.max_batch),
            max_delay_ms=float(args.max_delay_ms),
            max_queue=int(args.max_queue),
            preprocess_threads=int(args.preprocess_threads),
        ),
        text=not args.no_text,
        text_batcher=dataclasses.replace(
            DEFAULTS.embed.text_batcher,
            max_batch=int(args.text_max_batch),
            max_delay_ms=float(args.max_delay_ms),
            max_queue=int(args.text_max_queue),
        ),
        preprocess_mode=PreprocessMode(args.preprocess),
        preprocess_processes=int(args.preprocess_processes),
        image_decoder=ImageDecoder(args.image_decoder),
        image_limits=ImageLimits(max_pixels=int(args.max_pixels)),
    )


def _cluster_settings(args: argparse.Namespace) -> ClusterSettings:
    return ClusterSettings(
        address=args.ray_address or None,
        placement=ShardPlacement(
            replicas=int(args.shard_replicas),
            replicas_of=_replicas_of(args.shard_replicas_of),
            cpus=float(args.shard_cpus),
        ),
        embedding=EmbedPlacement(
            replicas=int(args.embed_replicas),
            max_replicas=int(args.embed_max_replicas),
            cpus=float(args.embed_cpus),
            gpus=float(args.embed_gpus),
        )
        if args.embed_on_ray
        else None,
        shard_timeout_s=float(args.shard_timeout_s),
        watch_interval_s=float(args.watch_interval_s),
        retire_after_s=float(args.retire_after_s),
    )


def _replicas_of(listed: str) -> dict[int, int]:
    """`--shard-replicas-of 3=4,7=2`: shard 3 gets 4 replicas, shard 7 gets 2."""
    counts = {}
    for pair in filter(None, (part.strip() for part in listed.split(","))):
        shard, sep, count = pair.partition("=")
        if not sep or not shard.strip().isdigit() or not count.strip().isdigit():
            raise ValueError(f"--shard-replicas-of takes SHARD=N[,SHARD=N], got {pair!r}")
        counts[int(shard)] = int(count)
    return counts
