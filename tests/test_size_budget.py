"""The email's HTML stays lean: inline styles at most a quarter of it, and under Gmail's clipping size."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from newsletter.mime import MessageTemplate
from newsletter.preflight import GMAIL_CLIP_BYTES, html_part_bytes, inline_style_share
from newsletter.preview import sample_recipient
from newsletter.render import render_issue_file
from newsletter.settings import Settings
from tests.conftest import LINK_HEAVY_ISSUE, SAMPLE_FILES

MAX_INLINE_STYLE_SHARE = 0.25
ISSUES = [*SAMPLE_FILES, LINK_HEAVY_ISSUE]


@pytest.mark.parametrize("path", ISSUES, ids=lambda path: path.stem)
def test_inline_styles_are_at_most_a_quarter_of_the_html(path: Path, settings: Settings) -> None:
    assert inline_style_share(render_issue_file(path, settings).html) <= MAX_INLINE_STYLE_SHARE


@pytest.mark.parametrize("path", ISSUES, ids=lambda path: path.stem)
def test_encoded_html_part_is_under_gmails_clip(path: Path, settings: Settings) -> None:
    issue = render_issue_file(path, settings)
    message = MessageTemplate.build(issue, settings).fill(sample_recipient(settings))
    assert html_part_bytes(message) < GMAIL_CLIP_BYTES


def test_link_heavy_issue_is_what_it_says(settings: Settings) -> None:
    issue = render_issue_file(LINK_HEAVY_ISSUE, settings)
    assert len(issue.links) >= 300
    assert issue.html.count("<table") - issue.html.count('role="presentation"') == 5
    assert issue.html.count("<pre") == 3


def test_anchors_and_paragraphs_carry_no_style(settings: Settings) -> None:
    html = render_issue_file(LINK_HEAVY_ISSUE, settings).html
    assert re.findall(r'<a name="[^"]*"[^>]*style=', html) == []
    assert re.findall(r"<a href=\"https://blog[^>]*style=", html) == []  # the link colour lives in the head
    assert "display:block; margin" not in html and "display:block;margin" not in html
    assert "overflow-wrap" not in html
    assert "mso-table-lspace" not in re.sub(r"<style.*?</style>", "", html, flags=re.DOTALL)


def test_html_part_size_is_read_from_the_message(settings: Settings) -> None:
    issue = render_issue_file(SAMPLE_FILES[0], settings)
    message = MessageTemplate.build(issue, settings).fill(sample_recipient(settings))
    assert len(issue.html.encode()) < html_part_bytes(message) < len(message)
