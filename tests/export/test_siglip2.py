"""SigLIP 2 (fixed resolution) through the same export: SigLIP's towers with Gemma's tokenizer.
The served tokenizer against Gemma's SentencePiece tokenizer on lowercased hostile strings (the
model was trained on lowercased text), and a checkpoint directory as the hub ships one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from transformers import (
    AutoTokenizer,
    GemmaTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from lookalike.export.cli import main
from lookalike.export.errors import UnsupportedModelError
from lookalike.export.families.gemma_tokenizer import trained_gemma_tokenizers
from lookalike.export.families.siglip import CONTEXT_LENGTH
from lookalike.export.manifest import Manifest, Precision
from lookalike.export.verify import token_ids
from lookalike.server.embed.tokenizer import TextTokenizer
from tests.export.test_siglip import HOSTILE_TEXTS

# Beyond SigLIP's hostile strings: what lowercasing must do as `str.lower` does (a word-final
# capital sigma, a dotted capital I), Gemma's special tokens typed as text, digits it splits.
GEMMA_HOSTILE_TEXTS = (
    *HOSTILE_TEXTS,
    "ΟΔΟΣ ΣΟΦΟΣ, ΑΣ. Σ",
    "İSTANBUL ǅ ẞ ﬁ",
    "<eos> <pad> <bos> <unk> x",
    "<EOS> x a<Eos>b <Pad>",
    "ΑΣ.Σ ΑΣ'Σ \u039f\u0301Σ",
    "1234567890 and 3.14",
    "",
)


def served_equals_reference(package: Path, reference_ids: np.ndarray) -> None:
    spec = Manifest.load(package).graphs["text"].tokenizer
    assert spec is not None
    served = TextTokenizer(package, spec)
    for text, ids in zip(GEMMA_HOSTILE_TEXTS, reference_ids, strict=True):
        np.testing.assert_array_equal(served(text), ids, err_msg=repr(text))


def test_the_manifest_records_gemma_s_layout_and_siglip2_s_resize(siglip2_export: Path) -> None:
    manifest = Manifest.load(siglip2_export)
    assert (manifest.family, manifest.source.id) == ("siglip", "siglip2-tiny")
    assert (manifest.preprocess.resize, manifest.preprocess.resample) == ("squash", "bilinear")
    spec = manifest.graphs["text"].tokenizer
    assert spec is not None
    # no start token, <eos> 1 last, <pad> 0 after it, read at the last position
    assert (spec.start_token_id, spec.end_token_id, spec.pad_token_id) == (None, 1, 0)
    assert (spec.max_length, spec.pooling) == (CONTEXT_LENGTH, "last-token")


def test_the_served_tokenizer_equals_gemma_sentencepiece_on_lowercased_text(
    siglip2_export: Path,
) -> None:
    reference, _ = trained_gemma_tokenizers(CONTEXT_LENGTH)  # the SentencePiece one
    lowered = [text.lower() for text in GEMMA_HOSTILE_TEXTS]
    expected = token_ids(reference, lowered, CONTEXT_LENGTH)
    served_equals_reference(siglip2_export, expected)
    long_text = expected[HOSTILE_TEXTS.index("word " * 100)]
    assert long_text[-1] == 1  # truncated: <eos> kept last, no padding
    assert 0 not in long_text
    assert "ς" in "".join(lowered)  # the word-final sigma was there to be matched


@pytest.fixture(scope="module")
def saved_siglip2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SiglipModel]:
    """A SigLIP 2 checkpoint directory laid out as the hub's: `SiglipModel`, a bilinear
    `SiglipImageProcessor`, and Gemma's fast tokenizer with SigLIP 2's settings."""
    _, tokenizer = trained_gemma_tokenizers(CONTEXT_LENGTH)
    tower = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2)
    config = SiglipConfig(
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        text_config={
            **tower,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": CONTEXT_LENGTH,
        },
    )
    torch.manual_seed(11)
    model = SiglipModel._from_config(config, attn_implementation="eager").eval()
    directory = tmp_path_factory.mktemp("checkpoints") / "siglip2"
    model.save_pretrained(directory)
    SiglipImageProcessor(
        size={"height": 32, "width": 32}, resample=Image.Resampling.BILINEAR
    ).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, model


def test_a_siglip2_checkpoint_directory_exports_with_its_gemma_tokenizer(
    saved_siglip2: tuple[Path, SiglipModel], tmp_path: Path
) -> None:
    directory, model = saved_siglip2
    output = tmp_path / "out"
    assert main(["--quiet", "--model", str(directory), "--output", str(output)]) == 0
    manifest = Manifest.load(output)
    assert (manifest.family, manifest.preprocess.resample) == ("siglip", "bilinear")

    reference = AutoTokenizer.from_pretrained(directory)  # as a user of the checkpoint loads it
    assert isinstance(reference, GemmaTokenizerFast)
    lowered = [text.lower() for text in GEMMA_HOSTILE_TEXTS]
    ids = token_ids(reference, lowered, CONTEXT_LENGTH)
    served_equals_reference(output, ids)

    with torch.no_grad():
        expected = model.get_text_features(input_ids=torch.from_numpy(ids)).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    fp32 = manifest.graphs["text"].variants[Precision.FP32]
    session = ort.InferenceSession(str(output / fp32.file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input_ids": ids})[0], expected, atol=1e-5)


@pytest.mark.parametrize(("setting", "value"), [("add_eos_token", False), ("add_bos_token", True)])
def test_a_gemma_tokenizer_without_siglip2_s_rule_is_refused(
    saved_siglip2: tuple[Path, SiglipModel],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    setting: str,
    value: bool,
) -> None:
    """The text tower reads the last position, where SigLIP 2 was trained to find <eos>: a
    tokenizer that puts something else there is refused, naming what it does."""
    directory, _ = saved_siglip2
    altered = tmp_path / "altered"
    altered.mkdir()
    for path in directory.iterdir():
        (altered / path.name).symlink_to(path)
    (altered / "tokenizer_config.json").unlink()
    (altered / "tokenizer.json").unlink()
    (altered / "special_tokens_map.json").unlink()
    AutoTokenizer.from_pretrained(directory, **{setting: value}).save_pretrained(altered)
    code = main(["--quiet", "--model", str(altered), "--output", str(tmp_path / "out")])
    assert code == UnsupportedModelError.exit_code
    err = capsys.readouterr().err
    assert f"'{setting}': {value}" in err
    assert "--no-text" in err
