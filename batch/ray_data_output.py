"""Ray's and Ray Data's own console output, kept off the terminal by the offline commands
(`ingest`, `build-index`) unless they run with --verbose."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["quiet_ray_data"]


@contextlib.contextmanager
def quiet_ray_data(quiet: bool) -> Iterator[None]:
    """With `quiet`, Ray Data's progress bars, INFO lines and warnings, and the raylets'
    warnings, stay off the terminal while the block runs (their log files keep them)."""
    if not quiet:
        yield
        return
    with _raylet_messages_in_their_logs(), _ray_data_in_its_log():
        yield


@contextlib.contextmanager
def _raylet_messages_in_their_logs() -> Iterator[None]:
    """A raylet's warnings (such as "N PYTHON worker processes have been started ...") are
    printed by the driver on its stdout whatever `log_to_driver` says, between the lines a
    command prints for scripts to read; each is in that raylet's own log (raylet.out) too."""
    from ray._private import worker

    printing = worker.print_to_stdstream

    def without_raylet_messages(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            printing(data, ignore_prefix)

    worker.print_to_stdstream = without_raylet_messages
    try:
        yield
    finally:
        worker.print_to_stdstream = printing


@contextlib.contextmanager
def _ray_data_in_its_log() -> Iterator[None]:
    """Ray Data's progress bars off, its console handlers at ERROR; its log file keeps all."""
    import ray.data

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
