"""The report in a real browser: headless Chromium, driven over its DevTools pipe.

Checks what only a browser can: no console errors on any page, every image loads (lazy ones too), the
layer pages and a feature map's anchor are reached by clicking from the index, the keys move between feature
maps (the address and the scroll position), a malformed fragment in the address does not stop them, a class
name made of HTML shows as text and runs nothing, the report of a hostile results folder runs nothing of
it, and a screenshot is a rendered page of the size asked for.

Without Chromium the tests are skipped with the reason, unless ``ZFNET_REQUIRE_BROWSER=1`` (set by
``.ci/run``), where a missing browser fails. ``ZFNET_REPORT_SCREENSHOT=PATH`` also saves a screenshot of the
report's index there.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fakes import EVIL
from headless import Chromium, find_chromium
from PIL import Image

from zfnet.report import build_report

CHROMIUM = find_chromium()
if CHROMIUM is None:
    if os.environ.get("ZFNET_REQUIRE_BROWSER") == "1":
        raise RuntimeError("ZFNET_REQUIRE_BROWSER=1 but no chromium on PATH (Debian: apt-get install chromium)")
    pytest.skip("no chromium on PATH: the browser tests need Debian's chromium (apt-get install chromium)",
                allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "site"
    build_report([sources], out)
    return out


@pytest.fixture(scope="module")
def browser():
    with Chromium(CHROMIUM) as chromium:
        yield chromium


@pytest.fixture
def page(browser):
    page = browser.new_page()
    yield page
    browser.send("Target.closeTarget", {"targetId": page.target})


def test_every_page_loads_without_errors_and_every_image_loads(site, page):
    pages = sorted(site.glob("*.html"))
    assert len(pages) == 8
    images = 0
    for html in pages:
        page.goto(html.as_uri())
        assert page.evaluate("[...document.images].every(i => i.loading === 'lazy')"), html.name
        states = page.load_all_images()
        broken = [s["src"] for s in states if not (s["complete"] and s["width"] > 0)]
        assert not broken, f"{html.name}: images that did not load: {broken}"
        images += len(states)
    assert images >= 15
    assert page.errors() == []
    requests = page.requests()
    assert any(url.endswith(".css") for url in requests) and any(url.endswith(".js") for url in requests)
    assert [url for url in requests if not url.startswith(("file://", "data:"))] == []  # nothing from a network


def test_layer_page_and_feature_map_reached_by_clicking(site, page):
    page.goto((site / "index.html").as_uri())
    page.click("a.layer-link[href='layer-conv2.html']", navigates=True)
    assert page.url().endswith("/layer-conv2.html")
    assert page.evaluate("document.querySelector('h1').textContent.trim()") == "conv2"

    page.click(".mapbar a.chip[href='#conv2-map-5']")
    assert page.evaluate("location.hash") == "#conv2-map-5"
    # in view, and not hidden under the sticky bars
    top, bars, height = page.evaluate("[document.getElementById('conv2-map-5').getBoundingClientRect().top, "
                                      "document.querySelector('.mapbar').getBoundingClientRect().bottom, "
                                      "window.innerHeight]")
    assert bars - 1 <= top < height

    page.click("a.navlink[href='index.html']", navigates=True)  # and straight to a map from the overview
    page.click("a.chip[href='layer-conv1.html#conv1-map-7']", navigates=True)
    assert page.evaluate("location.pathname.endsWith('/layer-conv1.html') && location.hash") == "#conv1-map-7"
    assert page.evaluate("document.querySelector(':target').id") == "conv1-map-7"
    assert page.errors() == []


def _at(page, anchor: str, *, last: bool = False) -> bool:
    """Whether the section ``anchor`` is the one shown: at the top of the view, just under the sticky bars
    (the ``last`` one, at the end of the page, can only be scrolled into view)."""
    top, bars, height = page.evaluate(f"[document.getElementById({anchor!r}).getBoundingClientRect().top, "
                                      "document.querySelector('.mapbar').getBoundingClientRect().bottom, "
                                      "window.innerHeight]")
    return bars - 1 <= top < (height - 100 if last else bars + 40)


def test_keyboard_moves_between_feature_maps_and_pages(site, page):
    page.goto((site / "layer-conv1.html").as_uri())
    page.press("j")
    assert page.evaluate("location.hash") == "#conv1-map-3"
    assert page.evaluate("document.activeElement.id") == "conv1-map-3"
    page.press("j")
    scrolled = page.evaluate("window.scrollY")
    assert _at(page, "conv1-map-7")
    page.press("j")
    assert page.evaluate("location.hash") == "#conv1-map-11"
    assert page.evaluate("window.scrollY") > scrolled and _at(page, "conv1-map-11", last=True)  # moved down to it
    page.press("k")
    assert page.evaluate("location.hash") == "#conv1-map-7"
    assert page.evaluate("window.scrollY") == scrolled and _at(page, "conv1-map-7")
    assert page.evaluate("document.querySelector('.mapbar .chip.on').textContent") == "7"
    page.press("?")
    assert page.evaluate("!document.getElementById('keys').hidden")
    page.press("]", navigates=True)
    assert page.url().endswith("/layer-conv2.html")
    page.press("h", navigates=True)
    assert page.url().endswith("/index.html")
    assert page.errors() == []


def test_html_in_a_class_name_shows_as_text(site, page):
    for name in ("index.html", "occlusion.html"):
        page.goto((site / name).as_uri())
        page.load_all_images()
        assert page.evaluate(f"document.body.innerText.includes({EVIL!r})"), name
        assert page.evaluate("document.querySelectorAll('img[src=\"x\"], svg[onload]').length") == 0, name
    assert page.errors() == []  # no alert dialog, no failed load of "x"


@pytest.mark.parametrize("fragment", ["%E0%A4%A", "%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E", "__proto__",
                                      "constructor", "%", "conv1-map-99"])
def test_a_malformed_fragment_leaves_the_keys_working(site, page, fragment):
    """decodeURIComponent throws on "%E0%A4%A"; the script must not stop there, nor on "#__proto__"."""
    page.goto(f"{(site / 'layer-conv1.html').as_uri()}#{fragment}")
    assert page.evaluate("location.hash") == f"#{fragment}"
    page.press("j")
    assert page.evaluate("location.hash") == "#conv1-map-3" and _at(page, "conv1-map-3")
    assert page.evaluate("document.querySelector('.mapbar .chip.on').textContent") == "3"
    page.press("j")
    assert page.evaluate("location.hash") == "#conv1-map-7"
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert page.errors() == []


def test_hostile_results_run_nothing_in_the_browser(tmp_path, page):
    """The report of a hostile results folder (see test_hostile): every page opens and runs nothing of it."""
    from test_hostile import write_hostile

    src, _ = write_hostile(tmp_path)
    site = build_report([src], tmp_path / "site").parent
    pages = sorted(site.glob("*.html"))
    assert len(pages) >= 6
    for html in pages:
        page.goto(html.as_uri())
        states = page.load_all_images()
        assert all(s["complete"] and s["width"] > 0 and s["src"].startswith("img/") for s in states), html.name
        assert page.evaluate("document.scripts.length") == 1, html.name  # ours, assets/report.js, alone
        page.press("j")
    for image in (site / "img").iterdir():  # what a click on a figure opens: an image, never a document
        page.goto(image.as_uri())
        assert page.evaluate("document.contentType").startswith("image/"), image.name
    assert page.errors() == []
    assert not [url for url in page.requests() if not url.startswith(("file://", "data:"))]


def test_screenshot(site, browser, tmp_path):
    target = Path(os.environ.get("ZFNET_REPORT_SCREENSHOT") or tmp_path / "report.png")
    page = browser.new_page(width=1200, height=800)
    try:
        page.goto((site / "index.html").as_uri())
        page.load_all_images()
        page.screenshot(target)
    finally:
        browser.send("Target.closeTarget", {"targetId": page.target})
    with Image.open(target) as shot:
        assert shot.format == "PNG" and shot.size == (1200, 800)
        grey = np.asarray(shot.convert("L"), dtype=np.float64)
        colours = len(shot.convert("RGB").getcolors(maxcolors=1 << 20) or ())
    assert grey.std() > 10 and colours > 100  # a rendered page: text, bars, the diagram, not a blank frame
    assert (grey < 128).mean() > 0.01  # and dark pixels enough for text to have been drawn
