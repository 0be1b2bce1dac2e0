"""SigLIP's SentencePiece tokenizer, for `tokenizers` (the server has neither sentencepiece nor
transformers), and an offline one for the random-init presets.

`SiglipTokenizer` lowercases, drops ASCII punctuation, collapses whitespace, then runs its
SentencePiece model (its own NFKC-style normalisation, a word-start mark on every word) and
appends `</s>`. The conversion writes those steps as `tokenizers` normalizers before the
model's own, so the server's ids equal the reference's (a test checks hostile strings).

The random-init presets cannot download SigLIP's vocabulary: their SentencePiece model is
trained here, deterministically, on words spelled out from CLIP's BPE merges (the file the
`open_clip_torch` wheel ships). It has SigLIP's layout (`<pad>` 0, `</s>` 1, `<unk>` 2, a
unigram model, NFKC); only the vocabulary's size and content differ from Google's.
"""

from __future__ import annotations

import contextlib
import io
import re
import string
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, normalizers
from transformers import PreTrainedTokenizerFast, SiglipTokenizer
from transformers.convert_slow_tokenizer import Converter, SpmConverter, import_protobuf

from lookalike.export.errors import ModelUnavailableError
from lookalike.export.tokenizer import bpe_merges

__all__ = [
    "fast_siglip_tokenizer",
    "fast_tokenizer",
    "trained_sentencepiece",
    "trained_siglip_tokenizer",
]

TRAINING_WORDS_PER_LINE = 12
TRAINED_VOCABULARY = 32000  # SigLIP's; the BPE words give fewer pieces (hard limit off)
PUNCTUATION = Regex("[" + re.escape(string.punctuation) + "]")


class _SiglipConverter(SpmConverter):
    """transformers' SentencePiece converter, plus SigLIP's canonicalisation and `</s>`."""

    def __init__(self, tokenizer: SiglipTokenizer) -> None:
        Converter.__init__(self, tokenizer)  # the model proto comes from memory, not a file
        self.proto = import_protobuf().ModelProto.FromString(
            tokenizer.sp_model.serialized_model_proto()
        )

    def normalizer(self, proto: object) -> normalizers.Normalizer:
        canonical = [
            normalizers.Replace(PUNCTUATION, ""),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
        ]
        if self.original_tokenizer.do_lower_case:
            canonical.insert(0, normalizers.Lowercase())
        return normalizers.Sequence([*canonical, super().normalizer(proto)])

    def post_processor(self) -> object:
        from tokenizers import processors

        eos = self.original_tokenizer.eos_token
        return processors.TemplateProcessing(
            single=["$A", eos],
            special_tokens=[(eos, self.original_tokenizer.convert_tokens_to_ids(eos))],
        )


def fast_siglip_tokenizer(tokenizer: SiglipTokenizer) -> PreTrainedTokenizerFast:
    """The same tokenizer on `tokenizers`, with the special tokens of the original."""
    return fast_tokenizer(_SiglipConverter(tokenizer).converted(), like=tokenizer)


def fast_tokenizer(backend: Tokenizer, *, like: Any) -> PreTrainedTokenizerFast:
    """A `tokenizers` pipeline with the end, unknown and pad tokens and the length of `like`."""
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=str(like.eos_token),
        unk_token=str(like.unk_token),
        pad_token=str(like.pad_token),
        model_max_length=like.model_max_length,
    )


def trained_siglip_tokenizer(context_length: int) -> SiglipTokenizer:
    """A SigLIP tokenizer trained here, the same every time (see the module's docstring)."""
    layout = dict(model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    with trained_sentencepiece("SigLIP", normalization_rule_name="nmt_nfkc", **layout) as path:
        return SiglipTokenizer(str(path), model_max_length=context_length)


@contextlib.contextmanager
def trained_sentencepiece(family: str, **layout: Any) -> Iterator[Path]:
    """A SentencePiece model file trained on `training_lines()` with the family's `layout`
    (model type, special ids, normalisation), for as long as the context lasts (tokenizers
    read their model file when built)."""
    try:
        import sentencepiece
    except ImportError as exc:
        raise ModelUnavailableError(
            f"a {family} text tower needs sentencepiece for its tokenizer: pip install "
            "sentencepiece (it is in lookalike[export]), or pass --no-text"
        ) from exc
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines()),
        model_writer=model,
        vocab_size=TRAINED_VOCABULARY,
        hard_vocab_limit=False,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
        **layout,
    )
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "tokenizer.model"
        path.write_bytes(model.getvalue())
        yield path


def training_lines() -> list[str]:
    """The offline vocabularies' training text: the words CLIP's BPE merges spell out."""
    words = ["".join(merge).replace("</w>", " ") for merge in bpe_merges()]
    return [
        " ".join(words[i : i + TRAINING_WORDS_PER_LINE])
        for i in range(0, len(words), TRAINING_WORDS_PER_LINE)
    ]
