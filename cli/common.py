"""What every `lookalike` command shares: exit codes, the one-line error, reading files and
KEY=VALUE pairs, the --filter option, the progress bar."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

__all__ = [
    "CommandError",
    "Progress",
    "filter_option",
    "key_value_pairs",
    "read_file",
    "EXIT_CODES_HELP",
    "EXIT_ERROR",
    "EXIT_UNREACHABLE",
    "EXIT_AUTH",
    "EXIT_NOT_FOUND",
    "EXIT_BAD_INPUT",
    "EXIT_SOME_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_BROKEN_PIPE",
]


EXIT_ERROR, EXIT_UNREACHABLE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_BAD_INPUT = 1, 3, 4, 5, 6
EXIT_SOME_FAILED = 7  # `index`: the other files are indexed; the failed ones are listed
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what Unix tools exit with when the reader has gone
EXIT_CODES_HELP = """exit codes:
  0  done (for index: every image file in the folder is indexed)
  1  other error      3  server unreachable    4  token refused
  5  unknown id       6  bad input or file     7  index: some files failed (listed)
  130  interrupted (Ctrl-C)    141  the reader of stdout went away (e.g. | head)"""


class CommandError(Exception):
    """A one-line message for the user, with the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


class Progress(tqdm):
    """A progress bar whose clock starts with the first result.

    The first result waits for the server's first commit group (and, on a fresh server, its
    warm-up); timed from the start, the first estimate would be many times too long.
    """

    def update(self, n: float | None = 1) -> bool | None:
        if not self.n:
            self.reset(total=self.total)
        return super().update(n)


def filter_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--filter",
        "-f",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only items whose metadata has this value (repeatable: all must match)",
    )


def key_value_pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise CommandError(f"{flag} takes KEY=VALUE, got {value!r}", EXIT_BAD_INPUT)
        pairs[key] = item
    return pairs


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}", EXIT_BAD_INPUT) from exc
