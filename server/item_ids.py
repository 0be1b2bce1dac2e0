"""Item ids as people read them: one stored form per name, and no id that can pass for another.

Every id that enters (gRPC, HTTP, the CLI through them, `lookalike ingest`) goes through
`normalize_id` before it is stored, and every id a caller looks up goes through `lookup_ids`;
`stored_id_problem` says why an id stored before these rules breaks them (`lookalike
legacy-ids`). This module is the only place that knows Unicode's normal forms and categories.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from lookalike.server.errors import InvalidArgumentError

__all__ = ["MAX_ID_BYTES", "check_id", "normalize_id", "lookup_ids", "stored_id_problem"]

MAX_ID_BYTES = 1024
NORMAL_FORM: Final = "NFC"
# The invisible and format characters refused in new ids, by Unicode category, with what a
# character of the category is called when it has no name: format characters (Cf: the
# bidirectional embeddings, overrides and isolates U+202A-U+202E and U+2066-U+2069, the zero
# width space, joiners and marks U+200B-U+200F, U+FEFF, the soft hyphen, tags), controls,
# lone surrogates, and the line and paragraph separators.
REFUSED_CATEGORIES = {
    "Cf": "a format character",
    "Cc": "a control character",
    "Cs": "a lone surrogate",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


def check_id(item_id: str) -> None:
    """What every id must be, stored or looked up: 1 to MAX_ID_BYTES bytes of UTF-8, no NUL."""
    encoded = item_id.encode("utf-8", "surrogatepass")
    if not encoded:
        raise InvalidArgumentError("id is empty")
    if len(encoded) > MAX_ID_BYTES:
        raise InvalidArgumentError(f"id is {len(encoded)} bytes; the limit is {MAX_ID_BYTES}")
    if "\0" in item_id:
        raise InvalidArgumentError("id contains a NUL character")


def normalize_id(item_id: str) -> str:
    """The id to store: `item_id` checked and in Unicode NFC, so that `café.jpg` typed (NFC)
    and `café.jpg` from a macOS file name (NFD) are one item.

    Refused (InvalidArgumentError naming the character and its position, counted from 0):
    invisible and format characters (`REFUSED_CATEGORIES`), which can make an id look like
    another (U+202E RIGHT-TO-LEFT OVERRIDE shows the rest of the id reversed) or like nothing
    at all. U+200D ZERO WIDTH JOINER is refused with them: it also hides inside a name, and
    the emoji sequences that need it are rare in ids (an emoji without a joiner is taken)."""
    check_id(item_id)
    for position, character in enumerate(item_id):
        category = unicodedata.category(character)
        if category in REFUSED_CATEGORIES:
            name = unicodedata.name(character, "") or f"({REFUSED_CATEGORIES[category]})"
            raise InvalidArgumentError(
                f"id contains U+{ord(character):04X} {name} at position {position}: invisible "
                "and format characters are not allowed in ids"
            )
    normal = unicodedata.normalize(NORMAL_FORM, item_id)
    check_id(normal)  # NFC lengthens a few characters (e.g. U+0958)
    return normal


def lookup_ids(item_id: str) -> tuple[str, ...]:
    """The stored ids a lookup of `item_id` tries, in order: the id as given, then its NFC
    form when that differs. The first one stored is the item meant: ids are stored in NFC, and
    an id stored before that (NFD, say) is still found as it was written. Nothing but
    `check_id` is refused: an id stored before `normalize_id` refused some characters stays
    readable, and an id that could never be stored is simply not found."""
    check_id(item_id)
    return tuple(dict.fromkeys((item_id, unicodedata.normalize(NORMAL_FORM, item_id))))


def stored_id_problem(item_id: str) -> str | None:
    """Why a stored id is not what `normalize_id` makes of it (stored before these rules), or
    None when it is."""
    try:
        normal = normalize_id(item_id)
    except InvalidArgumentError as error:
        return str(error)
    if normal != item_id:
        return f"not in Unicode NFC: stored now, it would be {normal!a}"
    return None
