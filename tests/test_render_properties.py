"""Whatever an author writes renders: no exception, no crash of MRML, slots only where templates put them."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from newsletter.mime import MessageTemplate, Recipient
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.slots import SlotTemplate

PIECES = [
    "# ",
    "## ",
    "**",
    "*",
    "_",
    "~~",
    "`",
    "```\n",
    "> ",
    "- ",
    "1. ",
    "- [ ] ",
    "| a | b |\n|---|---|\n",
    "[",
    "]",
    "(",
    ")",
    "![",
    "<",
    ">",
    "&",
    "</",
    '<img src=x style="zoom:50%">',
    "<b>",
    "</p>",
    "<script>",
    "<mj-text>",
    "[TOC]",
    "[^1]",
    "[^1]: ",
    "https://example.org/路径）",
    "http://x.y",
    "\n",
    "\n\n",
    "---\n",
    "Title: x\n",
    "粗体。",
    "「任务」",
    "，",
    "\ue001email\ue000",
    "\x00",
    "\t",
    " ",
    "&#0;",
    "<!--",
    "-->",
    "<![CDATA[",
    "{{",
    "}}",
]
markdown = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=40).map("".join)
RECIPIENT = Recipient(
    "reader@example.com",
    "Reader",
    "<1.1.x@example.org>",
    "https://news.example.org/u/1",
    "mailto:unsubscribe@example.org",
    "https://news.example.org/p/1",
)


@hypothesis_settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=markdown)
def test_any_markdown_renders(settings: Settings, source: str) -> None:
    assume(not ("{{" in source and "}}" in source))  # a personal field, or a wrong one (test_fields.py)
    issue = render_issue(source, settings, subject="Subject", slug="s")
    assert issue.html.startswith("<!DOCTYPE html>\n<html")
    assert SlotTemplate(issue.html).names <= {"email", "name", "unsubscribe_url", "preferences_url", "view_url"}
    assert "<script" not in issue.html.lower()
    message = MessageTemplate.build(issue, settings).fill(RECIPIENT)
    assert message.endswith(b"--\r\n")
