"""What counts as CJK text: the one definition that wrapping, links, line joins and language share."""

from __future__ import annotations

import re

# Unicode ranges, written as the inside of a regular-expression character class.
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"  # ideographs, extensions and compatibility
KANA = "\u3040-\u30ff\u31f0-\u31ff"  # hiragana, katakana and its phonetic extensions
HANGUL = "\u1100-\u11ff\uac00-\ud7af"  # jamo and syllables
# CJK symbols and punctuation (、。「」), bopomofo, compatibility jamo, kanbun, strokes, enclosed and
# compatibility forms, and the full- and half-width forms (，）！).
CJK_MARKS = "\u3000-\u303f\u3100-\u31ef\u3200-\u33ff\uff00-\uffef"
CJK = HAN + KANA + HANGUL + CJK_MARKS

CJK_RE = re.compile(f"[{CJK}]")
HAN_RE = re.compile(f"[{HAN}]")
KANA_RE = re.compile(f"[{KANA}]")
HANGUL_RE = re.compile(f"[{HANGUL}]")


def is_cjk(char: str) -> bool:
    """True for one CJK character (ideograph, kana, hangul, CJK or full-width punctuation)."""
    return bool(char) and CJK_RE.match(char) is not None
