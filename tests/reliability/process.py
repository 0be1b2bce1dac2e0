"""`python -m server` as an operator runs it, for the tests that start it as a process."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def server_command(model_dir: Path, data_dir: Path, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "server",
        "--model-dir",
        str(model_dir),
        "--data-dir",
        str(data_dir),
        "--port",
        "0",
        *flags,
    ]


def clean_env() -> dict[str, str]:
    """This environment without LOOKALIKE_* settings, which would override the flags."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
