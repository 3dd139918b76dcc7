"""Rendering an issue: the two real samples as golden inputs, and each rule of the Markdown dialect."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from lxml import html as lxml_html

from newsletter import theme
from newsletter.errors import IssueFormatError
from newsletter.render import RenderedIssue, SlotTemplate, fill_slots, render_issue, render_issue_file
from newsletter.settings import Settings
from newsletter.slots import SLOT_DELIMITERS, SLOT_NAMES
from tests.conftest import SAMPLE_FILES, SAMPLES, tiny_png

MARKDOWN_LINK_RE = re.compile(r"(?<!!)\[[^\]\n]*\]\((https?://[^)\s]+)\)")
MARKDOWN_IMAGE_RE = re.compile(r"!\[[^\]\n]*\]\((https?://[^)\s]+)\)|<img src=\"([^\"]+)\"")
BARE_URL_RE = re.compile(r"(?<![(\"])https?://[^\s)）\"<>，。*]+")
VALUES = {
    "email": "reader@example.com",
    "name": "Reader",
    "unsubscribe_url": "https://news.example.org/u/1",
    "preferences_url": "https://news.example.org/p/1",
    "view_url": "https://news.example.org/issues/x",
}


def visible_text(document: str) -> str:
    """What a reader sees: the body text without style and script elements."""
    root = lxml_html.document_fromstring(document)
    for element in root.xpath("//style|//script|//title"):
        element.drop_tree()
    return str(root.text_content())


def hrefs(document: str) -> set[str]:
    return {html.unescape(href) for href in re.findall(r'href="([^"]*)"', document)}


def render(source: str, settings: Settings, **options: object) -> RenderedIssue:
    return render_issue(source, settings, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.stem)
def test_sample_renders_as_the_author_saw_it(path: Path, settings: Settings) -> None:
    issue = render_issue_file(path, settings)
    page = fill_slots(issue.html, VALUES)
    text = visible_text(page)
    assert "**" not in text
    assert "[TOC]" not in text
    assert "](" not in text
    assert issue.lang == "zh-CN"
    assert '<html lang="zh-CN"' in page
    assert len(issue.html.encode()) < 102 * 1024
    assert page.startswith("<!DOCTYPE html>")  # no quirks mode
    for image in re.findall(r"<img\b[^>]*>", page):
        style = image.replace(" ", "")
        # Fluid within the column (a share of it, never fixed pixels), never wider than the column or itself.
        assert re.search(r"max-width:(100%|\d+px)", style), image
        if re.search(r'\swidth="\d+"', image):  # Outlook sizes by the attribute
            assert re.search(r"(?<![-\w])width:\d+%", style), image
        else:  # a remote image whose size is not known (not read in tests) is never enlarged
            assert not re.search(r"(?<![-\w])width:", style), image


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.stem)
def test_sample_links_are_in_html_and_text(path: Path, settings: Settings) -> None:
    issue = render_issue_file(path, settings)
    source = path.read_text(encoding="utf-8")
    urls = set(MARKDOWN_LINK_RE.findall(source)) | set(BARE_URL_RE.findall(source))
    assert len(urls) > 10
    page_links = hrefs(issue.html)
    text = fill_slots(issue.text, VALUES)
    for url in urls:
        assert url in page_links, url
        assert url in text, url
    sources = {html.unescape(src) for src in re.findall(r'<img[^>]* src="([^"]*)"', issue.html)}
    for found in MARKDOWN_IMAGE_RE.findall(source):
        assert (found[0] or found[1]) in sources


def test_toc_links_to_named_anchors(settings: Settings) -> None:
    issue = render_issue_file(SAMPLES / "ai-briefing-2020-11-27.md", settings)
    assert len(issue.headings) == 8
    for heading in issue.headings:
        assert f'href="#{heading.anchor}"' in issue.html
        assert re.search(f'<a name="{heading.anchor}"[^>]*></a>', issue.html)
    assert " id=" not in issue.content_html


def test_cjk_emphasis_next_to_full_width_punctuation(settings: Settings) -> None:
    issue = render("# T\n\n**粗体。**后文，还有的**「任务简报」**，供您查阅。", settings)
    assert "<strong>粗体。</strong>后文" in issue.content_html
    assert "<strong>「任务简报」</strong>，" in issue.content_html
    sample = render_issue_file(SAMPLES / "ai-briefing-2020-11-27.md", settings)
    assert "<strong>「任务简报」</strong>" in sample.content_html


def test_typora_zoom_becomes_a_share_of_the_column(settings: Settings) -> None:
    issue = render('# T\n\n<img src="https://example.org/a.png" style="zoom:80%;" />', settings)
    image = re.search(r"<img\b[^>]*>", issue.html)
    assert image is not None
    assert "width:80%" in image.group(0).replace(" ", "")
    assert f'width="{round(theme.CONTENT_WIDTH_PX * 0.8)}"' in image.group(0)


def test_bare_urls_end_before_full_width_punctuation(settings: Settings) -> None:
    issue = render("# T\n\n见 https://github.com/a/b）和 https://example.org/p，还有 https://example.org/q。", settings)
    assert {"https://github.com/a/b", "https://example.org/p", "https://example.org/q"} <= hrefs(issue.content_html)


def test_gfm_tables_strikethrough_tasks_footnotes(settings: Settings) -> None:
    source = "# T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n~~old~~\n\n- [x] done\n- [ ] open\n\nNote[^1]\n\n[^1]: Said."
    issue = render(source, settings)
    assert "<table" in issue.content_html and 'class="table-scroll"' in issue.content_html
    assert "<s>old</s>" in issue.content_html or "<del>old</del>" in issue.content_html
    assert "\u2611" in issue.content_html and "\u2610" in issue.content_html
    assert "<input" not in issue.content_html
    assert 'href="#fn1"' in issue.content_html and '<a name="fn1">' in issue.content_html


@pytest.mark.parametrize(
    "dangerous",
    [
        "<script>alert(1)</script>",
        '<a href="javascript:alert(1)">x</a>',
        '<img src="x.png" onerror="alert(1)">',
        '<iframe src="https://evil.example"></iframe>',
        '<form action="https://evil.example"><input></form>',
        '<p onclick="steal()">click</p>',
    ],
)
def test_raw_html_is_cleaned(dangerous: str, settings: Settings) -> None:
    issue = render(f"# T\n\n{dangerous}\n\nafter", settings)
    lowered = issue.html.lower()
    for forbidden in ("<script", "javascript:", "onerror", "<iframe", "<form", "onclick", "steal()"):
        assert forbidden not in lowered
    assert "after" in issue.html


@pytest.mark.parametrize(
    "source", ["a < b", "<p>unclosed", "<b>x</p>", "</mj-text>", "<![CDATA[x]]>", "\x00", "<mj-section>", "& < > \" '"]
)
def test_markup_that_breaks_mrml_does_not_crash(source: str, settings: Settings) -> None:
    issue = render(f"# T\n\n{source}", settings)
    assert issue.html.startswith("<!DOCTYPE html>\n<html")


def test_front_matter_yaml(settings: Settings) -> None:
    source = "---\nsubject: 第一期\npreheader: 本期看点\nslug: first-issue\ndate: 2020-11-06\n---\n# Heading\n\nText"
    issue = render(source, settings, subject="ignored", slug="ignored")
    found = (issue.subject, issue.preheader, issue.slug, issue.date)
    assert found == ("第一期", "本期看点", "first-issue", "2020-11-06")
    assert "本期看点" in issue.html


def test_front_matter_pelican(settings: Settings) -> None:
    issue = render("Title: My issue\nDate: 2020-11-27\nSummary: The short version\n\nBody text", settings)
    assert (issue.subject, issue.preheader, issue.date) == ("My issue", "The short version", "2020-11-27")
    assert "Title:" not in issue.content_html


def test_subject_from_option_then_first_heading(settings: Settings) -> None:
    assert render("Body\n\n## Second\n", settings, subject="Given").subject == "Given"
    assert render("Body\n\n## Heading [link](https://example.org)\n", settings).subject == "Heading link"


def test_no_subject_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(IssueFormatError, match="no subject"):
        render("just a paragraph", settings)


def test_invalid_yaml_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(IssueFormatError, match="not valid YAML"):
        render("---\nsubject: [unclosed\n---\n# T", settings)


def test_slug_defaults_to_the_file_name(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "2020-11-06-briefing.md"
    path.write_text("# Title\n", encoding="utf-8")
    assert render_issue_file(path, settings).slug == "2020-11-06-briefing"


def test_local_images_become_cid_parts(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "chart.png").write_bytes(tiny_png(120, 40))
    path = tmp_path / "issue.md"
    path.write_text(
        "# T\n\n![chart](img/chart.png)\n\n![gone](img/missing.png)\n\n![r](https://example.org/r.png)",
        encoding="utf-8",
    )
    issue = render_issue_file(path, settings)
    assert len(issue.images) == 1
    image = issue.images[0]
    assert (image.filename, image.content_type) == ("chart.png", "image/png")
    assert f'src="cid:{image.cid}"' in issue.html
    assert 'width="120"' in issue.html  # its own width, not stretched to the column
    assert 'src="https://example.org/r.png"' in issue.html
    assert [problem.src for problem in issue.image_problems] == ["img/missing.png"]
    assert "data:image/png;base64," in issue.web_html and "cid:" not in issue.web_html


def test_slots_are_filled_and_escaped_in_html_only(settings: Settings) -> None:
    issue = render("# T\n\nHello", settings)
    template = SlotTemplate(issue.html)
    assert {"email", "unsubscribe_url", "preferences_url", "view_url"} <= template.names
    values = dict(VALUES, unsubscribe_url="https://news.example.org/u?a=1&b=<2>", email="o'brien@example.org")
    page = template.fill(values)
    assert "https://news.example.org/u?a=1&amp;b=&lt;2&gt;" in page
    assert "o&#x27;brien@example.org" in page
    assert not any(delimiter in page for delimiter in SLOT_DELIMITERS)
    text = fill_slots(issue.text, values)
    assert "https://news.example.org/u?a=1&b=<2>" in text


def test_authored_text_cannot_open_a_slot(settings: Settings) -> None:
    sneaky = "".join(f"\ue001{name}\ue000 \ue002{name}\ue000" for name in SLOT_NAMES)
    issue = render(f"# T\n\n{sneaky}", settings)
    assert SlotTemplate(issue.html).fill(VALUES).count("reader@example.com") == SlotTemplate(
        render("# T\n\nplain", settings).html
    ).fill(VALUES).count("reader@example.com")


def test_dark_mode_and_colour_scheme(settings: Settings) -> None:
    issue = render("# T\n\nHello", settings)
    assert '<meta name="color-scheme" content="light dark">' in issue.html
    assert "prefers-color-scheme: dark" in issue.html
    assert "!important" in issue.html
    assert re.search(r"@media only screen and \(min-width: ?480px\)", issue.html)


def luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(first: str, second: str) -> float:
    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def inverted(colour: str) -> str:
    return "#" + "".join(f"{255 - int(colour[i : i + 2], 16):02x}" for i in (1, 3, 5))


@pytest.mark.parametrize("palette", ["light", "dark", "light inverted by the client"])
def test_every_text_colour_stays_readable(palette: str) -> None:
    colours = dict(theme.DARK if palette == "dark" else theme.LIGHT)
    if palette.endswith("inverted by the client"):
        colours = {name: inverted(value) for name, value in colours.items()}
    for foreground, background in theme.TEXT_PAIRS:
        # WCAG 2.1 1.4.3: at least 4.5:1 for body text.
        assert contrast(colours[foreground], colours[background]) >= 4.5, (foreground, background)


def test_web_version_has_the_content_and_no_slots(settings: Settings) -> None:
    issue = render("# Title\n\nSome **bold** text", settings)
    assert issue.web_html.startswith("<!doctype html>")
    assert "<strong>bold</strong>" in issue.web_html
    assert not any(delimiter in issue.web_html for delimiter in SLOT_DELIMITERS)
    assert 'name="viewport"' in issue.web_html


def test_source_hash_and_preheader_default(settings: Settings) -> None:
    issue = render("# T\n\nFirst paragraph is the preheader.\n\nSecond.", settings)
    assert issue.preheader == "First paragraph is the preheader."
    assert len(issue.source_hash) == 64
    assert render("# T\n\nFirst paragraph is the preheader.\n\nSecond.", settings).source_hash == issue.source_hash


def test_preheader_is_hidden_without_low_contrast_text(settings: Settings) -> None:
    html = render("---\nsubject: S\npreheader: A short teaser\n---\n\nBody", settings).html
    hidden = re.search(r'<div class="nl-preheader" style="([^"]*)">A short teaser', html)
    assert hidden and "display:none" in hidden.group(1)
    assert "color" not in hidden.group(1) and "opacity" not in hidden.group(1)


def test_body_shows_the_title_unless_the_markdown_opens_with_its_own(settings: Settings) -> None:
    titled = render("---\nsubject: Weekly 12\n---\n\n## News\n\nBody", settings)
    assert re.search(r'<h1 class="nl-title"[^>]*>Weekly 12</h1>', titled.html)
    assert '<h1 class="nl-title">Weekly 12</h1>' in titled.web_html
    own = render("---\nsubject: Weekly 12\n---\n\n# Weekly 12, the long title\n\nBody", settings)
    assert "nl-title" not in own.html.split("</style>")[-1] and "nl-title" not in own.web_html.split("</style>")[-1]
    off = render("---\nsubject: Weekly 12\nshow_title: no\n---\n\nBody", settings)
    assert '<h1 class="nl-title"' not in off.html


def test_text_part_says_the_subject_once(settings: Settings) -> None:
    own = render("# Weekly 12\n\nBody", settings)
    assert own.text.count("Weekly 12") == 1
    titled = render("---\nsubject: Weekly 12\n---\n\nBody", settings)
    assert titled.text.count("Weekly 12") == 1


def test_web_version_css_is_not_html_escaped(settings: Settings) -> None:
    page = render("# T\n\nBody", settings).web_html
    style = page.split("<style>")[1].split("</style>")[0]
    assert "&#39;" not in style and "&quot;" not in style and "'Segoe UI'" in style


def test_remote_image_of_unknown_size_is_not_enlarged(settings: Settings) -> None:
    html = render("# T\n\n![chart](https://example.org/chart.png)", settings).html
    image = re.search(r"<img [^>]*>", html)
    assert image and not re.search(r"\swidth=|(?<![-\w])width:", image.group(0))
    assert "max-width:100%" in image.group(0).replace(" ", "")


def test_code_sits_in_a_fixed_table_for_outlook(settings: Settings) -> None:
    html = render("# T\n\n```\nlet x = 1;\n```\n", settings).html
    before, after = html.split("<pre", 1)
    assert before.endswith(
        '<!--[if mso]><table role="presentation" width="100%" style="table-layout:fixed"><tr><td><![endif]-->'
    )
    assert "</pre><!--[if mso]></td></tr></table><![endif]-->" in after
    assert "break-all" not in html


def test_tables_scroll_in_their_own_box_without_the_head_styles(settings: Settings) -> None:
    html = render("# T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n", settings).html
    box = re.search(r'<div class="table-scroll" style="([^"]*)"', html)
    assert box and "overflow-x:auto" in box.group(1).replace(" ", "") and "word-break:normal" in box.group(1)
    assert "table-layout" not in html  # equal fixed columns split words; the table sizes to its content
