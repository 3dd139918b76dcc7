"""The text/plain part: written from the token tree, wrapped at 76 columns with CJK counted double."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.markdown import parse_markdown
from newsletter.plaintext import TEXT_WIDTH_COLUMNS, display_width, markdown_to_text, wrap
from tests.conftest import SAMPLE_FILES

URL_RE = re.compile(r"https?://\S+")


def text_of(source: str) -> str:
    return markdown_to_text(parse_markdown(source))


def test_links_become_numbered_references_after_their_section() -> None:
    text = text_of(
        "# One\n\nRead [the paper](https://example.org/paper) and [code](https://example.org/code).\n\n"
        "# Two\n\nAnd [more](https://example.org/more)."
    )
    lines = text.rstrip("\n").split("\n")
    assert "Read the paper [1] and code [2]." in lines
    assert lines.index("[1] https://example.org/paper") < lines.index("Two")
    assert lines.index("[2] https://example.org/code") < lines.index("Two")
    assert lines[-1] == "[3] https://example.org/more"


def test_bare_urls_stay_as_they_are() -> None:
    text = text_of("See https://example.org/a for details")
    assert "See https://example.org/a for details" in text
    assert "[1]" not in text


def test_headings_lists_quotes_and_images() -> None:
    text = text_of("# Title\n\n## Part\n\n- one\n- two\n\n1. first\n2. second\n\n> quoted\n\n![a chart](c.png)")
    assert "Title\n=====" in text
    assert "Part\n----" in text
    assert "- one\n- two" in text
    assert "1. first\n2. second" in text
    assert "> quoted" in text
    assert "[a chart]" in text


def test_cjk_counts_double_and_urls_are_never_broken() -> None:
    url = "https://example.org/" + "x" * 100
    lines = wrap("中文" * 60 + " " + url + " " + "汉字，标点。" * 20)
    assert url in lines
    for line in lines:
        if line != url:
            assert display_width(line) <= TEXT_WIDTH_COLUMNS, line


def test_closing_punctuation_never_starts_a_line() -> None:
    for line in wrap("这是一个很长的句子，" * 30)[1:]:
        assert line[0] not in "，。、）"


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.stem)
def test_samples_wrap_within_76_columns(path: Path) -> None:
    text = markdown_to_text(parse_markdown(path.read_text(encoding="utf-8")))
    assert "**" not in text and "[TOC]" not in text and "](" not in text
    for line in text.split("\n"):
        without_urls = URL_RE.sub("", line)
        if without_urls.strip() in ("", ">") or URL_RE.search(line) and display_width(line) > TEXT_WIDTH_COLUMNS:
            # a line may run long only because a URL cannot be broken: then the URL stands alone
            assert len(URL_RE.findall(line)) <= 1
            continue
        assert display_width(line) <= TEXT_WIDTH_COLUMNS, line


@given(st.text(max_size=300))
def test_wrap_keeps_every_word(text: str) -> None:
    lines = wrap(text.replace("\r", " "), 40)
    assert "".join("".join(lines).split()) == "".join(text.replace("\r", " ").split())


def test_tables_are_aligned_columns_with_cjk_counted_double() -> None:
    text = text_of("| 模型 | Score |\n|---|--:|\n| 通义千问 | 92.5 |\n| GPT | 9 |\n")
    lines = text.rstrip("\n").split("\n")
    assert lines == [
        "模型     | Score",
        "---------+------",
        "通义千问 |  92.5",
        "GPT      |     9",
    ]
    assert len({display_width(line.split("|")[0]) for line in lines if "|" in line}) == 1


def test_a_line_break_in_a_cell_stays_in_its_row() -> None:
    lines = text_of("| a | b |\n|---|---|\n| one<br>two | x |\n| y | z |\n").rstrip("\n").split("\n")
    assert lines[2:] == ["one | x", "two |", "y   | z"]


def test_a_wide_table_wraps_its_widest_column() -> None:
    notes = "words " * 30
    lines = text_of(f"| name | notes |\n|---|---|\n| RandomizedSipHasher | {notes} |\n").rstrip("\n").split("\n")
    assert all(display_width(line) <= TEXT_WIDTH_COLUMNS for line in lines)
    assert lines[2].startswith("RandomizedSipHasher | words")  # the long word is never split
    assert all(line.startswith(" " * 19 + " | words") for line in lines[3:])
