"""Server settings from flags and LOOKALIKE_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.export.manifest import Precision
from lookalike.server.config import parse_config
from lookalike.server.embed.onnx_engine import Provider
from lookalike.server.embed.preprocess import PreprocessMode


def test_flags_build_a_frozen_config() -> None:
    config = parse_config(
        [
            "--model-dir",
            "m",
            "--data-dir",
            "d",
            "--port",
            "0",
            "--precision",
            "fp32",
            "--max-batch",
            "8",
            "--preprocess",
            "exact",
            "--preprocess-processes",
            "3",
            "--metrics-port",
            "0",
            "--index-dtype",
            "f16",
            "--token",
            "s3cret",
        ],
        environ={},
    )
    assert (config.embed.model_dir, config.data_dir, config.port) == (Path("m"), Path("d"), 0)
    assert config.embed.engine.precision is Precision.FP32
    assert config.embed.batcher.max_batch == 8
    assert config.embed.preprocess_mode is PreprocessMode.EXACT
    assert config.embed.preprocess_processes == 3
    assert config.metrics_port == 0  # any free port, not off
    assert config.index.dtype == "f16"
    assert config.token == "s3cret"
    assert "s3cret" not in repr(config)  # the token is never printed
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]


def test_environment_supplies_defaults_and_flags_win() -> None:
    environ = {
        "LOOKALIKE_MODEL_DIR": "/models/b32",
        "LOOKALIKE_DATA_DIR": "/data",
        "LOOKALIKE_PORT": "6000",
        "LOOKALIKE_PROVIDER": "cpu",
        "LOOKALIKE_MAX_QUEUE": "64",
    }
    config = parse_config([], environ=environ)
    assert config.embed.model_dir == Path("/models/b32")
    assert config.port == 6000
    assert config.embed.engine.provider is Provider.CPU
    assert config.embed.batcher.max_queue == 64
    assert parse_config(["--port", "7000"], environ=environ).port == 7000


def test_bad_settings_are_refused_with_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_config(["--model-dir", "m", "--data-dir", "d", "--max-batch", "0"], environ={})
    assert "max_batch must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(
            ["--model-dir", "m", "--data-dir", "d", "--preprocess-processes", "-1"], environ={}
        )
    assert "preprocess_processes must not be negative" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(["--model-dir", "m", "--data-dir", "d", "--tls-cert", "c"], environ={})
    with pytest.raises(SystemExit):
        parse_config([], environ={})  # --model-dir is required


def test_help_shows_each_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_config(["--help"], environ={})
    text = " ".join(capsys.readouterr().out.split())  # unwrapped
    for shown in ("(default: 50051)", "(default: 127.0.0.1)", "(default: 32)", "(default: fast)"):
        assert shown in text
    assert "(default: None)" not in text


def test_cluster_flags_build_the_cluster_settings() -> None:
    config = parse_config(
        [
            "--model-dir",
            "m",
            "--index",
            "i",
            "--shards-on-ray",
            "--shard-replicas",
            "2",
            "--shard-replicas-of",
            "0=3,4=1",
            "--embed-on-ray",
            "--embed-replicas",
            "2",
            "--embed-max-replicas",
            "6",
            "--embed-gpus",
            "1",
        ],
        environ={"LOOKALIKE_RAY_ADDRESS": "ray://head:10001"},
    )
    cluster = config.shards_on_ray
    assert cluster is not None
    assert cluster.address == "ray://head:10001"
    assert [cluster.placement.replicas_for(n) for n in range(5)] == [3, 2, 2, 2, 1]
    assert cluster.embedding is not None
    embedding = cluster.embedding
    assert (embedding.replicas, embedding.max_replicas, embedding.gpus) == (2, 6, 1.0)
    front_embeds = parse_config(["--model-dir", "m", "--index", "i", "--shards-on-ray"], environ={})
    assert front_embeds.shards_on_ray is not None
    assert front_embeds.shards_on_ray.embedding is None


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ("--model-dir m --index i --shards-on-ray --shard-replicas-of 3", "SHARD=N"),
        ("--model-dir m --index i --shards-on-ray --shard-replicas-of x=2", "SHARD=N"),
        ("--model-dir m --index i --embed-on-ray", "--embed-on-ray goes with --shards-on-ray"),
        ("--model-dir m --data-dir d --shards-on-ray", "--shards-on-ray serves the shards"),
    ],
)
def test_cluster_flags_that_cannot_work_are_refused(
    flags: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_config(flags.split(), environ={})
    assert words in capsys.readouterr().err
