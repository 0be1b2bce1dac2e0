"""SigLIP 2's Gemma tokenizer, for `tokenizers`, and an offline one for the random-init presets.

SigLIP 2 (the fixed-resolution checkpoints, `model_type` siglip) tokenizes with Gemma's
SentencePiece BPE: no start token, `<eos>` appended and kept last when a text is truncated,
`<pad>` after it to 64 tokens, no attention mask. It was trained on lowercased text, and its
tokenizer does not lowercase (the model card asks the caller to): the packaged tokenizer
lowercases first, so the server's ids equal the reference's on the lowercased text.

The random-init presets cannot download Gemma's vocabulary: theirs is trained here,
deterministically, on the same words as the SigLIP presets' (spelled out from CLIP's BPE
merges), with Gemma's layout: `<pad>` 0, `<eos>` 1, `<bos>` 2, `<unk>` 3, a BPE model with byte
fallback, digits split, spaces kept as pieces, no normalisation. Only the vocabulary's size and
content differ from Google's.
"""

from __future__ import annotations

import json
from typing import Any

from tokenizers import Regex, Tokenizer, normalizers
from transformers import GemmaTokenizer, GemmaTokenizerFast, PreTrainedTokenizerFast

from lookalike.export.errors import UnsupportedModelError
from lookalike.export.families.siglip_tokenizer import fast_tokenizer, trained_sentencepiece

__all__ = ["check_siglip2_rule", "lowercasing_tokenizer", "trained_gemma_tokenizers"]

SIGLIP2_RULE = dict(add_bos_token=False, add_eos_token=True, padding_side="right")
# str.lower() writes a word-final capital sigma as the final form; Lowercase, char by char,
# as the medial one
FINAL_SIGMA = Regex(r"(?<=\p{Cased}\p{Case_Ignorable}*)Σ(?!\p{Case_Ignorable}*\p{Cased})")


def check_siglip2_rule(name: str, tokenizer: GemmaTokenizer | GemmaTokenizerFast) -> None:
    """Refuse a Gemma tokenizer that does not end texts with `<eos>` and pad after it: the
    text tower reads its last position, which SigLIP 2 was trained to find there."""
    found = {key: getattr(tokenizer, key, None) for key in SIGLIP2_RULE}
    if found != SIGLIP2_RULE:
        raise UnsupportedModelError(
            f"{name}'s Gemma tokenizer has {found}; SigLIP 2 texts are tokenized with "
            f"{SIGLIP2_RULE} (pass --no-text to export the image tower alone)"
        )


def lowercasing_tokenizer(tokenizer: GemmaTokenizerFast) -> PreTrainedTokenizerFast:
    """The same fast tokenizer, lowercasing as `str.lower` does before its own normalisation.
    Its special tokens are matched in the lowercased text too (`<EOS>` is `<eos>`, as for the
    reference, which sees the text lowercased), except those with a space in them (the
    normaliser rewrites spaces)."""
    layout = json.loads(tokenizer.backend_tokenizer.to_str())
    for added in layout["added_tokens"]:
        added["normalized"] = not any(character.isspace() for character in added["content"])
    backend = Tokenizer.from_str(json.dumps(layout))
    lowercase = [normalizers.Replace(FINAL_SIGMA, "ς"), normalizers.Lowercase()]
    own = backend.normalizer
    backend.normalizer = normalizers.Sequence(lowercase if own is None else [*lowercase, own])
    return fast_tokenizer(backend, like=tokenizer)


def trained_gemma_tokenizers(context_length: int) -> tuple[GemmaTokenizer, GemmaTokenizerFast]:
    """A Gemma-layout tokenizer trained here, the same every time: the SentencePiece one (the
    reference) and its `tokenizers` conversion (packaged), both with SigLIP 2's rule."""
    layout = dict(
        model_type="bpe",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
    )
    options: dict[str, Any] = dict(
        SIGLIP2_RULE, model_max_length=context_length, model_input_names=["input_ids"]
    )
    with trained_sentencepiece("SigLIP 2", **layout) as path:
        return GemmaTokenizer(str(path), **options), GemmaTokenizerFast(str(path), **options)
