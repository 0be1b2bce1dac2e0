"""Every failure the exporter explains: exit code, message, and nothing half-written left."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import BertConfig, BertModel, CLIPConfig

from lookalike.export import pipeline, verify
from lookalike.export.cli import main
from lookalike.export.errors import (
    ModelUnavailableError,
    OutputExistsError,
    ParityError,
    UnsupportedModelError,
)
from lookalike.export.manifest import MANIFEST_FILE, Manifest, Precision
from lookalike.server.embed.onnx_engine import EngineSettings, OnnxEngine
from lookalike.server.errors import ModelLoadError
from tests.mounts import small_tmpfs


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["--quiet", *argv])
    return code, capsys.readouterr().err


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_unknown_hub_model_offline_says_how_to_work_without_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(capsys, "--model", "no-such-org/no-such-clip", "--output", str(tmp_path / "o"))
    assert code == ModelUnavailableError.exit_code
    assert "no-such-org/no-such-clip" in err
    assert "--random-init" in err
    assert "local directory" in err
    assert not (tmp_path / "o").exists()


def test_unreachable_hub_is_detected_at_once_without_retries(tmp_path: Path) -> None:
    """No HF_HUB_OFFLINE: the hub client alone would retry with backoff for ~35 s."""
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LOOKALIKE_"))}
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port}", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike.export",
            "--model",
            "some-org/x",
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == ModelUnavailableError.exit_code, result.stderr
    assert "the Hugging Face hub is unreachable" in result.stderr
    assert f"127.0.0.1:{closed_port}" in result.stderr
    assert "'some-org/x' is not in the local cache" in result.stderr
    assert "--random-init" in result.stderr
    assert "Retrying" not in result.stderr  # the hub client's backoff (~35 s) never started
    assert "thrown while requesting" not in result.stderr


def test_missing_local_path_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "--model", "./does/not/exist", "--output", str(tmp_path / "o"))
    assert code == ModelUnavailableError.exit_code
    assert "./does/not/exist" in err


def test_empty_directory_holds_no_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, err = run(capsys, "--model", str(tmp_path / "empty"), "--output", str(tmp_path / "o"))
    assert code == ModelUnavailableError.exit_code
    assert "holds no model" in err


def test_clip_config_without_weights_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    CLIPConfig().save_pretrained(tmp_path / "config-only")
    code, err = run(
        capsys, "--model", str(tmp_path / "config-only"), "--output", str(tmp_path / "o")
    )
    assert code == ModelUnavailableError.exit_code
    assert "no loadable weights" in err


def test_non_clip_model_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = BertConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    BertModel(config).save_pretrained(tmp_path / "bert")
    code, err = run(capsys, "--model", str(tmp_path / "bert"), "--output", str(tmp_path / "o"))
    assert code == UnsupportedModelError.exit_code
    assert "'bert'" in err
    assert "Lookalike exports CLIP and SigLIP" in err


def test_existing_output_is_kept_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "o"
    code, _ = run(capsys, "--random-init", "tiny", "--output", str(output), "--precision", "fp32")
    assert code == 0
    first = (output / MANIFEST_FILE).read_text()

    code, err = run(capsys, "--random-init", "tiny", "--output", str(output))
    assert code == OutputExistsError.exit_code
    assert "--overwrite" in err
    assert (output / MANIFEST_FILE).read_text() == first

    code, _ = run(
        capsys,
        "--random-init",
        "tiny",
        "--output",
        str(output),
        "--overwrite",
        "--precision",
        "int8",
        "--no-text",
    )
    assert code == 0
    assert sorted(p.name for p in output.iterdir()) == ["image_int8.onnx", MANIFEST_FILE]
    assert leftovers(tmp_path) == []


def test_overwrite_never_replaces_a_directory_that_is_not_an_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "o"
    output.mkdir()
    (output / "precious.txt").write_text("keep me")
    code, err = run(capsys, "--random-init", "tiny", "--output", str(output), "--overwrite")
    assert code == OutputExistsError.exit_code
    assert "not an earlier export" in err
    assert (output / "precious.txt").read_text() == "keep me"


def test_variant_below_its_bar_fails_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    impossible = {**verify.PARITY_BARS, verify.Precision.INT8: 1.5}
    monkeypatch.setattr(verify, "PARITY_BARS", impossible)
    output = tmp_path / "o"
    code, err = run(capsys, "--random-init", "tiny", "--output", str(output), "--precision", "int8")
    assert code == ParityError.exit_code
    assert "int8" in err
    assert "min cosine" in err
    assert not output.exists()
    assert leftovers(tmp_path) == []


def test_a_reduced_variant_below_its_bar_is_rejected_and_the_others_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An int8 tower missing its bar (seen: a small text tower at min cosine 0.961) no longer
    fails the export: the manifest records why, and the server serves the best variant kept."""
    impossible = {**verify.PARITY_BARS, verify.Precision.INT8: 1.5}
    monkeypatch.setattr(verify, "PARITY_BARS", impossible)
    output = tmp_path / "o"
    code, err = run(capsys, "--random-init", "tiny", "--output", str(output))
    assert code == 0, err
    manifest = Manifest.load(output)
    for role in ("image", "text"):
        graph = manifest.graphs[role]
        assert set(graph.variants) == {Precision.FP32, Precision.FP16}
        assert "min cosine" in graph.rejected[Precision.INT8]
        assert not (output / f"{role}_int8.onnx").exists()
    assert "REJECTED" in manifest.describe(output)
    raw = json.loads((output / MANIFEST_FILE).read_text())
    assert set(raw["graphs"]["text"]["rejected"]) == {"int8"}

    engine = OnnxEngine(output, EngineSettings(intra_op_threads=1))  # CPU: int8 preferred
    assert engine.info.precision is Precision.FP32
    assert engine.info.passed_over.startswith("int8 rejected at export: ")
    with pytest.raises(ModelLoadError, match="rejected its int8 variant"):
        OnnxEngine(output, EngineSettings(precision=Precision.INT8))


def test_too_little_space_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_tmpfs(tmp_path / "disk", "256k") as disk:
        code, err = run(capsys, "--random-init", "tiny", "--output", str(disk / "o"))
        assert code != 0
        assert "not enough disk space" in err
        assert list(disk.iterdir()) == []


def test_disk_filling_up_mid_export_is_explained_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second line of defence, behind the space estimate (switched off here)."""
    monkeypatch.setattr(pipeline, "STAGING_BYTES_PER_PARAMETER", 0)
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        code, err = run(capsys, "--random-init", "tiny", "--output", str(disk / "o"))
        assert code != 0
        assert "disk full while exporting" in err
        assert list(disk.iterdir()) == []
