"""The web app in a real browser (Playwright driving Debian's headless Chromium) against a real
server filled through the JSON API: search by text, image and a box on it, examples, the
duplicates view, the token form, and the layout on a phone and a desktop. The page may load
nothing but the server's own files."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image

from lookalike.client.api import Client, ImageFacts, NewItem
from lookalike.client.keep import KeepRule, kept_copy
from lookalike.server.core import NEIGHBOUR_PAGE
from tests.server.http.conftest import http_client, http_server
from tests.server.images import jpeg
from tests.server.planted import GROUPS, OUTLIERS, PER_GROUP, group_of, planted

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt install chromium)"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install)")
expect = sync_api.expect
expect.set_options(timeout=15_000)  # 2 busy CPUs can be slow; a passing check returns at once

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")
# random weights: unrelated photos reach 0.98 (none are alike), a re-encoded copy 0.99999
DUPLICATE_THRESHOLD = 0.9995
REGION = [0.5, 0.0, 1.0, 1.0]  # the right half of the collage: a photo stored nowhere else
CARDS = '[data-testid="result-card"]'
ORIENTATION = 0x0112  # the EXIF tag


def photo(name: str, size: int | None = None) -> Image.Image:
    image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    return image.resize((size, size)) if size else image


def encoded(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def sideways(image: Image.Image) -> bytes:
    """The image stored turned a quarter left, with the EXIF orientation (6) that turns it
    upright again, as a phone writes a portrait photo."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    buffer = io.BytesIO()
    image.rotate(90, expand=True).save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    both = Image.new("RGB", (left.width + right.width, left.height))
    both.paste(left, (0, 0))
    both.paste(right, (left.width, 0))
    return both


def put(client: httpx.Client, item_id: str, image: bytes, **fields: Any) -> None:
    body = {"image": base64.b64encode(image).decode(), **fields}
    client.put(f"/v1/items/{item_id}", json=body).raise_for_status()


def api_search(client: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    answer = client.post("/v1/search", json=body)
    answer.raise_for_status()
    return answer.json()["matches"]  # type: ignore[no-any-return]


# -- fixtures: one server, one browser, a fresh page per test --------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Query images as files the page's file input can take."""
    folder = tmp_path_factory.mktemp("queries")
    files = {
        "astronaut": encoded(photo("astronaut")),
        # a part that only the collage's region holds, beside a photo stored nowhere; upright
        # only through its EXIF orientation, as the browser shows it and the server reads it
        "collage-query": sideways(
            side_by_side(photo("moon", 256), photo("hubble_deep_field", 256))
        ),
    }
    for name, data in files.items():
        (folder / f"{name}.jpg").write_bytes(data)
    return {name: folder / f"{name}.jpg" for name in files}


@pytest.fixture(scope="module")
def server(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("web-data")
    with http_server(tiny_export, data_dir, duplicates_threshold=DUPLICATE_THRESHOLD) as (_, url):
        with http_client(url) as client:
            fill(client)
        yield url


COFFEE_COPY = photo("coffee").resize((576, 380))  # smaller, and first in alphabetical order


def fill(client: httpx.Client) -> None:
    for name in PHOTOS:
        put(client, f"photos/{name}.jpg", encoded(photo(name)), metadata={"kind": "photo"})
    put(client, "copies/coffee.jpg", encoded(COFFEE_COPY, 60), metadata={"kind": "photo"})
    for seed in range(4):
        put(
            client,
            f"synthetic/{seed}.jpg",
            jpeg(160 + 40 * seed, 120, seed),
            metadata={"kind": "art"},
        )
    collage = side_by_side(photo("chelsea", 256), photo("hubble_deep_field", 256))
    regions = [{"box": REGION, "label": "galaxies"}]
    put(client, "posters/collage.jpg", encoded(collage), regions=regions, metadata={"kind": "art"})
    vector = client.put("/v1/items/vector-only", json={"vector": [1.0] * 16})  # no thumbnail
    vector.raise_for_status()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    """Opens the app at a URL in a fresh context; every request off this machine is refused
    and, at the end, must not have been attempted."""
    contexts, external, thrown = [], [], []

    def route(route: Any) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    def opener(url: str, viewport: dict[str, int] = DESKTOP) -> Any:
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        context.route("**/*", route)
        page = context.new_page()
        page.on("pageerror", lambda error: thrown.append(str(error)))
        page.goto(url)
        return page

    yield opener
    for context in contexts:
        context.close()
    assert external == [], "the page reached off this machine"
    assert thrown == [], "the page's script threw"


@pytest.fixture
def page(server: str, open_page: Any) -> Any:
    page = open_page(server)
    expect(page.get_by_test_id("stats")).to_contain_text("items")
    return page


def cards(page: Any) -> Any:
    return page.locator(CARDS)


def card(page: Any, item_id: str) -> Any:
    return page.locator(f'{CARDS}[data-id="{item_id}"]')


def shown_ids(page: Any) -> list[str]:
    ids: list[str] = cards(page).evaluate_all("cards => cards.map(card => card.dataset.id)")
    return ids


def searched(page: Any, action: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Does `action`, which makes the page search: the request's body and the matches, once
    the page shows them."""
    with page.expect_response("**/v1/search") as response:
        action()
    request = response.value.request.post_data_json
    matches = response.value.json()["matches"]
    expect(page.get_by_test_id("status")).to_contain_text(f"{len(matches)} match")
    expect(cards(page)).to_have_count(len(matches))
    return request, matches


# -- the tests -------------------------------------------------------------------------------


def test_text_search_shows_the_apis_matches_with_the_filter_and_k(page: Any, server: str) -> None:
    expect(page.get_by_test_id("random-notice")).to_be_visible()
    expect(page.get_by_test_id("random-notice")).to_contain_text("results carry no meaning")
    expect(page.get_by_test_id("stats")).to_contain_text("13 items")
    expect(page.get_by_test_id("stats")).to_contain_text("model tiny")
    expect(page.get_by_test_id("stats")).to_contain_text("fp32")
    page.get_by_test_id("k").select_option("10")
    page.get_by_label("Describe what you look for").fill("a cup of coffee on a table")
    request, _ = searched(page, lambda: page.get_by_test_id("search-button").click())
    with http_client(server) as client:
        expected = api_search(client, text="a cup of coffee on a table", k=10)
    assert request["text"] == "a cup of coffee on a table"
    assert request["k"] == 10
    assert len(expected) == 10
    assert shown_ids(page) == [m["id"] for m in expected]
    first = card(page, expected[0]["id"])
    expect(first.get_by_test_id("card-score")).to_have_text(f"score {expected[0]['score']:.3f}")

    page.get_by_label("Metadata filter").fill("kind=art")
    request, _ = searched(page, lambda: page.get_by_label("Metadata filter").press("Enter"))
    assert request["filter"] == {"kind": "art"}
    with http_client(server) as client:
        expected = api_search(
            client, text="a cup of coffee on a table", k=10, filter={"kind": "art"}
        )
    assert shown_ids(page) == [m["id"] for m in expected]
    assert len(expected) == 5
    expect(page.get_by_test_id("card-meta")).to_have_text([re.compile(r"kind=art$")] * 5)

    page.get_by_label("Metadata filter").fill("kind")
    page.get_by_label("Metadata filter").press("Enter")
    expect(page.get_by_test_id("error")).to_contain_text('"kind" is not one')


def hand_over(page: Any, how: str, path: Path) -> None:
    """Pastes or drops the image file on the page, as the clipboard or a drag would."""
    page.evaluate(
        """([how, data]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], 'query.jpg', { type: 'image/jpeg' }));
            const init = { bubbles: true, cancelable: true };
            document.body.dispatchEvent(how === 'paste'
                ? new ClipboardEvent('paste', { ...init, clipboardData: transfer })
                : new DragEvent('drop', { ...init, dataTransfer: transfer }));
        }""",
        [how, base64.b64encode(path.read_bytes()).decode()],
    )


@pytest.mark.parametrize("how", ["file input", "paste", "drop"])
def test_an_image_finds_itself_first(page: Any, images: dict[str, Path], how: str) -> None:
    astronaut = images["astronaut"]
    if how == "file input":
        upload = page.get_by_label("Or search by an image")
        request, matches = searched(page, lambda: upload.set_input_files(astronaut))
    else:
        request, matches = searched(page, lambda: hand_over(page, how, astronaut))
    assert request["image"].startswith("data:image/jpeg;base64,")
    assert base64.b64decode(request["image"].split(",", 1)[1]) == astronaut.read_bytes()
    assert "box" not in request
    assert shown_ids(page)[0] == "photos/astronaut.jpg"
    assert matches[0]["score"] > 0.999
    expect(page.get_by_test_id("query-image")).to_be_visible()
    first = cards(page).first
    expect(first.get_by_test_id("card-score")).to_have_text(f"score {matches[0]['score']:.3f}")
    expect(first.locator("img")).to_be_visible()  # its thumbnail
    expect(card(page, "vector-only").locator(".placeholder")).to_have_text("no thumbnail")


def test_a_box_drawn_on_the_query_image_finds_the_matching_region(
    page: Any, images: dict[str, Path]
) -> None:
    upload = page.get_by_label("Or search by an image")
    _, whole = searched(page, lambda: upload.set_input_files(images["collage-query"]))
    assert whole[0]["id"] != "posters/collage.jpg"  # the whole query image finds another
    shown = page.get_by_test_id("query-image").bounding_box()
    left, top, width, height = shown["x"], shown["y"], shown["width"], shown["height"]
    assert width == pytest.approx(2 * height, abs=2)  # upright: the file itself is portrait

    def drag() -> None:  # from the top of the middle to past the bottom right corner
        page.mouse.move(left + width / 2 + 1, top + 1)
        page.mouse.down()
        page.mouse.move(left + width * 0.8, top + height * 0.6, steps=4)
        expect(page.get_by_test_id("query-box")).to_be_visible()
        page.mouse.move(left + width + 30, top + height + 30, steps=4)
        page.mouse.up()

    request, matches = searched(page, drag)
    assert request["box"] == pytest.approx(REGION, abs=0.01)
    assert matches[0]["id"] == "posters/collage.jpg"
    assert matches[0]["region"] == {"box": REGION, "label": "galaxies"}
    assert matches[0]["score"] > 0.99
    collage = card(page, "posters/collage.jpg")
    region = collage.get_by_test_id("region-box")
    expect(region).to_be_visible()
    expect(region).to_have_attribute("title", "matched region: galaxies")
    expect(collage.locator("img")).to_be_visible()
    # the box lies over the right half of the thumbnail as shown (letterboxed in its square)
    image, drawn = collage.locator("img").bounding_box(), region.bounding_box()
    shown_height = image["width"] / 2  # the collage is twice as wide as it is high
    assert drawn["x"] == pytest.approx(image["x"] + image["width"] / 2, abs=2)
    assert drawn["width"] == pytest.approx(image["width"] / 2, abs=2)
    assert drawn["height"] == pytest.approx(shown_height, abs=2)
    others = [m for m in matches if m["region"] is None]
    assert others
    assert all(card(page, m["id"]).get_by_test_id("region-box").is_hidden() for m in others)

    page.get_by_test_id("clear-box").click()
    expect(page.get_by_test_id("query-box")).to_be_hidden()


def test_marks_refine_the_query_which_stays_the_query(page: Any, server: str) -> None:
    """A text query refined by a rejected result alone, then by liked ones too: every search
    is the text plus the marks, and the marks stay until the query changes."""
    page.get_by_label("Describe what you look for").fill("a photo")
    _, first = searched(page, lambda: page.get_by_test_id("search-button").click())
    rejected = first[0]["id"]
    card(page, rejected).get_by_role("button", name=f"Not like this: {rejected}").click()
    expect(page.get_by_test_id("selection-count")).to_have_text("0 like this · 1 not like this")
    refine = page.get_by_test_id("refine")
    expect(refine).to_be_enabled()  # a rejection alone refines the query
    request, _ = searched(page, refine.click)
    assert request == {
        "text": "a photo",
        "positives": [],
        "negatives": [{"id": rejected}],
        "exclude_self": True,
        "k": 20,
        "filter": {},
    }
    assert rejected not in shown_ids(page)
    expect(page.get_by_test_id("status")).to_contain_text("“a photo”, refined: not like 1")
    expect(page.get_by_label("Describe what you look for")).to_have_value("a photo")

    liked = shown_ids(page)[:2]
    for item_id in liked:
        card(page, item_id).get_by_role("checkbox", name=f"Like {item_id}").check()
    expect(page.get_by_test_id("selection-count")).to_have_text("2 like this · 1 not like this")
    request, _ = searched(page, refine.click)
    assert request["text"] == "a photo"
    assert request["positives"] == [{"id": item_id} for item_id in liked]
    assert request["negatives"] == [{"id": rejected}]
    assert not {*liked, rejected} & set(shown_ids(page))
    with http_client(server) as client:
        expected = api_search(client, **request)
    assert shown_ids(page) == [m["id"] for m in expected]

    page.get_by_label("Describe what you look for").fill("a cat")  # a new query: no marks
    request, _ = searched(page, lambda: page.get_by_test_id("search-button").click())
    assert request == {"text": "a cat", "k": 20, "filter": {}}
    expect(page.get_by_test_id("selection-bar")).to_be_hidden()


def test_more_like_this_shows_the_item_searched_and_refines_it(
    page: Any, images: dict[str, Path]
) -> None:
    upload = page.get_by_label("Or search by an image")
    searched(page, lambda: upload.set_input_files(images["astronaut"]))
    first = shown_ids(page)[1]
    more = card(page, first).get_by_role("button", name=f"More like {first}")
    request, _ = searched(page, more.click)
    assert request == {"id": first, "exclude_self": True, "k": 20, "filter": {}}
    assert first not in shown_ids(page)
    expect(page.get_by_test_id("query-panel")).to_be_hidden()  # not the image searched before
    expect(page.get_by_test_id("query-item")).to_be_visible()
    expect(page.get_by_test_id("query-item-id")).to_have_text(first)
    rejected = shown_ids(page)[0]
    card(page, rejected).get_by_test_id("not-like").click()
    request, _ = searched(page, page.get_by_test_id("refine").click)
    assert (request["id"], request["negatives"]) == (first, [{"id": rejected}])


def test_a_box_refined_by_a_liked_result_keeps_its_box(page: Any, images: dict[str, Path]) -> None:
    upload = page.get_by_label("Or search by an image")
    searched(page, lambda: upload.set_input_files(images["collage-query"]))
    shown = page.get_by_test_id("query-image").bounding_box()
    page.mouse.move(shown["x"] + shown["width"] / 2 + 1, shown["y"] + 1)
    page.mouse.down()
    page.mouse.move(shown["x"] + shown["width"] - 1, shown["y"] + shown["height"] - 1, steps=4)
    request, _ = searched(page, page.mouse.up)
    box = request["box"]
    liked = shown_ids(page)[1]
    card(page, liked).get_by_test_id("select").check()
    request, _ = searched(page, page.get_by_test_id("refine").click)
    assert request["image"].startswith("data:image/jpeg;base64,")
    assert request["box"] == box
    assert request["positives"] == [{"id": liked}]


def test_duplicates_view_deletes_a_confirmed_copy(page: Any, server: str) -> None:
    page.get_by_role("button", name="Duplicates").click()
    threshold = page.get_by_label("Similarity threshold")
    expect(threshold).to_have_value(str(DUPLICATE_THRESHOLD))
    expect(page.get_by_test_id("dup-calibration")).to_contain_text("calibrated for tiny")
    page.get_by_test_id("dup-scan").click()
    expect(page.get_by_test_id("dup-progress")).to_contain_text("Scanned 13 of 13 items")
    groups = page.get_by_test_id("dup-group")
    expect(groups).to_have_count(1)
    expect(groups.get_by_test_id("dup-id")).to_have_text(["copies/coffee.jpg", "photos/coffee.jpg"])
    expect(groups.locator("img")).to_have_count(2)
    expect(groups.get_by_test_id("dup-score")).to_have_text([re.compile(r"closest 0\.999\d")] * 2)
    expect(groups.locator("img").first).to_be_visible()
    sizes = {"copies/coffee.jpg": COFFEE_COPY.size, "photos/coffee.jpg": photo("coffee").size}
    with http_client(server) as client:
        images = {item_id: client.get(f"/v1/items/{item_id}").json()["image"] for item_id in sizes}
    for item_id, (width, height) in sizes.items():
        assert (images[item_id]["width"], images[item_id]["height"]) == (width, height)
    expect(groups.get_by_test_id("dup-facts")).to_have_text(
        [re.compile(rf"^{w}\u00d7{h} px · \d+\.\d KB$") for w, h in sizes.values()]
    )

    # which copy each rule keeps: as the CLI's rules keep it, from the same recorded sizes
    recorded = {i: ImageFacts(**image) for i, image in images.items()}
    rule = page.get_by_label("Copy to keep in each group")
    for name in ("first", "smallest", "largest"):
        rule.select_option(name)
        kept = kept_copy(sorted(sizes), recorded, KeepRule(name))
        expect(groups.get_by_test_id("dup-keep").locator("visible=true")).to_have_count(1)
        expect(page.locator(f'.copy[data-id="{kept}"]').get_by_test_id("dup-keep")).to_be_visible()
    assert kept_copy(sorted(sizes), recorded, KeepRule.LARGEST) == "photos/coffee.jpg"

    page.get_by_test_id("dup-mark-rest").click()
    expect(page.get_by_role("checkbox", name="Delete copies/coffee.jpg")).to_be_checked()
    expect(page.get_by_role("checkbox", name="Delete photos/coffee.jpg")).not_to_be_checked()
    expect(page.get_by_test_id("dup-count")).to_have_text("1 copy marked")
    page.get_by_test_id("dup-delete").click()
    dialog = page.get_by_test_id("confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Delete 1 item?")
    expect(dialog.get_by_test_id("confirm-list").locator("li")).to_have_text(["copies/coffee.jpg"])
    page.get_by_test_id("confirm-cancel").click()  # nothing happens
    expect(dialog).to_be_hidden()
    expect(groups).to_have_count(1)

    page.get_by_test_id("dup-delete").click()
    with page.expect_response(lambda r: r.url.endswith("/v1/delete")) as deleted:
        page.get_by_test_id("confirm-delete").click()
    assert deleted.value.request.post_data_json == {"ids": ["copies/coffee.jpg"]}
    assert deleted.value.json() == {"deleted": 1, "missing": []}
    expect(page.get_by_test_id("dup-progress")).to_contain_text("Scanned 12 of 12 items")
    expect(page.get_by_test_id("dup-progress")).to_contain_text("no near-duplicates")
    expect(groups).to_have_count(0)
    expect(page.get_by_test_id("stats")).to_contain_text("12 items")
    with http_client(server) as client:
        assert client.get("/v1/items/copies/coffee.jpg").status_code == 404
        coffee = base64.b64encode(encoded(photo("coffee"))).decode()
        found = [m["id"] for m in api_search(client, image=coffee, k=20)]
    assert "photos/coffee.jpg" in found
    assert "copies/coffee.jpg" not in found


def test_layout_on_a_phone_and_a_desktop(
    server: str, open_page: Any, images: dict[str, Path]
) -> None:
    page = open_page(server, PHONE)
    upload = page.get_by_label("Or search by an image")
    _, matches = searched(page, lambda: upload.set_input_files(images["collage-query"]))
    assert len(matches) >= 10
    card(page, matches[0]["id"]).get_by_test_id("select").check()  # shows the selection bar
    with_thumbnails = [m for m in matches if m["id"] != "vector-only"]
    expect(page.locator(f"{CARDS} img:visible")).to_have_count(len(with_thumbnails))
    assert page.evaluate("innerWidth") == PHONE["width"]
    assert columns(page) in (1, 2)
    assert not scrolls_sideways(page)
    controls = ("search-button", "refine", "tab-duplicates", "not-like", "more-like-this")
    for control in (*controls, "tag-results", "tab-overview", "tab-collection"):
        box = page.get_by_test_id(control).first.bounding_box()
        assert box["height"] >= 44, f"{control} is too small to touch"
    card(page, matches[0]["id"]).get_by_test_id("open-item").click()
    expect(page.get_by_test_id("item-dialog")).to_be_visible()
    assert not scrolls_sideways(page)
    page.get_by_test_id("item-close").click()
    page.get_by_role("button", name="Duplicates").click()
    page.get_by_label("Similarity threshold").fill("0.9")  # many groups of random-weight photos
    page.get_by_test_id("dup-scan").click()
    expect(page.get_by_test_id("dup-group").first).to_be_visible()
    assert not scrolls_sideways(page)
    page.get_by_test_id("tab-overview").click()
    page.get_by_test_id("show-clusters").click()
    expect(page.get_by_test_id("cluster").first).to_be_visible()
    page.get_by_test_id("find-outliers").click()
    expect(page.get_by_test_id("outlier-progress")).to_contain_text("most unusual first")
    assert not scrolls_sideways(page)
    page.get_by_test_id("tab-collection").click()
    expect(page.get_by_test_id("collection-stats")).to_be_visible()
    assert not scrolls_sideways(page)

    page.get_by_test_id("tab-search").click()
    page.set_viewport_size(DESKTOP)
    assert columns(page) >= 5
    assert not scrolls_sideways(page)


def columns(page: Any) -> int:
    """How many cards the first row of results holds."""
    tops = cards(page).evaluate_all("cards => cards.map(c => c.getBoundingClientRect().top)")
    return sum(1 for top in tops if abs(top - tops[0]) < 1)


def scrolls_sideways(page: Any) -> bool:
    return page.evaluate(  # type: ignore[no-any-return]
        "document.documentElement.scrollWidth > document.documentElement.clientWidth"
    )


def test_a_token_is_asked_for_kept_and_sent(
    tiny_export: Path, tmp_path: Path, open_page: Any
) -> None:
    with http_server(tiny_export, tmp_path, token="secret") as (_, url):
        with http_client(url, token="secret") as client:
            put(client, "photos/rocket.jpg", encoded(photo("rocket")))
        page = open_page(url)
        dialog = page.get_by_test_id("token-dialog")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("needs a token")
        page.get_by_label("Token", exact=True).fill("wrong")
        page.get_by_test_id("token-submit").click()
        expect(dialog).to_contain_text("refused")
        page.get_by_label("Token", exact=True).fill("secret")
        page.get_by_test_id("token-submit").click()
        expect(dialog).to_be_hidden()
        expect(page.get_by_test_id("stats")).to_contain_text("1 item · model tiny")
        expect(page.get_by_test_id("error")).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('lookalike-token')") == "secret"
        expect(page.get_by_test_id("dup-calibration")).to_contain_text("uncalibrated default")

        page.get_by_label("Describe what you look for").fill("a rocket")
        searched(page, page.get_by_test_id("search-button").click)
        thumbnail = card(page, "photos/rocket.jpg").locator("img")
        expect(thumbnail).to_be_visible()  # fetched with the token, shown from a blob: URL
        assert thumbnail.get_attribute("src").startswith("blob:")

        page.reload()  # the token stays for the session
        expect(page.get_by_test_id("stats")).to_contain_text("1 item")
        expect(dialog).to_be_hidden()


def test_an_item_opens_in_a_larger_view_with_its_size_metadata_and_regions(
    page: Any, server: str, images: dict[str, Path]
) -> None:
    upload = page.get_by_label("Or search by an image")
    searched(page, lambda: upload.set_input_files(images["collage-query"]))
    collage = card(page, "posters/collage.jpg")
    expect(collage.get_by_test_id("card-id")).to_have_text("posters/collage.jpg")
    expect(collage.get_by_test_id("card-meta")).to_have_text(
        re.compile(r"^512\u00d7256 px · \d+\.\d KB · kind=art$")
    )
    lines = cards(page).evaluate_all(  # one line each, however long the id or metadata
        "cards => cards.map(c => ['card-id', 'card-meta'].map(t => "
        "c.querySelector(`[data-testid=${t}]`).getClientRects().length))"
    )
    assert all(rects == [1, 1] for rects in lines)

    collage.get_by_role("button", name="Show posters/collage.jpg").click()
    dialog = page.get_by_test_id("item-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_test_id("item-id")).to_have_text("posters/collage.jpg")
    expect(dialog.get_by_test_id("item-facts")).to_have_text(re.compile(r"^512\u00d7256 px"))
    expect(dialog.locator("dt")).to_have_text(["kind"])
    expect(dialog.locator("dd")).to_have_text(["art"])
    expect(dialog.get_by_test_id("item-region-count")).to_have_text(
        "1 region, each searchable on its own"
    )
    region = dialog.locator(".box.region")
    expect(region).to_have_attribute("title", "matched region: galaxies")
    expect(dialog.locator("img")).to_be_visible()
    picture, drawn = dialog.locator("img").bounding_box(), region.bounding_box()
    assert drawn["x"] == pytest.approx(picture["x"] + picture["width"] / 2, abs=2)  # right half

    request, _ = searched(page, dialog.get_by_test_id("item-more-like-this").click)
    expect(dialog).to_be_hidden()
    assert request["id"] == "posters/collage.jpg"
    with http_client(server) as client:
        vector_only = client.get("/v1/items/vector-only").json()
    assert vector_only["image"] is None  # added as a vector: no size to show
    card(page, shown_ids(page)[0]).get_by_test_id("open-item").click()
    expect(dialog).to_be_visible()
    page.get_by_test_id("item-close").click()
    expect(dialog).to_be_hidden()


def test_a_refused_image_clears_the_results_of_the_query_before(page: Any, tmp_path: Path) -> None:
    page.get_by_label("Describe what you look for").fill("a photo")
    searched(page, lambda: page.get_by_test_id("search-button").click())
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_bytes(b"just some text, named like a photo\n" * 20)
    page.get_by_label("Or search by an image").set_input_files(not_an_image)
    expect(page.get_by_test_id("error")).to_contain_text("not an image")
    expect(cards(page)).to_have_count(0)
    expect(page.get_by_test_id("query-panel")).to_be_hidden()  # what is shown is what is searched
    expect(page.get_by_test_id("status")).to_have_text("")


def test_dismissing_the_token_dialog_says_so_and_lets_the_token_be_given_later(
    tiny_export: Path, tmp_path: Path, open_page: Any
) -> None:
    with http_server(tiny_export, tmp_path, token="secret") as (_, url):
        page = open_page(url)
        dialog = page.get_by_test_id("token-dialog")
        expect(dialog).to_be_visible()
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(page.get_by_test_id("stats")).to_have_text("A token is needed.")
        expect(page.get_by_test_id("error")).to_contain_text("A token is needed.")
        page.get_by_test_id("reconnect").click()
        expect(dialog).to_be_visible()
        page.get_by_label("Token", exact=True).fill("secret")
        page.get_by_test_id("token-submit").click()
        expect(page.get_by_test_id("stats")).to_contain_text("0 items · model tiny")
        expect(page.get_by_test_id("random-notice")).to_be_visible()
        expect(page.get_by_test_id("reconnect")).to_be_hidden()
        expect(page.get_by_test_id("error")).to_be_hidden()


def test_the_collection_view_lists_what_the_server_holds_and_runs(page: Any, server: str) -> None:
    page.get_by_test_id("tab-collection").click()
    with http_client(server) as client:
        stats = client.get("/v1/stats").json()
    table = page.get_by_test_id("collection-stats")
    expect(table).to_be_visible()
    expect(table.locator("dt")).to_have_text(
        [
            "Items",
            "Vectors",
            "Regions",
            "Disk",
            "Model",
            "Engine",
            "Text",
            "Preprocessing",
            "Index",
            "Index version",
            "Duplicates threshold",
            "Server",
        ]
    )
    values = table.locator("dd")
    expect(values.nth(0)).to_have_text(f"{stats['items']:,}")
    expect(values.nth(2)).to_have_text(f"{stats['vectors'] - stats['items']:,}")
    expect(values.nth(3)).to_have_text(re.compile(r"^\d+(\.\d)? (KB|MB)$"))
    expect(values.nth(4)).to_have_text("tiny (clip, 16-d), random weights")
    expect(values.nth(8)).to_have_text(re.compile(rf"^{stats['index']['dtype']} on \w+ kernels"))
    expect(values.nth(10)).to_have_text(f"{DUPLICATE_THRESHOLD} (calibrated)")
    assert stats["disk_bytes"] > 0
    expect(page.locator("#search-view")).to_be_hidden()


def test_results_are_exported_tagged_and_deleted(page: Any, server: str, tmp_path: Path) -> None:
    page.get_by_label("Describe what you look for").fill("art")
    page.get_by_label("Metadata filter").fill("kind=art")
    _, matches = searched(page, lambda: page.get_by_test_id("search-button").click())
    assert len(matches) >= 3
    with page.expect_download() as csv_download:
        page.get_by_test_id("download-csv").click()
    rows = csv_download.value.path().read_text().splitlines()
    assert rows[0] == "id,score,width,height,bytes,kind"
    assert [row.split(",")[0] for row in rows[1:]] == [m["id"] for m in matches]

    chosen = [m["id"] for m in matches[:2]]
    for item_id in chosen:
        card(page, item_id).get_by_test_id("select").check()
    page.get_by_label("Act on").select_option("liked")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_test_id("copy-results").click()
    expect(page.get_by_test_id("status")).to_have_text("Copied 2 results as JSON.")
    copied = json.loads(page.evaluate("navigator.clipboard.readText()"))
    assert [row["id"] for row in copied] == chosen
    with page.expect_download() as json_download:
        page.get_by_test_id("download-json").click()
    exported = json.loads(json_download.value.path().read_text())
    assert [row["id"] for row in exported] == chosen
    assert exported[0]["score"] == matches[0]["score"]
    assert exported[0]["metadata"] == {"kind": "art"}

    page.get_by_test_id("tag-results").click()
    dialog = page.get_by_test_id("tag-dialog")
    expect(dialog).to_contain_text("Tag 2 items")
    page.get_by_test_id("tag-input").fill("review=later")
    with page.expect_response("**/v1/metadata") as tagging:
        page.get_by_test_id("tag-submit").click()
    assert tagging.value.request.post_data_json == {"ids": chosen, "set": {"review": "later"}}
    expect(page.get_by_test_id("status")).to_contain_text("tagged 2 items")
    with http_client(server) as client:
        found = api_search(client, text="art", k=20, filter={"review": "later"})
        assert sorted(m["id"] for m in found) == sorted(chosen)
        for item_id in chosen:  # leave the shared collection as it was
            client.post("/v1/metadata", json={"ids": [item_id], "remove": ["review"]})

    page.get_by_label("Act on").select_option("shown")
    page.get_by_test_id("delete-results").click()
    confirm = page.get_by_test_id("confirm-dialog")
    expect(confirm).to_contain_text(f"Delete {len(matches)} items?")
    expect(confirm.get_by_test_id("confirm-list").locator("li")).to_have_text(
        [m["id"] for m in matches]
    )
    page.get_by_test_id("confirm-cancel").click()  # nothing is deleted
    with http_client(server) as client:
        assert client.get(f"/v1/items/{matches[0]['id']}").status_code == 200


def test_the_duplicates_scan_takes_a_metadata_filter(page: Any) -> None:
    page.get_by_role("button", name="Duplicates").click()
    page.get_by_label("Similarity threshold").fill("0.9")  # random weights: many pairs
    page.get_by_label("Only items with this metadata").fill("kind=art")
    with page.expect_response(lambda r: "/v1/duplicates" in r.url) as scanned:
        page.get_by_test_id("dup-scan").click()
    assert "filter=kind%3Dart" in scanned.value.url
    expect(page.get_by_test_id("dup-group").first).to_be_visible()
    art = {"synthetic/0.jpg", "synthetic/1.jpg", "synthetic/2.jpg", "synthetic/3.jpg"}
    shown = set(page.get_by_test_id("dup-id").all_inner_texts())
    assert shown
    assert shown <= art | {"posters/collage.jpg"}


def test_the_overview_shows_planted_groups_and_the_unusual_items(
    tiny_export: Path, tmp_path: Path, open_page: Any
) -> None:
    with http_server(tiny_export, tmp_path) as (_, url):
        with http_client(url) as client:
            for item_id, vector in planted().items():
                client.put(f"/v1/items/{item_id}", json={"vector": vector.tolist()})
        page = open_page(url)
        page.get_by_test_id("tab-overview").click()
        page.get_by_test_id("cluster-count").select_option("6")
        with page.expect_response(lambda r: "/v1/clusters" in r.url) as answered:
            page.get_by_test_id("show-clusters").click()
        assert "count=6" in answered.value.url
        clusters = page.get_by_test_id("cluster")
        expect(clusters.first).to_be_visible()
        total = GROUPS * PER_GROUP + OUTLIERS
        expect(page.get_by_test_id("clusters-note")).to_contain_text(f"of {total} items")
        for number in range(clusters.count()):  # each group's nearest items are one planted group
            shown = clusters.nth(number).get_by_test_id("member-id").all_inner_texts()
            assert len({group_of(item_id) for item_id in shown}) == 1, shown
        sizes = [
            int(text.split()[0]) for text in page.get_by_test_id("cluster-size").all_inner_texts()
        ]
        assert sum(sizes) == total
        assert sizes == sorted(sizes, reverse=True)

        page.get_by_test_id("find-outliers").click()
        expect(page.get_by_test_id("outlier-progress")).to_contain_text(
            f"Scanned {total} of {total} items"
        )
        expect(page.get_by_test_id("outlier-progress")).to_contain_text("most unusual first")
        first = page.get_by_test_id("outliers").get_by_test_id("member-id")
        assert sorted(first.all_inner_texts()[:OUTLIERS]) == [f"odd-{n}" for n in range(OUTLIERS)]

        first_group = clusters.first.get_by_test_id("member-id").all_inner_texts()
        with page.expect_response("**/v1/search") as searched_group:
            clusters.first.get_by_test_id("search-cluster").click()
        request = searched_group.value.request.post_data_json
        assert request["positives"] == [{"id": item_id} for item_id in first_group]
        expect(page.locator("#search-view")).to_be_visible()


def searched_requests(page: Any) -> list[dict[str, Any]]:
    """The bodies of the searches the page sends from now on."""
    bodies: list[dict[str, Any]] = []

    def keep(request: Any) -> None:
        if request.url.endswith("/v1/search"):
            bodies.append(request.post_data_json)

    page.on("request", keep)
    return bodies


def test_removing_the_query_image_ends_its_query(page: Any, images: dict[str, Path]) -> None:
    """The "Remove image" button takes the image out of the panel, the file input and the
    query: its results and marks go, and neither a new k nor an empty search sends it again."""
    upload = page.get_by_label("Or search by an image")
    searched(page, lambda: upload.set_input_files(images["astronaut"]))
    liked = shown_ids(page)[1]
    card(page, liked).get_by_role("checkbox", name=f"Like {liked}").check()
    sent = searched_requests(page)
    page.get_by_role("button", name="Remove image").click()
    expect(page.get_by_test_id("query-panel")).to_be_hidden()
    expect(page.get_by_test_id("query-image")).not_to_have_attribute("src", re.compile(""))
    expect(upload).to_have_value("")
    expect(cards(page)).to_have_count(0)
    expect(page.get_by_test_id("status")).to_have_text("")
    expect(page.get_by_test_id("result-actions")).to_be_hidden()
    expect(page.get_by_test_id("selection-bar")).to_be_hidden()

    page.get_by_test_id("k").select_option("50")  # reruns the query shown: there is none
    page.get_by_test_id("search-button").click()
    expect(page.get_by_test_id("error")).to_have_text("Type what you look for, or choose an image.")
    assert sent == []
    request, _ = searched(page, lambda: upload.set_input_files(images["astronaut"]))
    assert request["image"].startswith("data:image/jpeg;base64,")
    assert request["k"] == 50
    expect(page.get_by_test_id("query-panel")).to_be_visible()


def test_clear_marks_leaves_no_result_marked(page: Any) -> None:
    """The "Clear marks" button unmarks the liked and the rejected: no card is marked, the
    selection bar goes, acting on the liked finds none, and a refinement carries new marks only."""
    page.get_by_label("Describe what you look for").fill("a photo")
    _, matches = searched(page, page.get_by_test_id("search-button").click)
    *liked, rejected, later = shown_ids(page)[:4]
    for item_id in liked:
        card(page, item_id).get_by_role("checkbox", name=f"Like {item_id}").check()
    card(page, rejected).get_by_role("button", name=f"Not like this: {rejected}").click()
    count = page.get_by_test_id("selection-count")
    expect(count).to_have_text("2 like this · 1 not like this")

    page.get_by_role("button", name="Clear marks").click()
    expect(page.get_by_test_id("selection-bar")).to_be_hidden()
    expect(count).to_have_text("0 like this · 0 not like this")
    expect(page.get_by_test_id("select")).to_have_count(len(matches))
    expect(page.locator(f'{CARDS} [data-testid="select"]:checked')).to_have_count(0)
    expect(page.locator(f'{CARDS} [aria-pressed="true"]')).to_have_count(0)
    expect(page.locator(f"{CARDS}:is(.selected, .rejected)")).to_have_count(0)
    page.get_by_label("Act on").select_option("liked")
    page.get_by_test_id("tag-results").click()
    expect(page.get_by_test_id("error")).to_have_text("No result shown is marked “like this”.")
    expect(page.get_by_test_id("tag-dialog")).to_be_hidden()

    card(page, later).get_by_role("checkbox", name=f"Like {later}").check()  # a fresh start
    expect(count).to_have_text("1 like this · 0 not like this")
    request, _ = searched(page, page.get_by_test_id("refine").click)
    assert (request["positives"], request["negatives"]) == ([{"id": later}], [])


def test_tag_acts_on_every_result_shown(page: Any, server: str) -> None:
    """Act on "every result shown" (the default): Tag… sets the pair on each of them, as the
    API then answers, and on nothing else."""
    page.get_by_label("Describe what you look for").fill("art")
    page.get_by_label("Metadata filter").fill("kind=art")
    _, matches = searched(page, page.get_by_test_id("search-button").click)
    shown = [match["id"] for match in matches]
    assert len(shown) > 1
    expect(page.get_by_label("Act on")).to_have_value("shown")
    page.get_by_role("button", name="Tag…").click()
    expect(page.get_by_test_id("tag-dialog")).to_contain_text(f"Tag {len(shown)} items")
    page.get_by_label("Metadata to set").fill("batch=every-one")
    with page.expect_response("**/v1/metadata") as tagging:
        page.get_by_role("button", name="Tag", exact=True).click()
    assert tagging.value.json()["updated"] == len(shown)
    expect(page.get_by_test_id("status")).to_contain_text(f"tagged {len(shown)} items")
    with http_client(server) as client:
        try:
            tagged = api_search(client, text="art", k=50, filter={"batch": "every-one"})
            stored = {item_id: client.get(f"/v1/items/{item_id}").json() for item_id in shown}
        finally:  # leave the shared collection as it was
            client.post("/v1/metadata", json={"ids": shown, "remove": ["batch"]})
    assert sorted(match["id"] for match in tagged) == sorted(shown)
    for item in stored.values():
        assert item["metadata"] == {"kind": "art", "batch": "every-one"}


# -- more near-duplicates than one page of the server's scan ---------------------------------

NEAR_COPY = 0.999  # the threshold: a planted pair scores 0.99999+, any other two below 0.81
PAIRS_PAST_THE_PAGE = 8


@dataclasses.dataclass(frozen=True)
class PlantedPairs:
    url: str  # the server's HTTP base URL
    address: str  # its gRPC address
    pairs: list[list[str]]  # [a, b] ids of near-identical vectors, sorted


@pytest.fixture
def planted_pairs(tiny_export: Path, tmp_path: Path) -> Iterator[PlantedPairs]:
    """A server holding more items than one page of the duplicates scan (NEIGHBOUR_PAGE): a
    lone item first, then each planted pair's two, so one pair spans the pages' boundary and
    the last lie wholly past it."""
    rng = np.random.default_rng(7)
    count = NEIGHBOUR_PAGE // 2 + PAIRS_PAST_THE_PAGE
    pairs = [[f"pair{n:03d}-a", f"pair{n:03d}-b"] for n in range(count)]
    vectors = {"lone": rng.normal(size=16)}
    for first, second in pairs:
        vectors[first] = rng.normal(size=16)
        vectors[second] = vectors[first] + 1e-3 * rng.normal(size=16)
    with http_server(tiny_export, tmp_path) as (running, url):
        with Client(running.address) as client:
            added = client.add_many(NewItem(i, vector=v) for i, v in vectors.items())
            assert all(outcome.ok for outcome in added)
        yield PlantedPairs(url, running.address, pairs)


def scan_for_duplicates(page: Any, threshold: float) -> None:
    """Scans the collection from the Duplicates view; done once the progress says so."""
    page.get_by_role("button", name="Duplicates").click()
    page.get_by_label("Similarity threshold").fill(str(threshold))
    page.get_by_role("button", name="Find duplicates").click()
    expect(page.get_by_test_id("dup-progress")).to_contain_text(f"at {threshold} or more")


def test_a_duplicates_scan_past_one_page_shows_every_pair_once(
    planted_pairs: PlantedPairs, open_page: Any
) -> None:
    """The page reads the scan's pages one after the other and shows one list of groups: each
    planted pair a group of its own (one spans two pages), none twice, the last one reachable."""
    pairs = planted_pairs.pairs
    page = open_page(planted_pairs.url)
    scans: list[str] = []
    page.on("response", lambda r: scans.append(r.url) if "/v1/duplicates" in r.url else None)
    scan_for_duplicates(page, NEAR_COPY)
    items = 2 * len(pairs) + 1
    expect(page.get_by_test_id("dup-progress")).to_have_text(
        f"Scanned {items} of {items} items: {len(pairs)} groups of near-duplicates "
        f"at {NEAR_COPY} or more"
    )
    assert len(scans) == 2  # the scan's two pages, one after the other
    groups = page.get_by_test_id("dup-group")
    expect(groups).to_have_count(len(pairs))
    shown = groups.evaluate_all(
        "groups => groups.map(g => [...g.querySelectorAll('[data-testid=dup-id]')]"
        ".map(id => id.textContent))"
    )
    assert sorted(shown) == pairs  # each planted pair, once, and nothing else
    groups.last.scroll_into_view_if_needed()
    expect(groups.last).to_be_in_viewport()


def test_mark_all_but_the_kept_copy_deletes_one_copy_of_every_group(
    planted_pairs: PlantedPairs, open_page: Any
) -> None:
    """Across both pages of the scan: no size is recorded for a vector, so each pair keeps its
    first id (a) and every b goes, in one delete, as the server then says."""
    pairs = planted_pairs.pairs
    page = open_page(planted_pairs.url)
    scan_for_duplicates(page, NEAR_COPY)
    expect(page.get_by_test_id("dup-group")).to_have_count(len(pairs))
    page.get_by_role("button", name="Mark all but the kept copy").click()
    expect(page.get_by_test_id("dup-count")).to_have_text(f"{len(pairs)} copies marked")
    page.get_by_role("button", name="Delete marked").click()
    confirm = page.get_by_test_id("confirm-dialog")
    expect(confirm).to_contain_text(f"Delete {len(pairs)} items?")
    with page.expect_response(lambda r: r.url.endswith("/v1/delete")) as deleted:
        confirm.get_by_role("button", name="Delete", exact=True).click()
    assert deleted.value.json() == {"deleted": len(pairs), "missing": []}
    expect(page.get_by_test_id("dup-progress")).to_have_text(
        f"Scanned {len(pairs) + 1} of {len(pairs) + 1} items: no near-duplicates "
        f"at {NEAR_COPY} or more"
    )
    with Client(planted_pairs.address) as client:  # every item stored has a nearest other
        stored = {item_id for scan in client.neighbours(-1.0, k=1) for item_id in scan.neighbours}
    assert stored == {"lone", *(kept for kept, _ in pairs)}
