"""`lookalike`: every command, each family in its own module.

Talking to a server (`connection`: its options and errors): `index_command`, `search_command`,
`duplicates_command`, `item_commands` (`stats`, `get`, `delete`, `tag`), `shape_commands`
(`clusters`, `outliers`). Needing no server:
`offline_commands` (`ingest`, `build-index`, `import`, `reembed`, `versions`, `cluster serve`),
whose work (Ray, USearch, ONNX Runtime) is imported only when one of them runs: `lookalike
--help` loads none of it. `common` holds what they share: every failure is one line on stderr
and an exit code (`--help` lists them). The server (`lookalike-server`) and the exporter
(`lookalike-export`) are programs of their own, with their flags beside their settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from lookalike.cli import (
    duplicates_command,
    index_command,
    item_commands,
    offline_commands,
    search_command,
    shape_commands,
)
from lookalike.cli.common import EXIT_BROKEN_PIPE, EXIT_CODES_HELP, CommandError
from lookalike.cli.connection import connection_options

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
    index_command.add_command(commands)
    search_command.add_command(commands)
    duplicates_command.add_command(commands)
    item_commands.add_commands(commands)
    shape_commands.add_commands(commands)
    offline_commands.add_commands(commands)
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
