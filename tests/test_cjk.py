"""One definition of CJK text, shared by wrapping, links, line joins and language detection."""

from __future__ import annotations

import pytest

from newsletter.cjk import is_cjk
from newsletter.markdown import URL_STOP_RE
from newsletter.plaintext import wrap
from newsletter.render import detect_lang


@pytest.mark.parametrize("char", ["中", "㐀", "𠀀", "あ", "カ", "한", "，", "。", "「", "）", "ㄅ"])
def test_cjk_characters(char: str) -> None:
    assert is_cjk(char)


@pytest.mark.parametrize("char", ["a", "é", "1", " ", ",", "", "—"])
def test_not_cjk(char: str) -> None:
    assert not is_cjk(char)


def test_a_url_stops_at_every_cjk_character() -> None:
    assert all(URL_STOP_RE.match(char) for char in "中あ한，")


def test_wrapping_may_break_between_any_two_cjk_characters() -> None:
    assert wrap("中文한국어", 4) == ["中文", "한국", "어"]


def test_han_text_is_chinese() -> None:
    assert detect_lang("这是一份关于人工智能的简报") == "zh-CN"
