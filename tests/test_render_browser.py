"""The rendered samples in headless Chromium at phone and desktop widths: nothing scrolls sideways."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from newsletter.render import fill_slots, render_issue_file
from newsletter.settings import Settings
from tests.conftest import SAMPLE_FILES, SAMPLES

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
VALUES = {
    "email": "reader@example.com",
    "name": "Reader",
    "unsubscribe_url": "https://news.example.org/u/1",
    "preferences_url": "https://news.example.org/p/1",
    "view_url": "https://news.example.org/issues/x",
}
PIXEL_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108020000009077"
    "53de0000000c4944415478da63f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright; skipped where it is absent, except in CI."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _serve_images_offline(route: Any) -> None:
    # Remote images load as a 1x1 PNG: the test never touches the network, and every <img> still has
    # a natural size smaller than the column, so the layout is exercised as with real images.
    route.fulfill(status=200, content_type="image/png", body=PIXEL_PNG)


def _block_images(route: Any) -> None:
    # As Outlook, Thunderbird or Gmail with images off show a message: each image a box of its own size.
    route.abort()


@pytest.mark.parametrize("images", ["loaded", "blocked"])
@pytest.mark.parametrize("width", [375, 600])
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.stem)
def test_no_horizontal_scroll(browser: Any, settings: Settings, path: Path, width: int, images: str) -> None:
    issue = render_issue_file(path, settings)
    page = browser.new_page(viewport={"width": width, "height": 800})
    try:
        page.route("**/*", _serve_images_offline if images == "loaded" else _block_images)
        page.set_content(fill_slots(issue.html, VALUES), wait_until="load")
        scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll_width <= inner_width
        overflowing = page.evaluate(
            "Array.from(document.images).filter(i => i.getBoundingClientRect().right > window.innerWidth + 0.5)"
            ".map(i => i.src)"
        )
        assert overflowing == []
        widths = page.evaluate("Array.from(document.images).map(i => i.getBoundingClientRect().width)")
        assert widths and max(widths) <= width
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{issue.slug}-{width}-{images}.png"), full_page=True)
    finally:
        page.close()


@pytest.mark.parametrize("width", [375])
def test_dark_mode_keeps_text_readable(browser: Any, settings: Settings, width: int) -> None:
    issue = render_issue_file(SAMPLES / "ai-briefing-2020-11-27.md", settings)
    page = browser.new_page(viewport={"width": width, "height": 800}, color_scheme="dark")
    try:
        page.route("**/*", _serve_images_offline)
        page.set_content(fill_slots(issue.html, VALUES), wait_until="load")
        colours = page.evaluate(
            "(() => { const p = document.querySelector('.nl-content > p');"
            " let e = p, bg = 'rgba(0, 0, 0, 0)';"
            " while (e && (bg === 'rgba(0, 0, 0, 0)' || bg === 'transparent')) {"
            "   bg = getComputedStyle(e).backgroundColor; e = e.parentElement; }"
            " return [getComputedStyle(p).color, bg]; })()"
        )
        assert colours == ["rgb(230, 237, 243)", "rgb(22, 27, 34)"]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{issue.slug}-{width}-dark.png"), full_page=True)
    finally:
        page.close()
