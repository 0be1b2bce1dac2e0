"""Making writes survive a crash: fsync a file's bytes, and a directory's entries after a rename.

Shared by the exporter (publishing a package) and the server (saving an index snapshot).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_file", "fsync_directory", "write_atomically"]


def fsync_file(path: Path) -> None:
    with path.open("rb") as stream:
        os.fsync(stream.fileno())


def fsync_directory(path: Path) -> None:
    """Persist the directory's entries (a rename into it is durable only after this)."""
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old bytes or the new, durably."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        fsync_file(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_directory(path.parent)
