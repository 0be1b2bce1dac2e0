"""The checked-in generated gRPC code matches the .proto (regenerate: python protos/generate.py),
was made by the generator the project pins, and runs on every release the requirements admit."""

from __future__ import annotations

import re
import runpy
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

PROTOS = Path(__file__).resolve().parents[1] / "protos"
GENERATED = PROTOS / "lookalike" / "v1"


def requirement(name: str) -> Requirement:
    """The installed lookalike's requirement on `name` (base or extra)."""
    found = [r for r in map(Requirement, metadata.requires("lookalike") or []) if r.name == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def generated_version(pattern: str, module: str) -> Version:
    match = re.search(pattern, (GENERATED / module).read_text())
    assert match, f"{module} does not say {pattern}"
    return Version(match.group(1))


def grpc_generated_version() -> Version:
    """The grpcio-tools release that wrote the code; it refuses older grpcio at import."""
    return generated_version(r"GRPC_GENERATED_VERSION = '([^']+)'", "lookalike_pb2_grpc.py")


def protobuf_gencode_version() -> Version:
    """The protobuf the bundled protoc wrote for; the runtime must be at least it, same major."""
    return generated_version(r"# Protobuf Python Version: (\S+)", "lookalike_pb2.py")


def minimum(specifier: SpecifierSet) -> Version | None:
    """The version a `>=` of the specifier names (None when it has none)."""
    lows = [Version(s.version) for s in specifier if s.operator == ">="]
    return max(lows) if lows else None


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    runpy.run_path(str(PROTOS / "generate.py"))["generate"](tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*"))
    assert generated, "protoc produced nothing"
    for relative in generated:
        checked_in = PROTOS / relative
        assert checked_in.is_file(), f"{relative} is not checked in"
        assert checked_in.read_text() == (tmp_path / relative).read_text(), (
            f"{relative} is stale: run `python protos/generate.py`"
        )


def test_the_generator_is_pinned_to_the_release_that_wrote_the_checked_in_code() -> None:
    """A range would let tomorrow's grpcio-tools write other files than those checked in."""
    pin = requirement("grpcio-tools")
    assert pin.marker is not None
    assert pin.marker.evaluate({"extra": "dev"})
    assert [(s.operator, Version(s.version)) for s in pin.specifier] == [
        ("==", grpc_generated_version())
    ]
    assert runpy.run_path(str(PROTOS / "generate.py"))["pinned_generator"]() == str(
        grpc_generated_version()
    )


def test_the_runtime_requirements_start_at_what_the_generated_code_needs() -> None:
    """grpcio below GRPC_GENERATED_VERSION and protobuf below the gencode version, or of
    another major, refuse the generated modules at import: the ranges must not admit them,
    and must not demand more."""
    grpcio = requirement("grpcio").specifier
    assert minimum(grpcio) == grpc_generated_version()
    protobuf = requirement("protobuf").specifier
    gencode = protobuf_gencode_version()
    assert minimum(protobuf) == gencode
    assert Version(f"{gencode.major + 1}") not in protobuf
    assert Version(f"{gencode.major}.{gencode.minor + 1}") in protobuf
