"""A small JPEG of each added image, kept with the item so that pages can show results from
images the server never sees again.

Made from a draft decode (JPEGs are decoded at a reduced DCT scale, so a thumbnail of a 12 MP
photo costs a fraction of its full decode), upright, fitted inside THUMBNAIL_EDGE pixels.
"""

from __future__ import annotations

import io

from lookalike.server.embed.preprocess import ImageLimits, decode

__all__ = ["make_thumbnail", "THUMBNAIL_EDGE", "THUMBNAIL_QUALITY"]

THUMBNAIL_EDGE = 256  # pixels, the longer side at most: sharp in a grid of ~200 px cards
THUMBNAIL_QUALITY = 75  # a 256 px photo is then about 10 KB


def make_thumbnail(data: bytes, limits: ImageLimits) -> bytes:
    """The image as a JPEG no larger than THUMBNAIL_EDGE on either side (never enlarged);
    the same errors as decoding it for a search."""
    image = decode(data, limits, draft_short_edge=THUMBNAIL_EDGE)
    image.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE), reducing_gap=2.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return out.getvalue()
