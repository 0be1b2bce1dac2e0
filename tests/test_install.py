"""Exactly one ONNX Runtime build: in the dependency metadata and in this environment."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from lookalike.export.runtime import (
    RUNTIME_DISTRIBUTIONS,
    RuntimeMissingError,
    import_onnxruntime,
    installed_runtimes,
)


def runtimes_required(extra: str) -> list[str]:
    """ONNX Runtime builds that `lookalike[extra]` adds to the base install ("" for the base)."""
    names = []
    for line in metadata.requires("lookalike") or []:
        requirement = Requirement(line)
        marker = requirement.marker
        in_base = marker is None or marker.evaluate({"extra": ""})
        in_extra = marker is not None and marker.evaluate({"extra": extra}) and not in_base
        if requirement.name in RUNTIME_DISTRIBUTIONS and (in_extra if extra else in_base):
            names.append(requirement.name)
    return names


def test_base_dependencies_name_no_runtime_and_each_extra_exactly_one() -> None:
    assert runtimes_required("") == []
    assert runtimes_required("cpu") == ["onnxruntime"]
    assert runtimes_required("gpu") == ["onnxruntime-gpu"]
    for extra in ("export", "dev"):
        assert runtimes_required(extra) == [], extra


def test_test_environment_has_exactly_the_cpu_runtime() -> None:
    assert installed_runtimes() == ["onnxruntime"]
    assert "CPUExecutionProvider" in import_onnxruntime().get_available_providers()


def test_two_runtime_builds_are_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second build's metadata on sys.path is what `pip install onnxruntime-gpu` leaves."""
    dist_info = tmp_path / "onnxruntime_gpu-1.20.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.20.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert installed_runtimes() == ["onnxruntime", "onnxruntime-gpu"]
    with pytest.raises(RuntimeMissingError, match="shadow") as info:
        import_onnxruntime()
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in str(info.value)


def test_missing_runtime_names_the_install_line() -> None:
    """`sys.modules[name] = None` is how Python itself marks a module as not importable."""
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from lookalike.export.runtime import import_onnxruntime\n"
        "import_onnxruntime()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "ONNX Runtime is not installed" in result.stderr
    assert "lookalike[cpu]" in result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The distribution as pip builds it from this checkout."""
    root = Path(__file__).resolve().parents[1]
    built = tmp_path_factory.mktemp("wheel")
    source = built / "source"  # a copy: setuptools would reuse (stale) files from ./build
    shutil.copytree(
        root,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv*",
            "build",
            "*.egg-info",
            "*_cache",
            "models",
            "results",
            "data",
            "node_modules",
        ),
    )
    # offline: no index (nor its version check) is ever asked; setuptools is this environment's
    built_wheel = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "--wheel-dir",
            str(built),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built_wheel.returncode == 0, built_wheel.stderr
    (found,) = built.glob("lookalike-*.whl")
    return found


PACKAGE_FOLDERS = ("server", "export", "client", "batch", "cli")


def test_the_distribution_installs_one_top_level_package(wheel: Path) -> None:
    """Generic names (`server`, `export`, `client`) would collide in site-packages."""
    root = Path(__file__).resolve().parents[1]
    with zipfile.ZipFile(wheel) as archive:
        top_level = {name.split("/")[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert top_level == {"lookalike", f"{wheel.name.split('-py')[0]}.dist-info"}
    modules = [
        source.relative_to(root).as_posix()
        for folder in PACKAGE_FOLDERS
        for source in (root / folder).rglob("*.py")
    ]
    assert "server/cluster/repository.py" in modules  # subpackages too
    missing = [module for module in modules if f"lookalike/{module}" not in names]
    assert missing == []  # every module of the repository ships in the wheel
    assert "lookalike/v1/lookalike_pb2.py" in names
    pages = sorted(p.name for p in (root / "server" / "http" / "static").iterdir())
    assert {f"lookalike/server/http/static/{page}" for page in pages} <= names  # the web app
    entry_points = metadata.distribution("lookalike").entry_points
    assert {e.name: e.value for e in entry_points if e.group == "console_scripts"} == {
        "lookalike": "lookalike.cli:main",
        "lookalike-export": "lookalike.export.cli:main",
        "lookalike-server": "lookalike.server.app:main",
    }


# What each part of the wheel may not import (also inside functions), by the longest folder
# that holds the file: imports go one way, cli -> batch -> client, server -> export; the client
# needs only the generated code; inside the server, the embedding runtime (`embed`) and the
# storage (`index`) know nothing of each other, the transports or the process around them.
JOBS_AND_COMMANDS = ("lookalike.client", "lookalike.batch", "lookalike.cli")
SERVER_ABOVE_ROOMS = tuple(
    f"lookalike.server.{module}"
    for module in (
        "app",
        "config",
        "core",
        "error_codes",
        "request_types",
        "grpc",
        "http",
        "cluster",
    )
)
FORBIDDEN_IMPORTS = {
    "lookalike/server/": JOBS_AND_COMMANDS,
    "lookalike/server/embed/": (
        *JOBS_AND_COMMANDS,
        *SERVER_ABOVE_ROOMS,
        "lookalike.server.index",
    ),
    "lookalike/server/index/": (
        *JOBS_AND_COMMANDS,
        *SERVER_ABOVE_ROOMS,
        "lookalike.server.embed",
    ),
    "lookalike/client/": (
        "lookalike.server",
        "lookalike.export",
        "lookalike.batch",
        "lookalike.cli",
    ),
    "lookalike/export/": ("lookalike.server", *JOBS_AND_COMMANDS),
    "lookalike/batch/": ("lookalike.cli",),
}


def imported_modules(source: str) -> set[str]:
    """Every module an `import` or `from ... import` anywhere in `source` names (with `from`,
    also each name imported, which may be a submodule)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def forbidden_for(name: str) -> tuple[str, ...]:
    """The rule of the deepest folder in FORBIDDEN_IMPORTS holding the wheel's file `name`."""
    folders = [folder for folder in FORBIDDEN_IMPORTS if name.startswith(folder)]
    return FORBIDDEN_IMPORTS[max(folders, key=len)] if folders else ()


def test_imports_go_one_way_in_the_installed_package(wheel: Path) -> None:
    """The server never imports the client, the client never imports the server, neither
    imports the offline jobs or the command line that put them together, and the server's
    embedding runtime and storage import neither each other nor what is built on them."""
    crossings = []
    checked = set()
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            forbidden = forbidden_for(name)
            if not name.endswith(".py") or not forbidden:
                continue
            checked.add(name.rsplit("/", 1)[0])
            for module in imported_modules(archive.read(name).decode("utf-8")):
                if any(module == f or module.startswith(f"{f}.") for f in forbidden):
                    crossings.append(f"{name} imports {module}")
    assert crossings == []
    assert {f.rstrip("/") for f in FORBIDDEN_IMPORTS} <= checked  # every rule met its files
    assert imported_modules("import a.b\nfrom c import d\ndef f():\n    from e.f import g\n") == {
        "a.b",
        "c",
        "c.d",
        "e.f",
        "e.f.g",
    }  # the check sees imports inside functions too, and submodules imported by name
    assert (
        forbidden_for("lookalike/server/embed/batcher.py")
        == FORBIDDEN_IMPORTS["lookalike/server/embed/"]
    )
