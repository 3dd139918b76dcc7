"""Per-recipient slots in a rendered issue: marked once at render time, filled by string joins."""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Mapping

SLOT_NAMES = ("email", "name", "unsubscribe_url", "preferences_url", "view_url")

# Private-use code points delimit a slot in a rendered template; render_issue removes them from the
# author's text first, so a slot can only be one the templates placed.
SLOT_OPEN_ESCAPED = "\ue001"  # the value is HTML-escaped (the HTML part)
SLOT_OPEN_RAW = "\ue002"  # the value goes in as it is (the text part)
SLOT_CLOSE = "\ue000"
# A personal field's slot (newsletter.fields) is named "=" + the field, then this and its fallback if any.
FIELD_PREFIX = "="
FIELD_FALLBACK = "\ue003"
SLOT_DELIMITERS = SLOT_OPEN_ESCAPED + SLOT_OPEN_RAW + SLOT_CLOSE + FIELD_FALLBACK

_FIELD_SLOT = f"{FIELD_PREFIX}[A-Za-z_][A-Za-z0-9_]*(?:{FIELD_FALLBACK}[^{SLOT_DELIMITERS}]*)?"
_SLOT_RE = re.compile(f"([{SLOT_OPEN_ESCAPED}{SLOT_OPEN_RAW}])({'|'.join(SLOT_NAMES)}|{_FIELD_SLOT}){SLOT_CLOSE}")
_FIELD_SLOT_RE = re.compile(f"[{SLOT_OPEN_ESCAPED}{SLOT_OPEN_RAW}]({_FIELD_SLOT}){SLOT_CLOSE}")
_STRIP_DELIMITERS = str.maketrans(dict.fromkeys(SLOT_DELIMITERS, "\ufffd"))


def html_slot(name: str) -> str:
    """The mark of a slot whose value is HTML-escaped when filled."""
    return f"{SLOT_OPEN_ESCAPED}{name}{SLOT_CLOSE}"


def text_slot(name: str) -> str:
    """The mark of a slot whose value is filled in as it is."""
    return f"{SLOT_OPEN_RAW}{name}{SLOT_CLOSE}"


def field_slot_name(field: str, fallback: str = "") -> str:
    """The slot name of a personal field: `=name`, with its fallback after FIELD_FALLBACK."""
    return FIELD_PREFIX + field + (FIELD_FALLBACK + fallback if fallback else "")


def split_slot_name(slot_name: str) -> tuple[str, str]:
    """The value key of a slot and its fallback: `=name` + fallback -> ("name", fallback); `email` -> ("email", "")."""
    if not slot_name.startswith(FIELD_PREFIX):
        return slot_name, ""
    key, _, fallback = slot_name[1:].partition(FIELD_FALLBACK)
    return key, fallback


def with_fallbacks(text: str) -> str:
    """Text with each personal-field slot replaced by its fallback: the subject as a list shows it."""
    if FIELD_PREFIX not in text:
        return text
    return _FIELD_SLOT_RE.sub(lambda match: split_slot_name(match.group(1))[1], text)


def field_names(template: str) -> frozenset[str]:
    """The personal fields (name, email, attributes) whose slots a rendered template holds."""
    return frozenset(split_slot_name(match.group(1))[0] for match in _FIELD_SLOT_RE.finditer(template))


def strip_slot_delimiters(text: str) -> str:
    """The text with any slot delimiter replaced, so authored text can never open a slot."""
    return text.translate(_STRIP_DELIMITERS)


Slot = tuple[str, bool, str]  # the value's key, whether it is HTML-escaped, the fallback for an empty value


class SlotTemplate:
    """A template split once at its slots; `fill` joins the pieces with one recipient's values."""

    __slots__ = ("fixed", "slots")

    def __init__(self, template: str) -> None:
        pieces = _SLOT_RE.split(template)
        self.fixed: tuple[str, ...] = tuple(pieces[0::3])
        self.slots: tuple[Slot, ...] = tuple(
            _slot(opener, name) for opener, name in zip(pieces[1::3], pieces[2::3], strict=True)
        )

    @property
    def names(self) -> frozenset[str]:
        """The keys of the values this template's slots take."""
        return frozenset(key for key, _, _ in self.slots)

    def fill(self, values: Mapping[str, str]) -> str:
        """The template with every slot replaced by its value (a missing value is its fallback, else empty)."""
        fixed = self.fixed
        out = [fixed[0]]
        for index, (key, escaped, fallback) in enumerate(self.slots, 1):
            value = values.get(key) or fallback
            out.append(html.escape(value) if escaped else value)
            out.append(fixed[index])
        return "".join(out)


def _slot(opener: str, name: str) -> Slot:
    key, fallback = split_slot_name(name)
    return key, opener == SLOT_OPEN_ESCAPED, fallback


def fill_slots(template: str, values: Mapping[str, str]) -> str:
    """Fill the slots of a rendered template (compile a SlotTemplate once to fill many times)."""
    return SlotTemplate(template).fill(values)


class SlotMarker:
    """ASCII marks for slots while the HTML passes through MJML and premailer, which keep them intact."""

    def __init__(self) -> None:
        # A random word cannot collide with anything the author wrote.
        self.word = f"nlslot{secrets.token_hex(8)}"
        self._re = re.compile(f"{self.word}x({'|'.join(SLOT_NAMES)})x")

    def mark(self, name: str) -> str:
        if name not in SLOT_NAMES:
            raise ValueError(f"unknown slot {name!r}; slots are {', '.join(SLOT_NAMES)}")
        return f"{self.word}x{name}x"

    def to_html_slots(self, text: str) -> str:
        """Replace the ASCII marks with the HTML slot delimiters."""
        return self._re.sub(lambda match: html_slot(match.group(1)), text)
