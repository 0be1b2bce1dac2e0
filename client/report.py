"""One self-contained HTML page: the query and its matches, images inlined as thumbnails.

The page needs nothing but itself (no scripts, fonts or files beside it), so it can be mailed
or attached to a ticket and still show everything offline. A match found through one of its
regions has that box drawn on its thumbnail, and a query box is drawn on the query's.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from lookalike.client.api import Match, Region
from lookalike.client.duplicates import DuplicateGroup
from lookalike.client.files import SOURCE_PATH_KEY

__all__ = [
    "SOURCE_PATH_KEY",
    "render_html",
    "source_file_bytes",
    "thumbnail_data_uri",
    "describe_region",
    "render_groups_html",
]

THUMBNAIL_PX = 320
QUERY_THUMBNAIL_PX = 480
BOX_COLOUR = (255, 45, 85)  # stands out on most photographs


def describe_region(region: Region | None) -> str:
    """`whole image`, or `region 0.25,0.5-0.75,1 'label'`."""
    if region is None:
        return "whole image"
    box = f"{region.x0:.3g},{region.y0:.3g}-{region.x1:.3g},{region.y1:.3g}"
    return f"region {box}" + (f" {region.label!r}" if region.label else "")


def thumbnail_data_uri(
    data: bytes, size: int = THUMBNAIL_PX, box: Region | None = None
) -> str | None:
    """A JPEG thumbnail as a data: URI, `box` drawn on it; None when the bytes are not a
    readable image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((size, size))
            if box is not None:
                _draw(image, box)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=85)
    except Exception:  # any unreadable file just shows without a picture
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _draw(image: Image.Image, box: Region) -> None:
    width, height = image.size
    corners = (box.x0 * width, box.y0 * height, box.x1 * width - 1, box.y1 * height - 1)
    line = max(2, round(min(width, height) / 80))
    ImageDraw.Draw(image).rectangle(corners, outline=BOX_COLOUR, width=line)


def _picture(
    data: bytes | None, alt: str, size: int = THUMBNAIL_PX, box: Region | None = None
) -> str:
    uri = thumbnail_data_uri(data, size, box) if data else None
    if uri is None:
        return '<div class="picture missing">no image</div>'
    return f'<div class="picture"><img src="{uri}" alt="{html.escape(alt)}"></div>'


def _query_text(text: str) -> str:
    return f'<blockquote class="query-text">{html.escape(text)}</blockquote>'


def source_file_bytes(metadata: Mapping[str, str]) -> bytes | None:
    """The bytes of the file an item was indexed from (`lookalike index` records its path)."""
    path = metadata.get(SOURCE_PATH_KEY)
    try:
        return Path(path).read_bytes() if path else None
    except OSError:
        return None


def _card(rank: int, match: Match) -> str:
    shown = {k: v for k, v in match.metadata.items() if k != SOURCE_PATH_KEY}
    metadata = "".join(
        f"<div><dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd></div>"
        for k, v in sorted(shown.items())
    )
    source = match.metadata.get(SOURCE_PATH_KEY)
    title = f' title="{html.escape(source)}"' if source else ""
    width = max(0.0, min(1.0, match.score)) * 100
    bar = f'<span class="bar" aria-hidden="true"><span style="width:{width:.1f}%"></span></span>'
    where = html.escape(describe_region(match.region))
    return f"""<article class="card">
{_picture(source_file_bytes(match.metadata), match.id, box=match.region)}
<div class="about">
<div class="rank">#{rank}</div>
<div class="score"><span class="value">{match.score:.4f}</span>{bar}</div>
<code class="id"{title}>{html.escape(match.id)}</code>
<div class="region">matched by the {where}</div>
{f"<dl>{metadata}</dl>" if metadata else ""}
</div>
</article>"""


def render_html(
    query_label: str,
    query_image: bytes | None,
    matches: Sequence[Match],
    *,
    model: str = "",
    random_weights: bool = False,
    query_text: str | None = None,
    query_box: Region | None = None,
) -> str:
    """The page for one search; a query by text shows that text where the picture would be,
    a query by part of an image shows the image with that box."""
    notice = (
        '<p class="notice" role="alert"><b>Random weights.</b> The server runs a model '
        "exported with random weights (for tests and benchmarks): these scores carry no "
        "meaning.</p>"
        if random_weights
        else ""
    )
    found = f"{len(matches)} match{'es' if len(matches) != 1 else ''}"
    served_by = f" · model <code>{html.escape(model)}</code>" if model else ""
    grid = "".join(_card(rank, match) for rank, match in enumerate(matches, 1))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Lookalike: {html.escape(query_label)}</title>
<style>{STYLE}</style></head><body>
<header>
{
        _query_text(query_text)
        if query_text is not None
        else _picture(query_image, query_label, QUERY_THUMBNAIL_PX, query_box)
    }
<div class="about">
<p class="kicker">Lookalike search</p>
<h1><code>{html.escape(query_label)}</code></h1>
<p class="summary">{found}{served_by}</p>
{notice}
</div>
</header>
<main class="grid">{grid or '<p class="empty">No matches.</p>'}</main>
</body></html>
"""


def render_groups_html(
    groups: Sequence[DuplicateGroup],
    pictures: Mapping[str, bytes | None],
    threshold: float,
    model: str,
    scanned: int,
) -> str:
    """One page of near-duplicate groups: each group a row of thumbnails with its ids and the
    scores that link them."""
    sections = []
    for number, group in enumerate(groups, 1):
        cards = "".join(
            f'<figure class="card">{_picture(pictures.get(item_id), item_id)}'
            f'<figcaption><code class="id">{html.escape(item_id)}</code></figcaption></figure>'
            for item_id in group.ids
        )
        links = ", ".join(
            f"{html.escape(p.a)} ~ {html.escape(p.b)} {p.score:.4f}" for p in group.pairs[:20]
        )
        sections.append(
            f'<section class="group"><h2>Group {number}: {len(group.ids)} items</h2>'
            f'<p class="summary">{links}</p><div class="grid">{cards}</div></section>'
        )
    in_groups = sum(len(group.ids) for group in groups)
    summary = (
        f"{len(groups)} groups, {in_groups} items in them, of {scanned} scanned · threshold "
        f"{threshold:g} · model <code>{html.escape(model)}</code>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Lookalike: near-duplicates</title>
<style>{STYLE}</style></head><body>
<header><div class="about">
<p class="kicker">Lookalike near-duplicates</p>
<h1>{len(groups)} groups</h1>
<p class="summary">{summary}</p>
</div></header>
<main>{"".join(sections) or '<p class="empty">No near-duplicates above the threshold.</p>'}</main>
</body></html>
"""


STYLE = """
:root { --ink: #1d2330; --muted: #5d6675; --line: #e3e6ec; --accent: #3866d6; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; padding: clamp(12px, 3vw, 32px); font: 15px/1.45 system-ui, -apple-system,
  "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--bg); }
code { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
header { display: flex; flex-wrap: wrap; gap: 20px; align-items: center; margin: 0 auto 24px;
  max-width: 1600px; background: #fff; border: 1px solid var(--line); border-radius: 14px;
  padding: 16px; }
header .picture { flex: 0 1 320px; width: 320px; max-width: 100%; }
header .about { flex: 1 1 260px; min-width: 0; }
.kicker { margin: 0; color: var(--muted); text-transform: uppercase; letter-spacing: .08em;
  font-size: 12px; }
h1 { margin: 4px 0 6px; font-size: 22px; overflow-wrap: anywhere; }
h1 code { font-size: inherit; }
.summary { margin: 0; color: var(--muted); overflow-wrap: anywhere; }
.notice { margin: 12px 0 0; padding: 10px 12px; border-radius: 8px; background: #fff4d6;
  border: 1px solid #f0c44c; color: #5b4300; }
.grid { display: grid; gap: 16px; max-width: 1600px; margin: 0 auto;
  grid-template-columns: repeat(auto-fill, minmax(min(100%, 220px), 1fr)); }
.card { display: flex; flex-direction: column; min-width: 0; background: #fff;
  border: 1px solid var(--line); border-radius: 12px; overflow: hidden; }
.picture { aspect-ratio: 1 / 1; background: #eceef2; display: grid; place-items: center;
  border-radius: 10px; overflow: hidden; }
.card .picture { border-radius: 0; }
.picture img { width: 100%; height: 100%; object-fit: contain; display: block; }
.missing { color: var(--muted); font-size: 13px; }
.query-text { flex: 0 1 320px; margin: 0; padding: 18px 20px; border-left: 4px solid
  var(--accent); background: #eef2fc; border-radius: 10px; font-size: 20px; line-height: 1.35;
  overflow-wrap: anywhere; white-space: pre-wrap; max-height: 12em; overflow: auto; }
.card .about { padding: 10px 12px 12px; display: flex; flex-direction: column; gap: 6px;
  min-width: 0; flex: 1; }
.rank { color: var(--muted); font-size: 12px; }
.score { display: flex; align-items: center; gap: 8px; }
.value { font-weight: 600; font-variant-numeric: tabular-nums; }
.bar { flex: 1; height: 6px; background: var(--line); border-radius: 3px; overflow: hidden; }
.bar span { display: block; height: 100%; background: var(--accent); }
.id { overflow-wrap: anywhere; }
.region { font-size: 12.5px; color: var(--muted); overflow-wrap: anywhere; }
dl { margin: 0; font-size: 12.5px; color: var(--muted); display: grid; gap: 2px; }
dl div { display: flex; gap: 6px; min-width: 0; }
dt { font-weight: 600; flex: none; }
dd { margin: 0; min-width: 0; overflow-wrap: anywhere; }
.empty { color: var(--muted); }
.group { max-width: 1600px; margin: 0 auto 24px; }
.group h2 { font-size: 17px; margin: 0 0 4px; }
.group .summary { font-size: 12.5px; margin-bottom: 10px; }
figure.card { margin: 0; }
figcaption { padding: 8px 10px; }
@media (max-width: 600px) {
  .grid { grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 10px; }
  header .picture { flex-basis: 100%; width: 100%; }
  .card .about { padding: 8px; }
}
"""
