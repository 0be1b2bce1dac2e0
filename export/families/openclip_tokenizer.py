"""The Hugging Face tokenizer an open_clip config names (`text_cfg.hf_tokenizer_name`: BERT's
for CLIPA, XLM-V's or mT5's for MetaCLIP 2 worldwide), cleaned as open_clip's `HFTokenizer`
cleans texts.

open_clip cleans each text in Python (`tokenizer_kwargs.clean`: "whitespace", the default,
"lower" or "canonicalize"), then tokenizes it truncated and padded to the context length. The
packaged tokenizer does the same cleaning as `tokenizers` normalizers ahead of the tokenizer's
own, so the server needs no Python step. One difference is named, not matched: open_clip first
runs `ftfy.fix_text` and unescapes HTML entities, which no normalizer does (texts that need
neither, nearly all, tokenize the same). `strip_sep_token` is not the tokenizer's job here:
the text graph replaces the separator with padding itself (`OpenClipTextTower`).
"""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path
from typing import Any

from tokenizers import Regex, normalizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lookalike.export.errors import ModelUnavailableError, UnsupportedModelError
from lookalike.export.hub import first_line

__all__ = ["TextTokenizers", "TOKENIZER_KWARGS", "hf_text_tokenizer"]

TOKENIZER_KWARGS = ("clean", "strip_sep_token")  # what open_clip's HFTokenizer takes that we do
WHITESPACE = [normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
CLEANING: dict[str, list[normalizers.Normalizer]] = {  # open_clip's get_clean_fn, as normalizers
    "whitespace": WHITESPACE,
    "lower": [*WHITESPACE, normalizers.Lowercase()],
    "canonicalize": [
        normalizers.Replace("_", " "),
        normalizers.Replace(Regex("[" + "".join("\\" + c for c in string.punctuation) + "]"), ""),
        normalizers.Lowercase(),
        *WHITESPACE,
    ],
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # a tokenizer saved in the folder


@dataclasses.dataclass(frozen=True)
class TextTokenizers:
    """An open_clip model's tokenizer: the one the export checks against, the one packaged."""

    reference: PreTrainedTokenizerFast  # as open_clip loads it (it cleans texts apart)
    packaged: PreTrainedTokenizerFast  # the same, cleaning with its own normalizers
    strip_id: int | None  # the separator the text graph replaces with padding, if any


def hf_text_tokenizer(text_cfg: dict[str, Any], folder: Path) -> TextTokenizers:
    """The tokenizer `text_cfg` names: saved in `folder` if it holds one, else loaded by name
    (the hub, or its local cache)."""
    name = text_cfg["hf_tokenizer_name"]
    kwargs = text_cfg.get("tokenizer_kwargs") or {}
    clean = kwargs.get("clean", "whitespace")
    if clean not in CLEANING:
        raise UnsupportedModelError(
            f"text_cfg.tokenizer_kwargs.clean {clean!r}: one of {', '.join(CLEANING)}"
        )
    reference, packaged = _load(name, folder), _load(name, folder)
    if not isinstance(packaged, PreTrainedTokenizerFast):
        raise UnsupportedModelError(
            f"the tokenizer {name!r} has no fast (tokenizers) form, which the server runs"
        )
    backend = packaged.backend_tokenizer
    own = backend.normalizer
    backend.normalizer = normalizers.Sequence([*CLEANING[clean], *([own] if own else [])])
    strip_id = packaged.sep_token_id if kwargs.get("strip_sep_token") else None
    return TextTokenizers(reference, packaged, strip_id)


def _load(name: str, folder: Path) -> Any:
    where = str(folder) if any((folder / f).is_file() for f in TOKENIZER_FILES) else name
    try:
        return AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            f"the text tokenizer text_cfg.hf_tokenizer_name = {name!r} cannot be loaded "
            f"({first_line(exc)}): without a network, save it into {folder} "
            f"(AutoTokenizer.from_pretrained({name!r}).save_pretrained(DIR)), or pass --no-text "
            "to export the image tower alone"
        ) from exc
