"""`lookalike`: the command line, its families put together.

The commands that talk to a server (`index`, `search`, `duplicates`, `stats`, `get`,
`delete`) live in `lookalike.client.cli`; those that need no server (`ingest`, `build-index`,
`import`, `versions`, `cluster serve`) in `lookalike.batch.cli`, whose work (Ray, USearch, ONNX
Runtime) is imported only when one of them runs: `lookalike --help` loads none of it.
Every command's failure is one line on stderr and an exit code (`--help` lists them).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from lookalike.batch.cli import add_commands as add_batch_commands
from lookalike.client.cli import (
    EXIT_BROKEN_PIPE,
    EXIT_CODES_HELP,
    CommandError,
    add_commands,
    connection_options,
)

__all__ = ["main", "build_parser"]

DESCRIPTION = "`lookalike`: index a folder, search by image, id or vector, and inspect a server."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookalike",
        description=DESCRIPTION,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connection_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True)
    add_commands(commands)
    add_batch_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # `lookalike search ... | head -1`: the reader has what it wanted. Point stdout at
        # /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except CommandError as error:
        print(f"lookalike: {error}", file=sys.stderr)
        return error.code
