"""What to ingest: folders, globs, single images, list files and object-store prefixes, as
(id, uri, metadata) rows.

Ids follow `lookalike index`: a folder's images are named by their path relative to it, an
object-store prefix's (`s3://bucket/photos/`, `gs://...`: any filesystem pyarrow opens) by their
key relative to the prefix. A list file names its images one per line (`.txt`), or in a table
(`.csv`, `.parquet`) with a `path` (or `uri`) column, an optional `id` column (default: the
path as written) and any other columns as string metadata; relative paths are read against the
list file's folder. WebDataset tar shards (`shard-000.tar`, local or on an object store) give
one image per sample: its id is the sample's key (the member name up to the first dot), its
metadata the sample's `.json` (values as strings) and `.txt` (as `caption`); the image is read
back by its byte range, without scanning the tar again. `read_bytes` reads any of these uris,
in the workers too.

Every id is given in its normal form (`normalize_id`: NFC), so that a name written two ways
is one image; an id `normalize_id` refuses (an invisible or format character in a file name)
is given as found, and `lookalike ingest` reports its image as an error.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import glob
import json
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from lookalike.client.files import IMAGE_SUFFIXES, file_id, image_files
from lookalike.server.errors import InvalidArgumentError
from lookalike.server.item_ids import normalize_id

__all__ = ["SourceError", "SourceImage", "iter_sources", "read_bytes"]

LIST_SUFFIXES = (".txt", ".csv", ".parquet")
PATH_COLUMNS = ("path", "uri")
TAR_MEMBER = "#"  # a tar member's uri: SHARD#MEMBER@OFFSET+SIZE


class SourceError(Exception):
    """A source that does not exist or cannot be read as what it claims to be."""


@dataclasses.dataclass(frozen=True)
class SourceImage:
    id: str
    uri: str  # where to read the bytes (a local path)
    metadata: dict[str, str]


def iter_sources(specs: Sequence[str]) -> Iterator[SourceImage]:
    """Every image the specs name, as they are found (a stream: never all in memory). Two
    images with one id are both given; the dataset keeps one and records the other."""
    for spec in specs:
        for image in _expand(spec):
            with contextlib.suppress(InvalidArgumentError):  # refused: ingest reports it
                image = dataclasses.replace(image, id=normalize_id(image.id))
            yield image


def read_bytes(uri: str) -> bytes:
    """The bytes at a local path, an object-store uri, or a member of a tar shard."""
    if TAR_MEMBER in uri:
        shard, member = uri.rsplit(TAR_MEMBER, 1)
        offset, size = (int(n) for n in member.rsplit("@", 1)[1].split("+"))
        with _open(shard) as stream:
            stream.seek(offset)
            return stream.read(size)
    with _open(uri) as stream:
        return stream.read()


def _open(uri: str):  # -> a seekable binary file
    if "://" not in uri:
        return Path(uri).open("rb")
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    return filesystem.open_input_file(path)


def _expand(spec: str) -> Iterator[SourceImage]:
    if spec.lower().endswith(".tar"):
        yield from _tar_shard(spec if "://" in spec else str(Path(spec).expanduser().resolve()))
        return
    if "://" in spec:
        yield from _object_store(spec)
        return
    path = Path(spec).expanduser()
    if path.is_dir():
        for file in image_files(path, recursive=True):
            yield SourceImage(file_id(file, path), str(file.resolve()), {})
    elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        yield from _listed(path)
    elif path.is_file():
        yield SourceImage(path.name, str(path.resolve()), {})
    elif glob.has_magic(spec):
        root = Path(spec.split("*")[0].split("?")[0].split("[")[0]).expanduser()
        root = root if root.is_dir() else root.parent
        for match in sorted(glob.glob(str(path), recursive=True)):
            file = Path(match)
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                yield SourceImage(file_id(file, root), str(file.resolve()), {})
    else:
        raise SourceError(f"{spec}: no such folder, image, list file or glob")


def _tar_shard(shard: str) -> Iterator[SourceImage]:
    """The samples of a WebDataset shard that hold an image."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    texts: dict[str, dict[str, bytes]] = {}
    try:
        with _open(shard) as stream, tarfile.open(fileobj=stream, mode="r:") as archive:
            for member in archive.getmembers():
                if not member.isfile():
                    continue
                directory, _, name = member.name.rpartition("/")
                stem, _, suffix = name.partition(".")
                key = f"{directory}/{stem}" if directory else stem
                samples.setdefault(key, {})[suffix.lower()] = member
                if suffix.lower() in ("json", "txt"):
                    content = archive.extractfile(member)
                    texts.setdefault(key, {})[suffix.lower()] = content.read() if content else b""
    except (OSError, tarfile.TarError) as exc:
        raise SourceError(f"{shard}: not a readable tar shard ({exc})") from exc
    for key, files in sorted(samples.items()):
        image = next((m for s, m in files.items() if f".{s}" in IMAGE_SUFFIXES), None)
        if image is not None:
            uri = f"{shard}{TAR_MEMBER}{image.name}@{image.offset_data}+{image.size}"
            yield SourceImage(key, uri, _sample_metadata(texts.get(key, {})))


def _sample_metadata(texts: dict[str, bytes]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    if "json" in texts:
        with contextlib.suppress(ValueError):
            document = json.loads(texts["json"])
            if isinstance(document, dict):
                metadata.update(
                    (k, v if isinstance(v, str) else json.dumps(v)) for k, v in document.items()
                )
    if "txt" in texts:
        metadata["caption"] = texts["txt"].decode("utf-8", "replace").strip()
    return metadata


def _object_store(prefix: str) -> Iterator[SourceImage]:
    """Every image object under an object-store prefix (credentials and endpoint as pyarrow
    reads them: AWS_* environment variables, ~/.aws, instance roles)."""
    from pyarrow import fs

    scheme = prefix.split("://")[0]
    try:
        filesystem, root = fs.FileSystem.from_uri(prefix)
        infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    except (OSError, ValueError) as exc:
        raise SourceError(f"{prefix}: cannot list it ({exc})") from exc
    for info in sorted(infos, key=lambda i: i.path):
        if info.type == fs.FileType.File and Path(info.path).suffix.lower() in IMAGE_SUFFIXES:
            item_id = info.path[len(root) :].lstrip("/")
            yield SourceImage(item_id, f"{scheme}://{info.path}", {})


def _listed(list_file: Path) -> Iterator[SourceImage]:
    rows = _rows(list_file)
    for number, row in enumerate(rows, 1):
        location = next((row[c] for c in PATH_COLUMNS if row.get(c)), None)
        if location is None:
            raise SourceError(f"{list_file}, row {number}: no `path` or `uri` value")
        if "://" in location:
            uri = location
        else:
            file = Path(location).expanduser()
            uri = str((file if file.is_absolute() else list_file.parent / file).resolve())
        metadata = {k: str(v) for k, v in row.items() if k not in (*PATH_COLUMNS, "id") and v}
        yield SourceImage(str(row.get("id") or location), uri, metadata)


def _rows(list_file: Path) -> Iterator[dict[str, str]]:
    """The list file's rows, streamed."""
    suffix = list_file.suffix.lower()
    if suffix == ".txt":
        with list_file.open(encoding="utf-8") as stream:
            yield from ({"path": line.strip()} for line in stream if line.strip())
    elif suffix == ".csv":
        with list_file.open(newline="", encoding="utf-8") as stream:
            yield from csv.DictReader(stream)
    else:
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(list_file).iter_batches():
            yield from batch.to_pylist()
