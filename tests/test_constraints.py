"""scripts/constraints.txt, the tested set the scripts install, fits pyproject.toml's ranges.

A range raised without refreshing the file would make every fresh set-up fail to resolve."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

CONSTRAINTS = Path(__file__).resolve().parents[1] / "scripts" / "constraints.txt"
VENV_SCRIPT = CONSTRAINTS.with_name("venv.sh")


def pinned() -> dict[str, str]:
    """Each package's exact version in the constraints file."""
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def installed_requirements() -> list[tuple[Requirement, str]]:
    """Every requirement of lookalike that the scripts' extras bring, with the extra."""
    found = []
    extras = ["", *(metadata.metadata("lookalike").get_all("Provides-Extra") or [])]
    for requirement in map(Requirement, metadata.requires("lookalike") or []):
        if requirement.name == "lookalike":  # dev's own extras, listed on their own
            continue
        for extra in extras:
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                found.append((requirement, extra))
                break
    return found


def test_every_requirement_has_a_pin_its_range_admits() -> None:
    pins = pinned()
    wrong = []
    for requirement, extra in installed_requirements():
        if extra == "gpu":  # never installed beside the CPU runtime
            continue
        version = pins.get(canonicalize_name(requirement.name))
        if version is None:
            wrong.append(f"{requirement} ({extra or 'base'}) has no pin")
        elif Version(version) not in requirement.specifier:
            wrong.append(f"{requirement} ({extra or 'base'}) excludes the pinned {version}")
    assert wrong == [], "refresh it: ./scripts/check-latest.sh --write"


def test_pins_name_releases_not_local_builds() -> None:
    """`torch==2.13.0+cpu` would refuse the same release built elsewhere (PyPI's own wheel)."""
    assert [f"{n}=={v}" for n, v in pinned().items() if "+" in v] == []
    torch = re.search(r'TORCH_REQUIREMENT="torch==([^"]+)"', VENV_SCRIPT.read_text())
    assert torch, "scripts/venv.sh names no torch release"
    assert pinned()["torch"] == torch.group(1)  # the CPU build scripts/venv.sh installs


def test_the_pins_hold_the_tools_whose_output_the_suite_compares() -> None:
    """The generator of the checked-in code, the linter and the type checker."""
    pins = pinned()
    assert {"grpcio-tools", "ruff", "mypy", "pip", "setuptools"} <= pins.keys()
