"""The one status table: every code it can send is documented in the proto, and the domain
errors themselves know no transport."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grpc

from lookalike.client.errors import SERVER_ERROR_KEY
from lookalike.server.error_codes import ERROR_KIND_KEY, GRPC_CODES, HTTP_STATUSES

PROTO = Path(__file__).resolve().parents[2] / "protos" / "lookalike" / "v1" / "lookalike.proto"


def documented_codes() -> set[str]:
    header = PROTO.read_text().split("syntax =")[0]
    listed = header.split("// Status codes:")[1].split("//\n")[0]
    return set(re.findall(r"^//   ([A-Z_]+)", listed, re.MULTILINE))


def test_every_status_the_server_sends_is_documented_in_the_proto() -> None:
    sent = {code.name for code in GRPC_CODES.values()}
    sent |= {grpc.StatusCode.UNAUTHENTICATED.name, grpc.StatusCode.INTERNAL.name}
    assert documented_codes() == sent


def test_every_error_has_an_http_status_beside_its_grpc_code() -> None:
    assert HTTP_STATUSES.keys() == GRPC_CODES.keys()
    assert all(400 <= status <= 599 for status in HTTP_STATUSES.values())


def test_client_and_server_name_the_same_error_metadata() -> None:
    assert SERVER_ERROR_KEY == ERROR_KIND_KEY
    assert f"`{ERROR_KIND_KEY}`" in PROTO.read_text()


def test_domain_errors_import_no_grpc() -> None:
    code = (
        "import sys; sys.modules['grpc'] = None\n"
        "import lookalike.server.errors\n"
        "assert 'grpc' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
