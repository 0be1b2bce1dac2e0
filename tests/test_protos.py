"""The checked-in generated gRPC code matches the .proto (regenerate: python protos/generate.py)."""

from __future__ import annotations

import runpy
from pathlib import Path

PROTOS = Path(__file__).resolve().parents[1] / "protos"


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
