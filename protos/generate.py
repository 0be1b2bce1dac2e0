"""Regenerate the checked-in Python code for the protos: `python protos/generate.py`.

The generated modules live beside the .proto files, in the package `lookalike.v1`
(setuptools maps it to protos/lookalike). A test fails when they are stale.

The generator is pinned exactly (pyproject.toml's dev extra names one grpcio-tools release),
since its output records its own version and that of the protobuf it bundles: another release
writes other files. To move to a newer one, change the pin, regenerate, and raise the `grpcio`
and `protobuf` minimums to what the new code asks for (tests/test_protos.py checks both).
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

PROTOS = Path(__file__).resolve().parent
GENERATOR = "grpcio-tools"


def pinned_generator() -> str:
    """The grpcio-tools release the dev extra of the installed lookalike pins."""
    for line in metadata.requires("lookalike") or []:
        requirement = Requirement(line)
        if requirement.name == GENERATOR:
            (pin,) = requirement.specifier
            if pin.operator == "==":
                return pin.version
    raise SystemExit(f"pyproject.toml's dev extra must pin {GENERATOR} exactly (==)")


def generate(out_dir: Path = PROTOS) -> None:
    pinned, installed = pinned_generator(), metadata.version(GENERATOR)
    if installed != pinned:
        raise SystemExit(
            f"{GENERATOR} {installed} is installed, but the checked-in code is made by {pinned} "
            f"(pyproject.toml's dev extra): pip install '{GENERATOR}=={pinned}'"
        )
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    arguments = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    if protoc.main(arguments) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTOS)
