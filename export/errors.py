"""One error family for the exporter; the CLI turns each into a message and an exit code."""

from __future__ import annotations

__all__ = [
    "ExportError",
    "ModelUnavailableError",
    "UnsupportedModelError",
    "OutputExistsError",
    "ParityError",
]


class ExportError(Exception):
    """Base of every failure the exporter explains to a person."""

    exit_code = 1


class ModelUnavailableError(ExportError):
    """The checkpoint could not be found or fetched."""

    exit_code = 3


class UnsupportedModelError(ExportError):
    """The checkpoint exists but is not of a family Lookalike exports (CLIP, SigLIP)."""

    exit_code = 4


class OutputExistsError(ExportError):
    """The output directory exists and `--overwrite` was not given."""

    exit_code = 5


class ParityError(ExportError):
    """An exported variant disagrees with PyTorch beyond its precision's bar."""

    exit_code = 6
