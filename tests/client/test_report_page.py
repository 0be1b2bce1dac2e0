"""The HTML results page: self-contained, honest about random weights, and laid out well in a
real browser (headless Chromium) at a phone and a desktop width."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lookalike.client.api import Match
from lookalike.client.report import SOURCE_PATH_KEY, render_html
from tests.server.images import encode, natural

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PHONE, DESKTOP = (390, 844), (1440, 900)
LONG_VALUE = "s3://bucket/" + "very-long-path-segment-without-spaces" * 8

# The page in a frame of the device's size (Chromium's windows are at least 500 px wide); once
# it has loaded, the layout is measured and written into the DOM, which `--dump-dom` prints.
HARNESS = """<!doctype html><html><body style="margin:0">
<script>
function measure(iframe) {  // defined before the frame, so its onload always finds it
const frame = iframe.contentWindow, document_ = frame.document;
const cards = [...document_.querySelectorAll('.card')];
const spills = cards.filter(card => {
  const box = card.getBoundingClientRect();
  return [...card.querySelectorAll('*')].some(child => {
    const r = child.getBoundingClientRect();
    return r.width > 0 && (r.right > box.right + 1 || r.left < box.left - 1);
  });
}).map(card => card.querySelector('.id').textContent);
const rows = {};
for (const card of cards) {
  const r = card.getBoundingClientRect();
  (rows[Math.round(r.top)] ||= []).push(Math.round(r.height));
}
const notice = document_.querySelector('.notice');
const layout = {
  viewport: frame.innerWidth,
  page_width: document_.documentElement.scrollWidth,
  columns: Math.max(...Object.values(rows).map(row => row.length)),
  row_heights: Object.values(rows),
  spilling_cards: spills,
  notice_visible: !!notice && notice.getBoundingClientRect().height > 0,
};
document.body.insertAdjacentHTML('beforeend',
  '<pre id="layout">' + JSON.stringify(layout) + '</pre>');
}
</script>
<iframe src="page.html" width="WIDTH" height="HEIGHT" style="border:0" onload="measure(this)">
</iframe></body></html>"""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("photos")
    matches = []
    for i in range(10):
        path = folder / f"photo-{i}.jpg"
        natural(160 + 40 * (i % 4), 240 - 30 * (i % 3), seed=i).save(path)
        metadata = {SOURCE_PATH_KEY: str(path), "split": "train", "n": str(i)}
        if i == 2:
            metadata["uri"] = LONG_VALUE
        item_id = f"photo-{i}.jpg" if i != 4 else "a/" + "deeply-nested-folder/" * 6 + "x.jpg"
        matches.append(Match(id=item_id, score=1.0 - i * 0.07, metadata=metadata))
    query = encode(natural(300, 200, seed=0))
    return render_html(
        "query.jpg", query, matches, model="random-init:vit-b-32", random_weights=True
    )


def test_page_is_one_self_contained_file(page: str) -> None:
    assert not re.search(r"""(src|href)=["'](?!data:)""", page), "only inline data: URIs"
    assert "<script" not in page
    assert page.count("data:image/jpeg;base64,") == 11  # the query and 10 results
    assert 'name="viewport"' in page


def test_page_says_when_the_scores_mean_nothing(page: str) -> None:
    assert "Random weights." in page
    assert "Random weights." not in render_html("q", None, [], random_weights=False)


def test_scores_show_as_bars_and_numbers(page: str) -> None:
    assert "1.0000" in page
    assert "0.3700" in page
    assert 'style="width:100.0%"' in page
    assert 'style="width:37.0%"' in page


def test_no_results_page_says_so() -> None:
    assert "No matches." in render_html("q", None, [])


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt install chromium)")
@pytest.mark.parametrize(("width", "height"), [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_layout_in_a_real_browser(page: str, tmp_path: Path, width: int, height: int) -> None:
    (tmp_path / "page.html").write_text(page, encoding="utf-8")
    measured = tmp_path / "harness.html"
    measured.write_text(
        HARNESS.replace("WIDTH", str(width)).replace("HEIGHT", str(height)), encoding="utf-8"
    )
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-file-access-from-files",  # the harness reads the framed page's layout
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size={max(width, 500)},{height}",
    ]
    assert CHROMIUM is not None
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", measured.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    found = re.search(r'<pre id="layout">(\{.*?\})</pre>', dom)
    assert found, dom[-2000:]
    layout = json.loads(found.group(1))
    assert layout["viewport"] == width
    assert layout["page_width"] <= width, "the page scrolls sideways"
    assert layout["spilling_cards"] == [], "text runs out of its card"
    assert all(len(set(row)) == 1 for row in layout["row_heights"]), "uneven card heights"
    assert layout["notice_visible"]
    if width == DESKTOP[0]:
        assert layout["columns"] >= 5, "a wide screen holds many cards per row"
    else:
        assert layout["columns"] in (1, 2)
    # Screenshots for a person to look at; they stay in pytest's temporary directory.
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={tmp_path / 'page.png'}", measured.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert (tmp_path / "page.png").stat().st_size > 10_000
