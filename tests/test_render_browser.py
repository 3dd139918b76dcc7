"""The rendered issues in headless Chromium at phone and desktop widths, light and dark, images on and off.

On the two bundled samples and a link-heavy English issue: nothing scrolls sideways, no word in a code
block or a table cell is split although it fits on a line, and every text reads at a contrast of at
least 4.5:1 against what is behind it. Screenshots go to artifacts/ for CI to keep.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from newsletter.render import RenderedIssue, fill_slots, render_issue_file
from newsletter.settings import Settings
from tests.browser import ARTIFACTS as BROWSER_ARTIFACTS
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import LINK_HEAVY_ISSUE, SAMPLE_FILES

ARTIFACTS = BROWSER_ARTIFACTS / "render"
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
MIN_CONTRAST = 4.5  # WCAG 2.1 1.4.3, level AA for body text
ISSUES = [*SAMPLE_FILES, LINK_HEAVY_ISSUE]

# What the page shows a reader, measured in the page: sideways scroll, words split across lines although
# they fit in their box (in <pre> and table cells), and the contrast of every visible text.
PAGE_CHECKS = """
() => {
  const parse = (c) => { const m = c.match(/[\\d.]+/g).map(Number); return m.length > 3 ? m : [...m, 1]; };
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (element) => {
    for (let e = element; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) return c;
    }
    return [255, 255, 255, 1];  // the canvas of a page without a background of its own
  };
  const visible = (e) => {
    if (e.closest('.nl-preheader')) return false;
    const s = getComputedStyle(e);
    return s.visibility !== 'hidden' && s.display !== 'none' && e.getClientRects().length > 0;
  };
  const lowContrast = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const element = node.parentElement;
    if (!node.data.trim() || !visible(element)) continue;
    const fg = parse(getComputedStyle(element).color), bg = background(element);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    if (ratio < %(min_contrast)s) {
      lowContrast.push(`${ratio.toFixed(2)}:1 ${getComputedStyle(element).color} on rgb(${bg.slice(0, 3)}): `
        + node.data.trim().slice(0, 40));
    }
  }
  const lineSpan = (node, start, length) => {
    const range = document.createRange();
    range.setStart(node, start);
    range.setEnd(node, start + length);
    const rects = Array.from(range.getClientRects()).filter((r) => r.width > 0);
    return { lines: new Set(rects.map((r) => Math.round(r.top))).size, width: rects.reduce((s, r) => s + r.width, 0) };
  };
  const splitWords = [];
  for (const box of document.querySelectorAll('.nl-content pre, .nl-content td, .nl-content th')) {
    const style = getComputedStyle(box);
    const room = box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const texts = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
    for (let node = texts.nextNode(); node; node = texts.nextNode()) {
      // A run of letters and digits split across lines, inside a token (up to the next space) that would
      // fit on one line: a token longer than the line may break, anywhere.
      for (const token of node.data.matchAll(/\\S+/g)) {
        if (lineSpan(node, token.index, token[0].length).width > room) continue;
        for (const run of token[0].matchAll(/[A-Za-z0-9_]+/g)) {
          if (lineSpan(node, token.index + run.index, run[0].length).lines > 1) {
            splitWords.push(`${box.tagName.toLowerCase()}: ${run[0]}`);
          }
        }
      }
    }
  }
  return {
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    lowContrast: lowContrast,
    splitWords: splitWords,
    wideImages: Array.from(document.images)
      .filter((i) => i.getBoundingClientRect().right > window.innerWidth + 0.5).map((i) => i.src),
  };
}
""".replace("%(min_contrast)s", str(MIN_CONTRAST))

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


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RenderedIssue]:
    """Each issue rendered once for the whole module."""
    directory = tmp_path_factory.mktemp("render")
    settings = Settings(
        database_url=f"sqlite:///{directory / 'newsletter.db'}",
        secret_key="test-secret-key-that-is-long-enough",
        newsletter_name="AI 简报",
        base_url="https://news.example.org",
        postal_address="1 Example Street, Springfield",
        remote_image_sizes=False,
    )
    return {path.stem: render_issue_file(path, settings) for path in ISSUES}


def _serve_images_offline(route: Any) -> None:
    # Remote images load as a 1x1 PNG: the test never touches the network, and every <img> still has
    # a natural size smaller than the column, so the layout is exercised as with real images.
    route.fulfill(status=200, content_type="image/png", body=PIXEL_PNG)


def _block_images(route: Any) -> None:
    # As Outlook, Thunderbird or Gmail with images off show a message: each image a box of its own size.
    route.abort()


def _check_page(browser: Any, html: str, width: int, scheme: str, images: str, screenshot: str) -> dict[str, Any]:
    page = browser.new_page(viewport={"width": width, "height": 800}, color_scheme=scheme)
    try:
        page.route("**/*", _serve_images_offline if images == "loaded" else _block_images)
        page.set_content(html, wait_until="load")
        found: dict[str, Any] = page.evaluate(PAGE_CHECKS)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{screenshot}-{width}-{scheme}-{images}.png"), full_page=True)
        return found
    finally:
        page.close()


def _assert_reads_well(found: dict[str, Any]) -> None:
    assert found["scrollWidth"] <= found["innerWidth"], "the page scrolls sideways"
    assert found["wideImages"] == []
    assert found["splitWords"] == [], "words split mid-word although they fit on a line"
    assert found["lowContrast"] == [], f"text under {MIN_CONTRAST}:1"


@pytest.mark.parametrize("images", ["loaded", "blocked"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 600])
@pytest.mark.parametrize("name", [path.stem for path in ISSUES])
def test_email_reads_well(
    browser: Any, rendered: dict[str, RenderedIssue], name: str, width: int, scheme: str, images: str
) -> None:
    issue = rendered[name]
    _assert_reads_well(_check_page(browser, fill_slots(issue.html, VALUES), width, scheme, images, f"email-{name}"))


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 600])
@pytest.mark.parametrize("name", [path.stem for path in ISSUES])
def test_web_version_reads_well(
    browser: Any, rendered: dict[str, RenderedIssue], name: str, width: int, scheme: str
) -> None:
    issue = rendered[name]
    _assert_reads_well(_check_page(browser, issue.web_html, width, scheme, "loaded", f"web-{name}"))


def test_web_version_uses_its_fonts(browser: Any, rendered: dict[str, RenderedIssue]) -> None:
    page = browser.new_page(viewport={"width": 600, "height": 800})
    try:
        page.set_content(rendered[LINK_HEAVY_ISSUE.stem].web_html, wait_until="load")
        family = page.evaluate("getComputedStyle(document.querySelector('.nl-content p')).fontFamily")
    finally:
        page.close()
    assert family.startswith('-apple-system, BlinkMacSystemFont, "Segoe UI"')


def test_dark_mode_colours_the_text(browser: Any, rendered: dict[str, RenderedIssue]) -> None:
    issue = rendered["ai-briefing-2020-11-27"]
    page = browser.new_page(viewport={"width": 375, "height": 800}, color_scheme="dark")
    try:
        page.set_content(fill_slots(issue.html, VALUES), wait_until="load")
        colours = page.evaluate(
            "['.nl-content > p', '.nl-brand div'].map(s => getComputedStyle(document.querySelector(s)).color)"
        )
    finally:
        page.close()
    assert colours == ["rgb(230, 237, 243)", "rgb(240, 246, 252)"]
