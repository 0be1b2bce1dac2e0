"""Opt-in: an OpenCLIP model made by the real `open_clip.create_model_and_transforms` (with
torchvision and timm, in the venv scripts/open-clip-reference.sh makes), exported by
Lookalike and served as the server preprocesses and tokenizes, against open_clip's whole
pipeline: its transforms, its tokenizer, its model. Skipped unless LOOKALIKE_OPEN_CLIP_VENV
names that venv."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as photographs

from lookalike.export.cli import main
from lookalike.export.manifest import Manifest, Precision
from lookalike.server.embed.onnx_engine import EngineSettings, OnnxEngine
from lookalike.server.embed.preprocess import PreprocessMode, Preprocessor
from lookalike.server.embed.tokenizer import TextTokenizer

VENV = os.environ.get("LOOKALIKE_OPEN_CLIP_VENV")
pytestmark = pytest.mark.skipif(
    not VENV, reason="opt-in: LOOKALIKE_OPEN_CLIP_VENV=<venv of scripts/open-clip-reference.sh>"
)
PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket", "camera")
TEXTS = ["a photo of an astronaut", "a cat lying on a blanket", "a cup of coffee", "a rocket"]


@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-B-32-quickgelu"])
def test_an_open_clip_model_exports_to_open_clips_own_pipeline(name: str, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for photo in PHOTOGRAPHS:
        Image.fromarray(getattr(photographs, photo)()).convert("RGB").save(images / f"{photo}.jpg")
    (tmp_path / "texts.json").write_text(json.dumps(TEXTS))
    folder = tmp_path / "model"
    runner = Path(__file__).with_name("open_clip_reference_run.py")
    subprocess.run(
        [
            f"{VENV}/bin/python",
            str(runner),
            name,
            str(folder),
            str(images),
            str(tmp_path / "texts.json"),
        ],
        check=True,
        timeout=600,
    )
    reference = np.load(tmp_path / "reference.npz")
    output = tmp_path / "package"
    assert main(["--quiet", "--model", str(folder), "--output", str(output)]) == 0
    manifest = Manifest.load(output)
    settings = EngineSettings(precision=Precision.FP32)
    preprocess = Preprocessor.for_package(manifest, mode=PreprocessMode.EXACT)
    pixels = np.stack([preprocess(path.read_bytes()) for path in sorted(images.glob("*.jpg"))])
    image_embeds = OnnxEngine(output, settings).embed(pixels)
    text_engine = OnnxEngine(output, EngineSettings(precision=Precision.FP32, graph="text"))
    tokens = TextTokenizer(output, manifest.graphs["text"].tokenizer)
    text_embeds = text_engine.embed(np.stack([tokens(text) for text in TEXTS]))
    assert np.min(np.sum(image_embeds * reference["images"], axis=1)) > 0.9999
    assert np.min(np.sum(text_embeds * reference["texts"], axis=1)) > 0.9999
