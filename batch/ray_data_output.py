"""Ray Data's own console output, kept off the terminal by the offline commands (`ingest`,
`build-index`) unless they run with --verbose."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["quiet_ray_data"]


@contextlib.contextmanager
def quiet_ray_data(quiet: bool) -> Iterator[None]:
    """With `quiet`, Ray Data's progress bars, INFO lines and warnings stay off the terminal
    while the block runs (its log file keeps them)."""
    import ray.data

    if not quiet:
        yield
        return
    context = ray.data.DataContext.get_current()
    consoles = [
        handler
        for handler in logging.getLogger("ray.data").handlers
        if type(handler).__name__ != "SessionFileHandler"  # its log file keeps everything
    ]
    saved = context.enable_progress_bars, [handler.level for handler in consoles]
    context.enable_progress_bars = False
    for handler in consoles:
        handler.setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.enable_progress_bars = saved[0]
        for handler, level in zip(consoles, saved[1], strict=True):
            handler.setLevel(level)
