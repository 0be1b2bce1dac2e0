"""What a collection takes on disk."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["bytes_on_disk"]


def bytes_on_disk(directory: Path) -> int:
    """The bytes the files under `directory` take (allocated blocks: a sparse or preallocated
    file counts what it holds); 0 if it does not exist. Files that go while it walks are
    skipped."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name), follow_symlinks=False).st_blocks * 512
            except FileNotFoundError:
                continue
    return total
