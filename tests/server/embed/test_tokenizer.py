"""The server's tokenizer (the `tokenizers` library) gives exactly `CLIPTokenizerFast`'s ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import CLIPTokenizerFast

from lookalike.export.manifest import Manifest, sha256_file
from lookalike.server.embed.tokenizer import TextTokenizer
from lookalike.server.errors import ModelLoadError

CORPUS = Path(__file__).parent / "data" / "tokenizer_corpus.json"


@pytest.fixture(scope="module")
def tokenizers(tiny_export: Path) -> tuple[TextTokenizer, CLIPTokenizerFast]:
    spec = Manifest.load(tiny_export).graphs["text"].tokenizer
    assert spec is not None
    return TextTokenizer(tiny_export, spec), CLIPTokenizerFast.from_pretrained(tiny_export)


def test_the_corpus_covers_what_users_type() -> None:
    corpus = json.loads(CORPUS.read_text())
    assert len(corpus) >= 300
    assert len(set(corpus)) == len(corpus)
    kinds = {
        "mixed case": any(s != s.lower() and s != s.upper() for s in corpus),
        "punctuation": any("!?" in s or "..." in s for s in corpus),
        "digits": any(any(c.isdigit() for c in s) for s in corpus),
        "accents": any("é" in s or "ü" in s for s in corpus),
        "CJK": any("\u4e00" <= c <= "\u9fff" for s in corpus for c in s),
        "emoji": any(ord(c) >= 0x1F300 for s in corpus for c in s),
        "whitespace runs and newlines": any("\n\n" in s or "  " in s for s in corpus),
        "HTML-ish": any("<b>" in s or "&amp;" in s for s in corpus),
        "very long": any(len(s.split()) > 100 for s in corpus),
        "single characters": sum(len(s) == 1 for s in corpus) >= 20,
    }
    assert all(kinds.values()), [kind for kind, present in kinds.items() if not present]


def test_ids_equal_clip_tokenizer_fast_on_the_corpus(
    tokenizers: tuple[TextTokenizer, CLIPTokenizerFast],
) -> None:
    ours, reference = tokenizers
    corpus = json.loads(CORPUS.read_text())
    expected = reference(
        corpus, padding="max_length", max_length=77, truncation=True, return_tensors="np"
    )["input_ids"]
    got = np.stack([ours(text) for text in corpus])
    mismatches = [corpus[i] for i in np.flatnonzero((got != expected).any(axis=1))]
    assert mismatches == []
    assert got.dtype == np.int64
    assert got.shape == (len(corpus), 77)


def test_long_texts_keep_the_end_token_last(
    tokenizers: tuple[TextTokenizer, CLIPTokenizerFast],
) -> None:
    ours, _ = tokenizers
    spec = ours.spec
    ids = ours("word " * 300)
    assert ids[0] == spec.start_token_id
    assert ids[-1] == spec.end_token_id
    assert spec.end_token_id not in ids[1:-1]
    short = ours("a cat")
    assert list(short[:1]) == [spec.start_token_id]
    assert np.flatnonzero(short == spec.end_token_id)[0] == 3  # start, a, cat, end, padding


def test_a_tokenizer_file_that_does_not_match_the_manifest_is_refused(
    tiny_export: Path, tmp_path: Path
) -> None:
    spec = Manifest.load(tiny_export).graphs["text"].tokenizer
    assert spec is not None
    (tmp_path / spec.tokenizer_json).write_text("{}")
    assert sha256_file(tmp_path / spec.tokenizer_json) != spec.sha256
    with pytest.raises(ModelLoadError, match="corrupt or was replaced"):
        TextTokenizer(tmp_path, spec)
    with pytest.raises(ModelLoadError, match="missing"):
        TextTokenizer(tmp_path / "nowhere", spec)
