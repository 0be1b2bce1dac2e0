"""Model packages as earlier Lookalike releases wrote them, made from a current one."""

from __future__ import annotations

import copy
from typing import Any


def as_format_1(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest JSON of the image-only format 1 (before the text tower)."""
    old = copy.deepcopy(manifest)
    del old["graphs"]["text"]
    image = old["graphs"]["image"]
    del image["input_dtype"], image["tokenizer"]
    for variant in image["variants"].values():
        variant["parity"]["images"] = variant["parity"].pop("inputs")
    old["format_version"] = 1
    return old
