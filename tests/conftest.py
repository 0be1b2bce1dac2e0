"""Session-wide fixtures: the tiny random CLIP, exported once through the real console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lookalike.export.manifest import Manifest

# Environment that would change what the code under test does; no test inherits it.
LEAKY_ENV_PREFIXES = ("LOOKALIKE_", "HF_", "TRANSFORMERS_", "ORT_")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak", action="store_true", help="reliability tests run longer (release checks)"
    )


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(LEAKY_ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no test may reach for the network


def export_random_init(
    preset: str, tmp_path_factory: pytest.TempPathFactory, *options: str
) -> Path:
    """`lookalike-export --random-init PRESET [OPTIONS]`, as a user would run it."""
    output = tmp_path_factory.mktemp("models") / preset
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY_ENV_PREFIXES)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike.export",
            "--random-init",
            preset,
            "--output",
            str(output),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (output.parent / "export.stdout").write_text(result.stdout)
    (output.parent / "export.stderr").write_text(result.stderr)
    return output


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_random_init("tiny", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_float_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CLIP with the image graph of packages before format 4: normalised float32
    pixels, [batch, 3, S, S] (`--image-input float32`)."""
    return export_random_init("tiny", tmp_path_factory, "--image-input", "float32")


@pytest.fixture(scope="session")
def siglip_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SigLIP: attention-pooled, squash-resized, SentencePiece-tokenized."""
    return export_random_init("siglip-tiny", tmp_path_factory)


@pytest.fixture(scope="session")
def siglip2_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SigLIP 2 (fixed resolution): SigLIP's towers, Gemma's tokenizer."""
    return export_random_init("siglip2-tiny", tmp_path_factory)


@pytest.fixture(scope="session")
def openclip_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random OpenCLIP preset: open_clip's layout, through the same conversion as a
    folder of open_clip files."""
    return export_random_init("openclip-tiny", tmp_path_factory)


@pytest.fixture(scope="session")
def benchmark_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full-size ViT-B/32 image tower the benchmarks use (random weights, the real
    compute); the tests that take it embed no text."""
    return export_random_init("vit-b-32", tmp_path_factory, "--no-text")


@pytest.fixture(scope="session")
def tiny_manifest(tiny_export: Path) -> Manifest:
    return Manifest.load(tiny_export)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key for localhost and 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key
