"""Exactly one ONNX Runtime build must be installed; say how to fix it when not."""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType

__all__ = [
    "RUNTIME_DISTRIBUTIONS",
    "RuntimeMissingError",
    "import_onnxruntime",
    "installed_runtimes",
]

# Every distribution that installs the `onnxruntime` module.
RUNTIME_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
)


class RuntimeMissingError(Exception):
    """ONNX Runtime is absent, or several of its builds are installed. The server and the
    exporter (which checks its graphs on it) both need one, so this is not an export error."""

    exit_code = 7  # lookalike-export's


INSTALL_HINT = "pip install 'lookalike[cpu]'  (or 'lookalike[gpu]' for CUDA, never both)"


def installed_runtimes() -> list[str]:
    """Names of the installed distributions that provide the `onnxruntime` module."""
    found = []
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def import_onnxruntime() -> ModuleType:
    """Import `onnxruntime`, refusing an install where two builds shadow each other."""
    runtimes = installed_runtimes()
    if len(runtimes) > 1:
        raise RuntimeMissingError(
            f"several ONNX Runtime builds are installed ({', '.join(runtimes)}); they share "
            "one module and silently shadow each other. Uninstall all but one, e.g. "
            f"`pip uninstall -y {' '.join(runtimes)}` then {INSTALL_HINT}"
        )
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise RuntimeMissingError(f"ONNX Runtime is not installed: {INSTALL_HINT}") from exc
