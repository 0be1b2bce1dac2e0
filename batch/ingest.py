"""`lookalike ingest`: embed a large collection on Ray Data into a resumable Parquet dataset.

Stages: list sources (the driver streams them to listing files, `listing.py`, and digests each
partition's ids) -> read and preprocess in CPU tasks (a bad image, or an id that
`normalize_id` refuses, becomes an error row with its reason, never a failed job; with
`--regions`, a row per vector: the whole image, then each region) -> embed in an autoscaling
actor pool, each actor loading the model once -> group by partition and write each partition
whole, an image's regions in its row (`dataset.py`).
Only partitions not already done are read. The actor pool autoscales from one actor: a fixed
pool holding every CPU left nothing for the read tasks and hung (ray issue #44687).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from lookalike.batch.dataset import (
    REGION_COLUMN,
    REGIONS_COLUMN,
    VECTOR_DTYPES,
    Dataset,
    partition_of,
    regions_array,
)
from lookalike.batch.listing import LISTING_DIR, Listing
from lookalike.batch.ray_data_output import quiet_ray_data
from lookalike.batch.sources import SourceError, iter_sources, read_bytes
from lookalike.export.manifest import (
    MANIFEST_FILE,
    Manifest,
    ModelIdentity,
    PixelLayout,
    Precision,
    PreprocessSpec,
    sha256_file,
)
from lookalike.server.cluster.ray_session import ray_session
from lookalike.server.embed.device_decode import DeviceDecoder, device_decodable
from lookalike.server.embed.device_images import DeviceImages
from lookalike.server.embed.onnx_engine import (
    EngineSettings,
    OnnxEngine,
    choose_variant,
    read_manifest,
)
from lookalike.server.embed.preprocess import (
    ImageInput,
    ImageLimits,
    PreprocessMode,
    Preprocessor,
    with_regions,
)
from lookalike.server.embed.resize_graph import ResizeCrop
from lookalike.server.embed.settings import ImageDecoder
from lookalike.server.errors import LookalikeError
from lookalike.server.item_ids import normalize_id
from lookalike.server.metrics import Metrics
from lookalike.server.regions import Region, RegionPolicy, policy_regions

__all__ = ["IngestSettings", "IngestSummary", "ingest"]

log = logging.getLogger(__name__)

DEVICE_RUN_ROWS = 32  # JPEGs an actor decoding on the CPU decodes at once (on a GPU: run_rows)
IMAGES_PER_PARTITION = 1000  # the default partition count: one per this many images
# Different CPU requests keep Ray Data from fusing the read tasks into the embedding actors
# (ray issue #54433): decoding then overlaps inference instead of taking turns with it.
READ_TASK_CPUS = 0.5
ACTOR_CPUS = 1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class IngestSettings:
    model_dir: Path
    output: Path
    address: str | None = None  # a Ray cluster; None: RAY_ADDRESS, else a local Ray
    actors: int = 0  # the most embedding actors; 0: one per CPU but one (1 on GPUs)
    gpus_per_actor: float = 0.0
    batch_size: int = 32
    vector_dtype: str = "f16"
    preprocess_mode: PreprocessMode = PreprocessMode.FAST
    # nvimgcodec: the JPEGs a server with --image-decoder nvimgcodec decodes on its device are
    # decoded in the embedding actors, on their GPU where they have one
    image_decoder: ImageDecoder = ImageDecoder.PILLOW
    precision: Precision | None = None  # None: as the server chooses (int8 on CPU)
    partitions: int = 0  # 0: one per IMAGES_PER_PARTITION images (fixed at creation)
    regions: RegionPolicy = RegionPolicy.NONE  # regions made of each image, as the server's
    # Ray's and Ray Data's own output (progress lines, worker logs) on the terminal; else one
    # progress bar, Ray's logs staying in its log folder
    verbose: bool = False


@dataclasses.dataclass(frozen=True)
class IngestSummary:
    images: int  # named by the sources
    already_done: int  # in partitions a previous run completed
    stored: int
    failures: dict[str, int]  # by reason
    seconds: float
    stage_seconds: dict[str, float]  # summed over workers: read, preprocess, embed
    # images that failed in the partitions an earlier run completed, and those partitions'
    # part files (deleting one makes the next run embed its partition again)
    failed_before: int = 0
    retry_parts: tuple[Path, ...] = ()

    @property
    def images_per_s(self) -> float:
        done = self.stored + sum(self.failures.values())
        return done / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        failed = sum(self.failures.values())
        lines = [
            f"{self.images} images: {self.stored} embedded now, {failed} failed, "
            f"{self.already_done} done by an earlier run; "
            f"{self.images_per_s:.1f} images/s over {self.seconds:.1f}s",
        ]
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.stage_seconds.items())
        if stages:
            lines.append(f"worker time by stage: {stages}")
        lines += [f"  {count} failed: {reason}" for reason, count in self.failures.items()]
        if self.failed_before:
            errors = self.retry_parts[0].parent.parent / "errors"
            parts = " ".join(str(path) for path in self.retry_parts)
            lines.append(
                f"  {self.failed_before} of the {self.already_done} done by an earlier run failed "
                f"then (listed in {errors}); to retry them once fixed, delete {parts} and run "
                "again"
            )
        return "\n".join(lines)


def ingest(sources: Sequence[str], settings: IngestSettings) -> IngestSummary:
    started = time.perf_counter()
    manifest = read_manifest(settings.model_dir)
    graph = manifest.graphs["image"]
    # the variant every actor runs, chosen here: fp16 on GPU actors, int8 on CPU ones (as the
    # server chooses), recorded in the dataset so that a rerun cannot mix two
    variant, _ = choose_variant(graph, settings.precision, on_gpu=settings.gpus_per_actor > 0)
    identity = ModelIdentity.of(
        manifest.source,
        graph.output_dim,
        family=manifest.family,
        manifest_sha256=sha256_file(settings.model_dir / MANIFEST_FILE),
    )
    Dataset.refuse_other_model(settings.output, identity)
    listing = Listing.write(settings.output / LISTING_DIR, iter_sources(sources))
    if not listing.count:
        raise SourceError(f"no images in {', '.join(sources)}")
    dataset = Dataset.open(
        settings.output,
        identity=identity,
        partitions=settings.partitions or max(1, -(-listing.count // IMAGES_PER_PARTITION)),
        vector_dtype=settings.vector_dtype,
        embedding=_embedding(variant.precision, settings),
    )
    counted = listing.digests(dataset.partitions)
    digests = {partition: digest.hexdigest() for partition, digest in counted.items()}
    pending = {p for p, digest in digests.items() if not dataset.is_done(p, digest)}
    already = sum(digest.count for p, digest in counted.items() if p not in pending)
    log.info("%d images in %d partitions, %d to do", listing.count, len(digests), len(pending))
    earlier = {p: dataset.failed_in(p) for p in counted if p not in pending}
    failed_before = sum(earlier.values())
    retry = tuple(dataset.part_path(p) for p, failed in sorted(earlier.items()) if failed)
    if not pending:
        seconds = time.perf_counter() - started
        return IngestSummary(listing.count, already, 0, {}, seconds, {}, failed_before, retry)
    # one thread per actor (Ray reserves one CPU for each); a one-thread session gives the
    # server's results bit for bit
    engine_settings = EngineSettings(precision=variant.precision, intra_op_threads=1)
    job = _Job(settings, engine_settings, dataset, digests, manifest)
    to_embed = sum(digest.count for p, digest in counted.items() if p in pending)
    with ray_session(settings.address, quiet=not settings.verbose):
        written = _run_pipeline(listing, pending, job, to_embed)
    failures: collections.Counter[str] = collections.Counter()
    stages: collections.Counter[str] = collections.Counter()
    for summary in written:
        failures.update(json.loads(summary["failures"]))
        stages.update(json.loads(summary["stage_seconds"]))
    return IngestSummary(
        images=listing.count,
        already_done=already,
        stored=sum(int(s["stored"]) for s in written),
        failures=dict(failures.most_common()),
        seconds=time.perf_counter() - started,
        stage_seconds=dict(stages),
        failed_before=failed_before,
        retry_parts=retry,
    )


def _embedding(precision: Precision, settings: IngestSettings) -> dict[str, str]:
    """How the vectors are made, as the dataset records it (a rerun made otherwise is refused);
    "regions" only when some are made, so that datasets made before regions still match."""
    embedding = {"precision": precision.value, "preprocess": settings.preprocess_mode.value}
    if settings.regions is not RegionPolicy.NONE:
        embedding[REGIONS_COLUMN] = settings.regions.value
    if settings.image_decoder is not ImageDecoder.PILLOW:
        embedding["decoder"] = settings.image_decoder.value
    return embedding


@dataclasses.dataclass(frozen=True)
class _Job:
    """What the pipeline's stages need to know."""

    settings: IngestSettings
    engine: EngineSettings
    dataset: Dataset
    digests: dict[int, str]  # partition -> the ids digest its part must record
    manifest: Manifest


def _run_pipeline(
    listing: Listing, pending: set[int], job: _Job, images: int
) -> list[dict[str, Any]]:
    import ray.data

    settings = job.settings
    counter = _progress_counter()
    actors = _actor_limit(settings, int(ray.cluster_resources().get("CPU", 1)))
    listed = ray.data.read_parquet([str(path) for path in listing.files]).map_batches(
        functools.partial(_in_partitions, partitions=job.dataset.partitions, pending=pending),
        batch_format="pyarrow",
    )
    prepared = listed.map_batches(
        functools.partial(
            _prepare_batch,
            spec=job.manifest.preprocess,
            layout=PixelLayout.of(job.manifest.graphs["image"]),
            mode=settings.preprocess_mode,
            regions=policy_regions(settings.regions),
            on_device=settings.image_decoder is ImageDecoder.NVIMGCODEC,
        ),
        batch_format="numpy",
        batch_size=16,
        num_cpus=READ_TASK_CPUS,
    )
    embedded = prepared.map_batches(
        _Embedder,
        fn_constructor_kwargs={
            "model_dir": settings.model_dir,
            "settings": job.engine,
            "counter": counter,
            "device_decoding": _device_decoding(job),
        },
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
        batch_size=settings.batch_size,
        batch_format="numpy",
        num_cpus=ACTOR_CPUS,
        num_gpus=settings.gpus_per_actor or None,
    )
    manifest_sha256 = sha256_file(settings.model_dir / MANIFEST_FILE)
    # one shuffle partition per pending partition, up to Ray Data's default (200): a small
    # run does not start 200 reducers
    most = ray.data.DataContext.get_current().default_hash_shuffle_parallelism
    shuffle_partitions = max(1, min(len(pending), most))
    written = embedded.groupby("partition", num_partitions=shuffle_partitions).map_groups(
        functools.partial(
            _write_partition,
            dataset=job.dataset,
            digests=job.digests,
            manifest_sha256=manifest_sha256,
        ),
        batch_format="numpy",
        num_cpus=READ_TASK_CPUS,  # tasks, not actors: an actor would hold a CPU all along
    )
    with quiet_ray_data(not settings.verbose), _progress_of(counter, images):
        return written.take_all()


class _Counter:
    """Images embedded so far, as the embedding actors report them (a Ray actor)."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, images: int) -> None:
        self.count += images

    def read(self) -> int:
        return self.count


def _progress_counter():
    """A `_Counter` actor on the driver's own node: a worker node lost during the run cannot
    take it (a counter placed there failed the run with ActorDiedError)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0)(_Counter).options(scheduling_strategy=here).remote()


@contextlib.contextmanager
def _progress_of(counter, images: int) -> Iterator[None]:
    """One progress bar (images embedded, rate, time left) while the block runs, read from the
    counter twice a second; shown on a terminal only. A counter that dies stops the bar, never
    the run."""
    import ray

    with tqdm(total=images, unit="image", desc="embedded", disable=None) as bar:
        stop, dead = threading.Event(), threading.Event()

        def update() -> None:
            if dead.is_set():
                return
            try:
                bar.update(ray.get(counter.read.remote()) - bar.n)
            except ray.exceptions.RayActorError as exc:
                log.warning("the progress counter died (%s); the run goes on without it", exc)
                dead.set()

        def follow() -> None:
            while not stop.wait(0.5):
                update()

        thread = threading.Thread(target=follow, name="progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            update()


def _in_partitions(table: pa.Table, partitions: int, pending: set[int]) -> pa.Table:
    """The listed rows of the pending partitions, each with its partition."""
    numbers = [partition_of(item_id, partitions) for item_id in table.column("id").to_pylist()]
    keep = pa.array([number in pending for number in numbers], pa.bool_())
    chosen = [number for number in numbers if number in pending]
    return table.filter(keep).append_column("partition", pa.array(chosen, pa.int64()))


def _actor_limit(settings: IngestSettings, cpus: int) -> int:
    """The most embedding actors: on CPUs, never so many that no CPU is left for reading (a
    pool holding every CPU starved the read tasks and hung, ray issue #44687)."""
    if settings.gpus_per_actor:
        return settings.actors or 1
    spare = max(1, cpus - 1)
    if settings.actors > spare:
        log.warning(
            "--actors %d would take every CPU of the cluster (%d); using %d so that images can "
            "still be read",
            settings.actors,
            cpus,
            spare,
        )
    return min(settings.actors, spare) if settings.actors else spare


def _prepare_batch(
    batch: dict[str, np.ndarray],
    spec: PreprocessSpec,
    layout: PixelLayout,
    mode: PreprocessMode,
    regions: tuple[Region, ...],
    on_device: bool = False,
) -> dict:
    """Read and preprocess in a CPU task: a row per vector to make, the whole image's (its
    `region` "") then its regions'; an unreadable image, or one whose id is refused, becomes
    one error row. `on_device`: a whole image the device decoder takes stays a JPEG (column
    `jpeg`, its pixels left blank) for the embedding actor to decode."""
    preprocess = Preprocessor(spec, layout=layout, mode=mode)
    geometry, blank = ResizeCrop(spec), preprocess.blank()
    made: list[tuple[int, str, np.ndarray | None, str, bytes]] = []  # + region, pixels, error, jpeg
    read_s = prepare_s = 0.0
    for row, uri in enumerate(batch["uri"]):
        try:
            normalize_id(str(batch["id"][row]))  # listed in its normal form, if it has one
        except LookalikeError as exc:
            made.append((row, "", None, f"invalid id: {exc}", b""))
            continue
        started = time.perf_counter()
        try:
            data = read_bytes(str(uri))
        except OSError as exc:
            made.append((row, "", None, f"unreadable: {exc.strerror or exc}", b""))
            continue
        read = time.perf_counter()
        read_s += read - started
        try:
            for box, image in _inputs(data, preprocess.limits, regions):
                if (
                    on_device
                    and isinstance(image, bytes)
                    and device_decodable(image, preprocess.limits, geometry)
                ):
                    made.append((row, box, blank, "", image))
                else:
                    made.append((row, box, preprocess(image), "", b""))
        except LookalikeError as exc:
            made.append((row, "", None, str(exc), b""))
        prepare_s += time.perf_counter() - read
    rows = [row for row, *_ in made]
    return {
        **{name: column[rows] for name, column in batch.items()},
        REGION_COLUMN: np.array([box for _, box, *_ in made], dtype=object),
        "pixels": np.stack([blank if pixels is None else pixels for _, _, pixels, *_ in made]),
        "error": np.array([error for *_, error, _ in made], dtype=object),
        **({"jpeg": np.array([jpeg for *_, jpeg in made], dtype=object)} if on_device else {}),
        "read_s": np.full(len(made), read_s / max(len(made), 1)),
        "preprocess_s": np.full(len(made), prepare_s / max(len(made), 1)),
    }


def _inputs(
    data: bytes, limits: ImageLimits, regions: tuple[Region, ...]
) -> list[tuple[str, ImageInput]]:
    """(region JSON, input): the whole image ("") first, then each region as the server makes
    it (those too small for this image skipped, each cut from the decoded image)."""
    fitted, inputs = with_regions(data, (), regions, limits)
    boxes = ["", *(region.to_json() for region in fitted)]
    return list(zip(boxes, inputs, strict=True))


@dataclasses.dataclass(frozen=True)
class _DeviceDecoding:
    """What an embedding actor needs to decode JPEGs itself, as the server's device decoder."""

    spec: PreprocessSpec
    layout: PixelLayout
    mode: PreprocessMode  # the CPU path's, for a JPEG the device decoder fails on


def _device_decoding(job: _Job) -> _DeviceDecoding | None:
    if job.settings.image_decoder is not ImageDecoder.NVIMGCODEC:
        return None
    layout = PixelLayout.of(job.manifest.graphs["image"])
    return _DeviceDecoding(job.manifest.preprocess, layout, job.settings.preprocess_mode)


class _Embedder:
    """A Ray actor holding one engine: the model is loaded once per actor. With device
    decoding it decodes the batch's JPEGs itself, as a server's device decoder does."""

    def __init__(
        self,
        model_dir: Path,
        settings: EngineSettings,
        counter,
        device_decoding: _DeviceDecoding | None = None,
    ) -> None:
        self.engine = OnnxEngine(model_dir, settings)
        self.counter = counter  # told how many images each batch embedded (the progress bar)
        self.device: DeviceImages | None = None
        if device_decoding is not None:
            spec = device_decoding.spec
            on_gpu = self.engine.info.providers[0] != "CPUExecutionProvider"
            decoder = DeviceDecoder(spec, ImageLimits(), on_gpu=on_gpu)
            cpu_path = Preprocessor(spec, layout=device_decoding.layout, mode=device_decoding.mode)
            rows = self.engine.info.run_rows or DEVICE_RUN_ROWS
            decoded = Metrics.create().decoded_images
            self.device = DeviceImages(self.engine, decoder, cpu_path, rows=rows, decoded=decoded)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        pixels, jpegs = batch.pop("pixels"), batch.pop("jpeg", None)
        good = np.array([not error for error in batch["error"]], dtype=bool)
        vectors = np.zeros((len(good), self.engine.info.dims), np.float32)
        if good.any():
            self._embed_rows(np.flatnonzero(good), pixels, jpegs, vectors, batch["error"])
        seconds = (time.perf_counter() - started) / max(len(good), 1)
        self.counter.add.remote(sum(not box for box in batch[REGION_COLUMN]))  # whole images
        return {**batch, "vector": vectors, "embed_s": np.full(len(good), seconds)}

    def _embed_rows(
        self,
        rows: np.ndarray,
        pixels: np.ndarray,
        jpegs: np.ndarray | None,
        vectors: np.ndarray,
        errors: np.ndarray,
    ) -> None:
        """The vectors of `rows`; a JPEG this actor decodes and then refuses gets its error."""
        if jpegs is None or self.device is None:
            vectors[rows] = self.engine.embed(pixels[rows])
            return
        items = [jpegs[row] or pixels[row] for row in rows]
        for row, result in zip(rows, self.device.embed(items), strict=True):
            if isinstance(result, Exception):
                errors[row] = str(result)
            else:
                vectors[row] = result


def _write_partition(
    group: dict[str, np.ndarray], dataset: Dataset, digests: dict[int, str], manifest_sha256: str
) -> dict[str, np.ndarray]:
    """Write one partition's rows as its part and errors files; return a summary row."""
    partition = int(group["partition"][0])
    is_region = np.array([bool(box) for box in group[REGION_COLUMN]], dtype=bool)
    images = {name: column[~is_region] for name, column in group.items()}
    images["error"] = _mark_duplicates(images["id"], images["uri"], images["error"])
    good = np.array([not error for error in images["error"]], dtype=bool)
    vectors = np.asarray(images["vector"][good], dtype=np.float32).reshape(int(good.sum()), -1)
    dtype = VECTOR_DTYPES[dataset.vector_dtype]
    flat = pa.array(vectors.reshape(-1).astype(dtype.to_pandas_dtype()), type=dtype)
    dims = np.asarray(group["vector"]).shape[1]
    columns = {
        "id": pa.array(images["id"][good].tolist(), pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, dims),
        "metadata": pa.array(images["metadata"][good].tolist(), pa.string()),
        "source": pa.array(images["uri"][good].tolist(), pa.string()),
    }
    if REGIONS_COLUMN in dataset.embedding:
        kept = zip(images["id"][good], images["uri"][good], strict=True)
        columns[REGIONS_COLUMN] = regions_array(
            _regions_of(group, is_region, list(kept)), dtype, dims
        )
    failed = pa.table(
        {
            "id": pa.array(images["id"][~good].tolist(), pa.string()),
            "source": pa.array(images["uri"][~good].tolist(), pa.string()),
            "reason": pa.array(images["error"][~good].tolist(), pa.string()),
        }
    )
    dataset.write_partition(
        partition, digests[partition], pa.table(columns), failed, manifest_sha256=manifest_sha256
    )
    reasons = collections.Counter(_reason_kind(e) for e in images["error"][~good])
    stages = {name: float(np.sum(group[f"{name}_s"])) for name in ("read", "preprocess", "embed")}
    return {
        "partition": np.array([partition]),
        "stored": np.array([int(good.sum())]),
        "failures": np.array([json.dumps(dict(reasons))], dtype=object),
        "stage_seconds": np.array([json.dumps(stages)], dtype=object),
    }


def _regions_of(
    group: dict[str, np.ndarray], is_region: np.ndarray, images: list[tuple[str, str]]
) -> list[list[tuple[str, np.ndarray]]]:
    """Each stored image's (id, uri) regions as (Region JSON, vector), in box order (the
    shuffle delivers rows in any order; a duplicate id's other file keeps none)."""
    found: dict[tuple[str, str], list[tuple[str, np.ndarray]]] = {}
    for row in np.flatnonzero(is_region):
        image = (str(group["id"][row]), str(group["uri"][row]))
        found.setdefault(image, []).append((str(group[REGION_COLUMN][row]), group["vector"][row]))
    return [
        sorted(found.get((str(i), str(u)), []), key=lambda region: _box_order(region[0]))
        for i, u in images
    ]


def _box_order(region_json: str) -> tuple[float, float, float, float]:
    region = Region.from_json(region_json)
    return (region.y0, region.x0, region.y1, region.x1)


def _mark_duplicates(ids: np.ndarray, uris: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Errors, with every row but one of each id made a "duplicate id" error (the kept one is
    the first by uri, so every run keeps the same). All rows of an id share its partition, so
    this sees them all."""
    errors = errors.copy()
    kept: dict[str, str] = {}
    for row in sorted(range(len(ids)), key=lambda r: (ids[r], uris[r])):
        item_id = str(ids[row])
        if item_id in kept:
            errors[row] = f"duplicate id: {item_id!r} is also {kept[item_id]}, which is kept"
        else:
            kept[item_id] = str(uris[row])
    return errors


def _reason_kind(error: str) -> str:
    """Group failure reasons by their kind (the text before any detail)."""
    return str(error).split(":")[0]
