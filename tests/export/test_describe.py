from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.export.describe import main


def test_describe_prints_each_variant(
    tiny_export: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tiny_export)]) == 0
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in out
    for name in ("image_fp32.onnx", "image_fp16.onnx", "image_int8.onnx"):
        assert name in out


def test_describe_explains_a_directory_without_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path)]) == 1
    assert "lookalike-export" in capsys.readouterr().err
