"""Text -> the text graph's `input_ids`, with the `tokenizers` library (no transformers, no torch).

Loaded from the package's own tokenizer file (checked against the manifest's sha256). A saved
`tokenizer.json` carries no truncation or padding, so they are set here as `CLIPTokenizerFast`
applies them: truncate to the context length keeping the end token last, pad with the pad
token to the full length. Safe to call from threads (the Rust tokenizer releases the GIL).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from lookalike.export.manifest import TokenizerSpec, sha256_file
from lookalike.server.errors import ModelLoadError

__all__ = ["TextTokenizer"]


class TextTokenizer:
    def __init__(self, model_dir: Path, spec: TokenizerSpec) -> None:
        path = model_dir / spec.tokenizer_json
        if not path.is_file():
            raise ModelLoadError(f"tokenizer file {path} is missing; re-export the model")
        if sha256_file(path) != spec.sha256:
            raise ModelLoadError(
                f"tokenizer file {path} is corrupt or was replaced (sha256 does not match the "
                "manifest); re-export the model"
            )
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the tokenizers library raises plain Exception
            raise ModelLoadError(f"tokenizer file {path} is unreadable: {exc}") from exc
        tokenizer.enable_truncation(max_length=spec.max_length)
        pad_token = tokenizer.id_to_token(spec.pad_token_id)
        tokenizer.enable_padding(
            length=spec.max_length, pad_id=spec.pad_token_id, pad_token=pad_token or ""
        )
        self._tokenizer, self.spec = tokenizer, spec

    def __call__(self, text: str) -> np.ndarray:
        """int64[max_length]: start token, the text's tokens, end token, padding."""
        return np.asarray(self._tokenizer.encode(text).ids, dtype=np.int64)
