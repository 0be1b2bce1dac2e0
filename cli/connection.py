"""How the commands that talk to a server reach it: the connection options (before or after
the command), and the client's errors as one line and an exit code."""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from pathlib import Path

from lookalike.cli.common import (
    EXIT_AUTH,
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    CommandError,
    read_file,
)
from lookalike.client.api import Client
from lookalike.client.errors import (
    ItemNotFoundError,
    LookalikeClientError,
    ServerUnavailableError,
    UnauthenticatedError,
)

__all__ = ["DEFAULT_SERVER", "Handler", "connection_options", "server_command", "run_with_client"]


DEFAULT_SERVER = "127.0.0.1:50051"
Handler = Callable[[Client, argparse.Namespace], int]


def connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """How to reach the server: accepted before the command and after it.

    The copies after the command default to SUPPRESS, so they never overwrite a value that
    was given before it.
    """

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("server connection")
    group.add_argument(
        "--server",
        default=default(os.environ.get("LOOKALIKE_SERVER", DEFAULT_SERVER)),
        help=f"HOST:PORT of the server [LOOKALIKE_SERVER] (default: {DEFAULT_SERVER})",
    )
    group.add_argument(
        "--token",
        default=default(os.environ.get("LOOKALIKE_TOKEN")),
        help="bearer token, when the server was started with --token [LOOKALIKE_TOKEN]",
    )
    group.add_argument(
        "--tls", action="store_true", default=default(False), help="connect with TLS"
    )
    group.add_argument(
        "--ca-cert",
        type=Path,
        default=default(None),
        help="PEM file of the CA to trust (implies --tls)",
    )
    group.add_argument(
        "--timeout", type=float, default=default(30.0), help="seconds per call (default: 30)"
    )


def server_command(
    commands: argparse._SubParsersAction, name: str, help_text: str, handler: Handler
) -> argparse.ArgumentParser:
    """A command that runs `handler` with a client, taking the connection options too."""
    sub: argparse.ArgumentParser = commands.add_parser(name, help=help_text, description=help_text)
    connection_options(sub, defaults=False)
    sub.set_defaults(run=functools.partial(run_with_client, handler))
    return sub


def run_with_client(handler: Handler, args: argparse.Namespace) -> int:
    """Run a command with a client connected as the options say; the client's errors become
    one line for a person and the exit code their kind has."""
    try:
        root_certificates = read_file(args.ca_cert) if args.ca_cert else None
        with Client(
            args.server,
            token=args.token,
            tls=args.tls,
            root_certificates=root_certificates,
            timeout=args.timeout,
        ) as client:
            return handler(client, args)
    except LookalikeClientError as error:
        raise CommandError(_explain(error), _exit_code(error)) from error


def _explain(error: LookalikeClientError) -> str:
    if isinstance(error, ServerUnavailableError) and not error.server_error:
        return f"cannot reach a Lookalike server at {error.target} ({error.details})"
    if isinstance(error, UnauthenticatedError):
        return "the server refused the token: pass --token or set LOOKALIKE_TOKEN"
    return str(error)


def _exit_code(error: LookalikeClientError) -> int:
    if isinstance(error, ServerUnavailableError):
        return EXIT_UNREACHABLE
    if isinstance(error, UnauthenticatedError):
        return EXIT_AUTH
    if isinstance(error, ItemNotFoundError):
        return EXIT_NOT_FOUND
    return EXIT_BAD_INPUT if error.code.name == "INVALID_ARGUMENT" else EXIT_ERROR
