"""One self-contained HTML page: the query and its matches, images inlined as thumbnails."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageOps

from client.api import Match

__all__ = ["SOURCE_PATH_KEY", "render_html", "thumbnail_data_uri"]

SOURCE_PATH_KEY = "source_path"  # metadata key `lookalike index` stores each file's path in
THUMBNAIL_PX = 256


def thumbnail_data_uri(data: bytes) -> str | None:
    """A JPEG thumbnail as a data: URI, or None when the bytes are not a readable image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=85)
    except Exception:  # any unreadable file just shows without a picture
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _picture(data: bytes | None, alt: str) -> str:
    uri = thumbnail_data_uri(data) if data else None
    if uri is None:
        return '<div class="missing">no image</div>'
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _file_bytes(match: Match) -> bytes | None:
    path = match.metadata.get(SOURCE_PATH_KEY)
    try:
        return Path(path).read_bytes() if path else None
    except OSError:
        return None


def render_html(query_label: str, query_image: bytes | None, matches: Sequence[Match]) -> str:
    cards = []
    for rank, match in enumerate(matches, 1):
        metadata = "".join(
            f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
            for k, v in sorted(match.metadata.items())
        )
        cards.append(
            f"<figure>{_picture(_file_bytes(match), match.id)}<figcaption>"
            f"<b>#{rank}</b> {match.score:.4f}<br><code>{html.escape(match.id)}</code>"
            f"<dl>{metadata}</dl></figcaption></figure>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Lookalike: {html.escape(query_label)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; color: #222; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; width: {THUMBNAIL_PX}px; }}
img {{ max-width: {THUMBNAIL_PX}px; max-height: {THUMBNAIL_PX}px; display: block; }}
.missing {{ width: {THUMBNAIL_PX}px; height: 120px; background: #eee; display: grid;
  place-items: center; color: #888; }}
dl {{ font-size: 12px; color: #555; margin: .3em 0; }} dt {{ float: left; margin-right: .4em; }}
dd {{ margin: 0; }} code {{ word-break: break-all; }}
</style></head><body>
<h1>Query</h1><figure class="query">{_picture(query_image, query_label)}
<figcaption><code>{html.escape(query_label)}</code></figcaption></figure>
<h1>{len(matches)} matches</h1><div class="grid">{"".join(cards)}</div>
</body></html>
"""
