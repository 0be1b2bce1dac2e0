"""A full disk for tests: a small tmpfs (needs mount rights: root or CAP_SYS_ADMIN; skipped
elsewhere, which fails under LOOKALIKE_REQUIRE_ALL=1), or a file size limit, which any process
may set on itself (RLIMIT_FSIZE, `ulimit -f`): past it a write fails with EFBIG instead of
ENOSPC. Only a real file system shows a full disk to statvfs (free space checks)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` (e.g. "1m") at `directory` for the duration."""
    directory.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command (util-linux) to mount a small tmpfs")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): "
            f"{mounted.stderr.decode().strip()}"
        )
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


# Run by `under_file_size_limit`: lower this process's file size limit, then become the command.
# SIGXFSZ ignored (as Python itself does) so that a write past the limit fails with EFBIG
# rather than killing the process.
LIMIT_THEN_EXEC = """
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
limit = int(sys.argv[1]) if hard == resource.RLIM_INFINITY else min(int(sys.argv[1]), hard)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
os.execvp(sys.argv[2], sys.argv[2:])
"""


def under_file_size_limit(command: list[str], limit_bytes: int) -> list[str]:
    """`command`, run with no file it writes allowed past `limit_bytes` (RLIMIT_FSIZE)."""
    return [sys.executable, "-c", LIMIT_THEN_EXEC, str(limit_bytes), *command]
