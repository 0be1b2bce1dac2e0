"""`benchmarks/peer_checkpoint.py` reads its arguments as the other benchmark scripts do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_help_prints_the_usage_and_writes_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "peer_checkpoint.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: peer_checkpoint.py [-h] OUT_DIR\n"), result.stdout
    assert list(tmp_path.iterdir()) == []  # no checkpoint written to a folder named --help
