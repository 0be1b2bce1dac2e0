"""`lookalike reembed`: move a data directory's collection to a new model.

    OLD data dir (read only: its server keeps serving) --items, in row order-->
    each item's source image (`source_path`, recorded by `lookalike index` and `import`) -->
    the new model package, in this process, through the server's own core (preprocessing,
    regions, thumbnails, commit groups) --> NEW data dir (it records the new model)

Every item keeps its id, metadata and regions (the boxes it was stored with are embedded
again). Resumable: an item already in NEW is not embedded again, so a rerun after an
interruption does only what is left. Items whose source cannot be read, and items added as
vectors (no source at all), are not moved: each is written to NEW/reembed-failures.jsonl with
the reason, and counted. Ids go through the core as a client's would (`normalize_id`): one
stored before ids were normalised moves in its NFC form, and one holding a character now
refused is not moved but listed with the reason (`lookalike legacy-ids` lists them first).
Then serve NEW with the new model (`lookalike-server --model-dir NEW --data-dir NEW`) and
retire the old server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from lookalike.batch.sources import SourceError, read_bytes
from lookalike.client.files import SOURCE_PATH_KEY
from lookalike.server.core import Core
from lookalike.server.embed.embedders import LocalEmbedders
from lookalike.server.embed.onnx_engine import EngineSettings, OnnxEngine
from lookalike.server.embed.settings import EmbedSettings
from lookalike.server.errors import DataDirError, NotFoundError
from lookalike.server.index.datadir import DataDirLock
from lookalike.server.index.local_repository import DATABASE_FILE, LocalRepository
from lookalike.server.index.settings import IndexSettings
from lookalike.server.index.store import StoreReader
from lookalike.server.metrics import Metrics
from lookalike.server.request_types import AddItem, RequestLimits

__all__ = ["FAILURES_FILE", "ReembedSettings", "ReembedSummary", "reembed"]

FAILURES_FILE = "reembed-failures.jsonl"
PAGE = 256  # items read from the old store at a time


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReembedSettings:
    source: Path  # the old data directory
    model_dir: Path  # the new model package
    output: Path  # the new data directory
    engine: EngineSettings = dataclasses.field(default_factory=EngineSettings)


@dataclasses.dataclass(frozen=True)
class ReembedSummary:
    old_model: str
    new_model: str
    items: int  # in the old data directory
    embedded: int  # by this run
    already: int  # in the new data directory before this run
    failed: int  # not moved: see `failures`
    failures: Path
    seconds: float

    def describe(self) -> str:
        rate = self.embedded / self.seconds if self.seconds else 0.0
        lines = [
            f"{self.items} items of {self.old_model} -> {self.new_model}: {self.embedded} "
            f"embedded in {self.seconds:.1f}s ({rate:.1f} items/s), {self.already} already there",
        ]
        if self.failed:
            lines.append(f"{self.failed} not moved (unreadable or no source): see {self.failures}")
        return "\n".join(lines)


async def reembed(
    settings: ReembedSettings, *, on_item: Callable[[int], None] = lambda count: None
) -> ReembedSummary:
    """Re-embed every item of `settings.source` into `settings.output` with the new model;
    `on_item(n)` after each n items handled (embedded, skipped or failed)."""
    started = time.perf_counter()
    if settings.source.resolve() == settings.output.resolve():
        raise DataDirError("the new data directory must be another one than the old")
    reader = StoreReader(settings.source / DATABASE_FILE)
    lock = DataDirLock(settings.output)  # no server may write the new directory meanwhile
    lock.acquire()
    embedders = LocalEmbedders()
    try:
        embedding = EmbedSettings(model_dir=settings.model_dir, text=False, engine=settings.engine)
        metrics = Metrics.create()
        await embedders.load(embedding, metrics, OnnxEngine)
        model = embedders.model
        if reader.identity is not None and reader.identity == model.identity:
            raise DataDirError(
                f"{settings.source} is already embedded with {model.identity.describe()}: "
                "there is nothing to move"
            )
        repository = LocalRepository(settings.output, model.identity, IndexSettings())
        await repository.open()  # refuses a new directory of yet another model
        try:
            core = Core(
                model,
                embedders.image,
                repository,
                metrics,
                limits=RequestLimits(),
                preprocess_mode=embedding.preprocess_mode.value,
            )
            counts = await _move(reader, core, settings.output, on_item)
        finally:
            await repository.close()
    finally:
        await embedders.close()
        lock.release()
    old = reader.identity.describe() if reader.identity else "an unknown model"
    return ReembedSummary(
        old_model=old,
        new_model=model.identity.describe(),
        items=counts["items"],
        embedded=counts["embedded"],
        already=counts["already"],
        failed=counts["failed"],
        failures=settings.output / FAILURES_FILE,
        seconds=time.perf_counter() - started,
    )


async def _move(
    reader: StoreReader,
    core: Core,
    output: Path,
    on_item: Callable[[int], None],
) -> dict[str, int]:
    counts = dict.fromkeys(("items", "embedded", "already", "failed"), 0)
    sources: dict[str, str] = {}  # id -> source, of the items on their way through the core
    with (output / FAILURES_FILE).open("w", encoding="utf-8") as failures:

        def failed(item_id: str, source: str, reason: str) -> None:
            failures.write(json.dumps({"id": item_id, "source": source, "error": reason}) + "\n")
            counts["failed"] += 1
            on_item(1)

        async def to_add() -> AsyncIterator[AddItem]:
            for item in reader.items(PAGE):
                counts["items"] += 1
                if await _stored(core, item.id):
                    counts["already"] += 1
                    on_item(1)
                    continue
                source = item.metadata.get(SOURCE_PATH_KEY, "")
                image = await _source_image(source)
                if isinstance(image, str):
                    failed(item.id, source, image)
                    continue
                sources[item.id] = source
                # the regions it was stored with (given, or made then) are embedded again
                yield AddItem(item.id, image=image, metadata=item.metadata, regions=item.regions)

        async for group in core.add_many(to_add()):
            for result in group.results:
                source = sources.pop(result.id)
                if result.error is None:
                    counts["embedded"] += 1
                    on_item(1)
                else:
                    failed(result.id, source, str(result.error))
    return counts


async def _stored(core: Core, item_id: str) -> bool:
    """Whether the new data directory has the item, looked up as a server would."""
    try:
        await core.get(item_id)
    except NotFoundError:
        return False
    return True


async def _source_image(source: str) -> bytes | str:
    """The image at `source` (a path, an object-store uri, a tar member), or why not."""
    if not source:
        return f"no {SOURCE_PATH_KEY} recorded (added as a vector, or as bytes): nothing to embed"
    try:
        return await asyncio.to_thread(read_bytes, source)
    except (OSError, ValueError, SourceError) as exc:
        return f"cannot read {source}: {getattr(exc, 'strerror', None) or exc}"
