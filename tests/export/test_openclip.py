"""OpenCLIP folders (`open_clip_config.json` + weights), exported without open_clip or
torchvision and checked against open_clip's own model code; refused configs say why."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

from lookalike.export.cli import main
from lookalike.export.errors import ModelUnavailableError, UnsupportedModelError
from lookalike.export.families.openclip import check_supported
from lookalike.export.manifest import Manifest, Precision
from lookalike.export.source import load_checkpoint
from lookalike.export.tokenizer import clip_bpe_tokenizer
from lookalike.export.verify import token_ids
from tests.export.open_clip_reference import open_clip_model
from tests.pixels import normalized, random_images

MODEL_CFG: dict[str, Any] = {
    "embed_dim": 12,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 24, "head_width": 12, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
PREPROCESS_CFG = {
    "size": 32,
    "mode": "RGB",
    "mean": [0.5, 0.45, 0.4],
    "std": [0.25, 0.26, 0.27],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}
TEXTS = ["a photo of a cat", "Two DOGS playing in the snow!", "a diagram", ""]


def save_folder(folder: Path, model_cfg: dict[str, Any], weights: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    document = {"model_cfg": model_cfg, "preprocess_cfg": PREPROCESS_CFG}
    (folder / "open_clip_config.json").write_text(json.dumps(document))
    if weights is not None:
        save_file(
            {k: v.contiguous() for k, v in weights.items()}, folder / "open_clip_model.safetensors"
        )
    return folder


@pytest.fixture(scope="module")
def open_clip_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A folder as open_clip writes one, of a model built and initialised by open_clip's own
    code; biases and norms moved off their initial values, so a mistake in them shows."""
    model, weights = moved_model(MODEL_CFG, seed=11)
    folder = save_folder(tmp_path_factory.mktemp("openclip") / "model", MODEL_CFG, weights)
    return folder, model


def moved_model(
    model_cfg: dict[str, Any], *, seed: int
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """open_clip's model for `model_cfg` and its weights as a folder holds them; biases and
    norms moved off their initial values, so a mistake in them shows."""
    torch.manual_seed(seed)
    model = open_clip_model(model_cfg)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point and ("bias" in name or "ln" in name):
                value.add_(torch.randn_like(value) * 0.1)
    weights = {k: v for k, v in model.state_dict().items() if not k.endswith("attn_mask")}
    return model, weights


def assert_images_embed_as_open_clip(output: Path, model: torch.nn.Module, seed: int) -> None:
    """The package's fp32 image graph, given uint8 pixels, against open_clip's encode_image."""
    manifest = Manifest.load(output)
    batch = random_images(3, 32, seed=seed)
    with torch.no_grad():
        pixels = torch.from_numpy(normalized(batch, manifest.preprocess))
        expected = model.encode_image(pixels, normalize=True)
    image = manifest.graphs["image"].variants[Precision.FP32]
    session = ort.InferenceSession(str(output / image.file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"pixel_values": batch})[0], expected, atol=1e-5)


def test_an_open_clip_folder_exports_with_open_clips_embeddings(
    open_clip_folder: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    folder, model = open_clip_folder
    output = tmp_path / "out"
    assert main(["--quiet", "--model", str(folder), "--output", str(output)]) == 0
    manifest = Manifest.load(output)
    assert manifest.family == "openclip"
    assert (manifest.source.kind, manifest.source.id) == ("local", str(folder.resolve()))
    assert manifest.embedding_dim == 12
    prep = manifest.preprocess
    assert (prep.image_size, prep.resize_shortest_edge, prep.resample) == (32, 32, "bicubic")
    assert (prep.mean, prep.std) == ((0.5, 0.45, 0.4), (0.25, 0.26, 0.27))
    assert set(manifest.graphs["image"].variants) == set(Precision)
    assert_images_embed_as_open_clip(output, model, seed=5)

    ids = token_ids(clip_bpe_tokenizer(), TEXTS, 77)
    with torch.no_grad():
        expected = model.encode_text(torch.from_numpy(ids), normalize=True)
    text = manifest.graphs["text"].variants[Precision.FP32]
    session = ort.InferenceSession(str(output / text.file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input_ids": ids})[0], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"vision_cfg": {"timm_model_name": "convnext_base"}}, "vision_cfg.timm_model_name"),
        ({"vision_cfg": {"attentional_pool": True}}, "vision_cfg.attentional_pool"),
        ({"vision_cfg": {"pool_type": "none"}}, "vision_cfg.pool_type = 'none'"),
        ({"vision_cfg": {"layers": [3, 4, 6, 3]}}, "a modified ResNet"),
        ({"vision_cfg": {"ls_init_value": 1e-5}}, "vision_cfg.ls_init_value"),
        ({"text_cfg": {"hf_model_name": "xlm-roberta-base"}}, "text_cfg.hf_model_name"),
        ({"text_cfg": {"pool_type": "none"}}, "text_cfg.pool_type = 'none'"),
        ({"text_cfg": {"vocab_size": 32000}}, "text_cfg.vocab_size = 32000 with CLIP's BPE"),
        ({"text_cfg": {"context_length": 32}}, "text_cfg.context_length = 32 with CLIP's BPE"),
        (
            {"text_cfg": {"hf_tokenizer_name": "x", "tokenizer_kwargs": {"language": "fr"}}},
            "text_cfg.tokenizer_kwargs.language",
        ),
        ({"text_cfg": {"tokenizer_mode": "clips"}}, "text_cfg.tokenizer_mode"),
        ({"text_cfg": {"what_is_this": 1}}, "unknown text_cfg key 'what_is_this'"),
        ({"multimodal_cfg": {"width": 512}}, "CoCa"),
    ],
)
def test_a_config_the_exporter_cannot_reproduce_is_refused_naming_it(
    tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    config = json.loads(json.dumps(MODEL_CFG))
    for section, values in change.items():
        if isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    folder = save_folder(tmp_path / "model", config)  # no weights: refused before reading them
    with pytest.raises(UnsupportedModelError, match=re.escape(named)) as refused:
        load_checkpoint(str(folder))
    assert ("--no-text" in str(refused.value)) == ("text_cfg" in change)


def test_no_text_takes_the_image_tower_of_a_model_whose_text_tower_is_refused(
    open_clip_folder: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    folder, _ = open_clip_folder
    document = json.loads((folder / "open_clip_config.json").read_text())
    document["model_cfg"]["text_cfg"]["hf_model_name"] = "xlm-roberta-base"
    copy = tmp_path / "model"
    copy.mkdir()
    (copy / "open_clip_config.json").write_text(json.dumps(document))
    (copy / "open_clip_model.safetensors").symlink_to(folder / "open_clip_model.safetensors")
    with pytest.raises(UnsupportedModelError, match="hf_model_name"):
        load_checkpoint(str(copy))
    checkpoint = load_checkpoint(str(copy), text=False)
    assert checkpoint.text is None
    assert checkpoint.image.tower.dims == MODEL_CFG["embed_dim"]


def test_a_folder_without_weights_says_which_files_it_needs(tmp_path: Path) -> None:
    folder = save_folder(tmp_path / "model", MODEL_CFG)
    with pytest.raises(ModelUnavailableError, match=r"open_clip_model\.safetensors"):
        load_checkpoint(str(folder))


def test_an_hf_hub_name_out_of_reach_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="not in the local cache"):
        load_checkpoint("hf-hub:apple/DFN2B-CLIP-ViT-L-14")


def test_a_custom_text_model_exports_its_text_tower_too(tmp_path: Path) -> None:
    """`CustomTextCLIP` (`custom_text`) keeps the same text tower under `text.`."""
    config = {**MODEL_CFG, "custom_text": True}
    model, weights = moved_model(config, seed=12)
    assert any(key.startswith("text.") for key in weights)
    folder = save_folder(tmp_path / "model", config, weights)
    output = tmp_path / "out"
    assert main(["--quiet", "--model", str(folder), "--output", str(output)]) == 0
    manifest = Manifest.load(output)
    ids = token_ids(clip_bpe_tokenizer(), TEXTS, 77)
    with torch.no_grad():
        expected = model.encode_text(torch.from_numpy(ids), normalize=True)
    text = manifest.graphs["text"].variants[Precision.FP32]
    session = ort.InferenceSession(str(output / text.file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input_ids": ids})[0], expected, atol=1e-5)


def test_the_released_native_vit_configs_are_taken_and_the_rest_refused_by_name() -> None:
    """open_clip's own bundled configs: the ViTs of DFN, DataComp, LAION and OpenAI's sizes are
    taken; every other one is refused naming what it uses."""
    bundled = Path(str(metadata.distribution("open_clip_torch").locate_file("open_clip")))
    taken, refused = [], {}
    for path in sorted((bundled / "model_configs").glob("*.json")):
        try:
            check_supported(json.loads(path.read_text()), path.stem)
            taken.append(path.stem)
        except UnsupportedModelError as error:
            refused[path.stem] = str(error)
    for name in (
        "ViT-B-32",
        "ViT-B-16",
        "ViT-L-14",
        "ViT-L-14-quickgelu",
        "ViT-H-14",
        "ViT-H-14-378-quickgelu",
        "ViT-bigG-14",
    ):
        assert name in taken, refused.get(name)
    for name in ("ViT-L-14-CLIPA", "ViT-bigG-14-CLIPA-336", "ViT-H-14-worldwide"):
        assert name in taken, refused.get(name)  # open_clip's choices around the blocks
    assert "--no-text" in refused["roberta-ViT-B-32"]  # a Hugging Face text tower
    roberta = json.loads((bundled / "model_configs" / "roberta-ViT-B-32.json").read_text())
    check_supported(roberta, "roberta-ViT-B-32", text=False)  # its image tower is taken
    assert "timm_model_name" in refused["EVA02-L-14"]
    assert "modified ResNet" in refused["RN50"]
    assert "CoCa" in refused["coca_ViT-B-32"]
    assert all(message.startswith(f"{name}: ") for name, message in refused.items())


WORDS = [
    "a",
    "photo",
    "of",
    "cat",
    "two",
    "dogs",
    "playing",
    "in",
    "the",
    "snow",
    "diagram",
    "red",
    "car",
]
# open_clip's choices around the blocks, each as a released family sets them (tiny sizes)
VARIANTS = {
    "clipa": (  # CLIPA: no ln_pre, mean of the patch tokens, LayerNorm after pooling; BERT
        {"no_ln_pre": True, "pool_type": "avg", "final_ln_after_pool": True},
        {
            "context_length": 16,
            "tokenizer_kwargs": {"strip_sep_token": True},
            "pool_type": "last",
            "no_causal_mask": True,
        },
    ),
    "worldwide": (  # MetaCLIP 2 worldwide's text side: pooled at its end token; and a bias
        {"pool_type": "avg"},
        {
            "context_length": 20,
            "tokenizer_kwargs": {"clean": "canonicalize"},
            "pool_type": "eos",
            "proj_bias": True,
        },
    ),
}


def bert_tokenizer(folder: Path) -> Path:
    """A small uncased BERT WordPiece tokenizer (CLIPA's kind), saved as the hub has them."""
    from transformers import BertTokenizerFast

    folder.mkdir()
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(WORDS + letters)]
    vocabulary += ["##" + letter for letter in letters] + list("!,.?")
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    (folder / "vocab.txt").unlink()  # the saved tokenizer.json carries it
    return folder


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_open_clips_choices_around_the_blocks_export_with_its_embeddings_and_tokens(
    variant: str, tmp_path: Path
) -> None:
    from lookalike.server.embed.tokenizer import TextTokenizer
    from tests.export.open_clip_reference import open_clip_tokenizer

    tokenizer_folder = bert_tokenizer(tmp_path / "tokenizer")
    vision, text = VARIANTS[variant]
    from transformers import AutoTokenizer

    bert = AutoTokenizer.from_pretrained(tokenizer_folder)
    text_cfg = {
        **MODEL_CFG["text_cfg"],
        **text,
        "vocab_size": bert.vocab_size,
        "hf_tokenizer_name": str(tokenizer_folder),
        "eos_id": bert.sep_token_id,
    }
    config = {
        **MODEL_CFG,
        "vision_cfg": {**MODEL_CFG["vision_cfg"], **vision},
        "text_cfg": text_cfg,
    }
    model, weights = moved_model(config, seed=13)
    if vision.get("no_ln_pre"):
        assert not any(key.startswith("visual.ln_pre") for key in weights)
    folder = save_folder(tmp_path / "model", config, weights)
    output = tmp_path / "out"
    assert main(["--quiet", "--model", str(folder), "--output", str(output)]) == 0
    manifest = Manifest.load(output)
    assert_images_embed_as_open_clip(output, model, seed=6)

    texts = [*TEXTS, "  two   dogs,\tin_the snow ", "a red car " * 9]  # cleaned; truncated
    reference = open_clip_tokenizer(text_cfg)(texts).numpy()
    spec = manifest.graphs["text"].tokenizer
    assert spec is not None
    assert spec.max_length == text_cfg["context_length"]
    served = TextTokenizer(output, spec)
    ids = np.stack([served(t) for t in texts])
    stripped = text_cfg["tokenizer_kwargs"].get("strip_sep_token")
    # the graph strips the separator itself; the server's tokens are otherwise open_clip's
    np.testing.assert_array_equal(
        np.where(ids == bert.sep_token_id, 0, ids) if stripped else ids, reference
    )
    with torch.no_grad():
        expected = model.encode_text(torch.from_numpy(reference), normalize=True)
    graph = manifest.graphs["text"].variants[Precision.FP32]
    session = ort.InferenceSession(str(output / graph.file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input_ids": ids})[0], expected, atol=1e-5)
