"""Personal fields an editor writes in an issue: `{{ name }}`, `{{ email }}`, `{{ city }}` (an attribute), and
`{{ name | default("朋友") }}` with a fallback, the syntax of Jinja, Liquid and listmonk.

They are found once, at render time, and become per-recipient slots (newsletter.slots): filling them is
a string operation, never a template engine per recipient. While the issue passes through Markdown,
MJML and premailer, each field is an ASCII word those leave alone; then it becomes a slot mark that
carries the field's name and fallback, so a stored issue needs nothing else to be filled on any worker.
Fields inside code (a `code span` or a fenced block) are text, as a newsletter about Jinja needs.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from newsletter.errors import IssueFormatError
from newsletter.slots import SLOT_NAMES

if TYPE_CHECKING:  # rendering (preview) needs no database
    from sqlalchemy.orm import Session

BUILT_IN = ("name", "email")  # the subscriber's own columns; any other field is an attribute
RESERVED = frozenset(SLOT_NAMES) - set(BUILT_IN)  # the links every issue carries are no personal field
FIELD_VALUE_MAX_CHARS = 1_000  # an attribute imported from a spreadsheet can be a page long
FIELD_NAME_MAX_CHARS = 64
_FIELD_RE = re.compile(r"\{\{(.*?)\}\}")
_BODY_RE = re.compile(
    r"""^\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*"""
    r"""(?:\|\s*default\s*\(\s*(?:"(?P<double>[^"\\]*)"|'(?P<single>[^'\\]*)')\s*\)\s*)?$"""
)
_FENCE_RE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_CODE_SPAN_RE = re.compile(r"(`+)(.+?)\1")
# Right-to-left letters (Arabic, Hebrew ...): a value holding them is isolated (Unicode UAX #9, FSI ... PDI)
# so it cannot reorder the punctuation around it ("Hello {{ name }}!").
_RTL_CLASSES = frozenset({"R", "AL"})
FIRST_STRONG_ISOLATE = "\u2068"
POP_DIRECTIONAL_ISOLATE = "\u2069"


class UnknownField(IssueFormatError):
    """A personal field that names neither name, email nor an attribute any subscriber has."""


@dataclass(frozen=True)
class Field:
    """One personal field as written: its name, its fallback, and the line it is on (1-based)."""

    name: str
    fallback: str
    line: int


@dataclass(frozen=True)
class FieldTable:
    """The fields of one issue and the ASCII words that stand for them while it renders."""

    word: str
    fields: tuple[Field, ...]

    def placeholder(self, index: int) -> str:
        return f"{self.word}x{index}x"

    def replace(self, text: str, mark: Callable[[Field], str]) -> str:
        """`text` with each placeholder replaced by what `mark` makes of its field."""
        if not self.fields or self.word not in text:
            return text
        return re.sub(f"{self.word}x(\\d+)x", lambda match: mark(self.fields[int(match.group(1))]), text)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(field.name for field in self.fields)


def extract(source: str, first_line: int = 1) -> tuple[str, FieldTable]:
    """The source with each field replaced by a placeholder, and the table of the fields.

    Raises:
        IssueFormatError: a field's syntax is wrong (the message names the line).
    """
    table = FieldTable(f"nlfield{secrets.token_hex(6)}", ())
    fields: list[Field] = []
    lines = source.split("\n")
    fence: str | None = None
    for number, line in enumerate(lines):
        opened = _FENCE_RE.match(line)
        if fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            continue
        if opened:
            fence = opened.group(1)
            continue
        if "{{" not in line and "}}" not in line:
            continue
        lines[number] = _replace_in_line(line, number + first_line, table, fields)
    return "\n".join(lines), FieldTable(table.word, tuple(fields))


def _replace_in_line(line: str, line_number: int, table: FieldTable, fields: list[Field]) -> str:
    pieces = []
    position = 0
    for span in _CODE_SPAN_RE.finditer(line):  # code spans keep their braces as text
        pieces.append(_fields_in(line[position : span.start()], line_number, table, fields))
        pieces.append(span.group(0))
        position = span.end()
    pieces.append(_fields_in(line[position:], line_number, table, fields))
    return "".join(pieces)


def _fields_in(text: str, line_number: int, table: FieldTable, fields: list[Field]) -> str:
    def one(match: re.Match[str]) -> str:
        fields.append(parse(match.group(1), line_number))
        return table.placeholder(len(fields) - 1)

    # A lone `{{` or `}}` is text: only a pair on one line is a field.
    return _FIELD_RE.sub(one, text)


def parse(body: str, line_number: int) -> Field:
    """The field inside `{{ ... }}`.

    Raises:
        IssueFormatError: it is not `name` or `name | default("fallback")`.
    """
    match = _BODY_RE.match(body)
    if match is None or len(match.group("name")) > FIELD_NAME_MAX_CHARS or match.group("name") in RESERVED:
        shown = body.strip()[:60]
        raise IssueFormatError(
            f"line {line_number}: {{{{ {shown} }}}} is not a personal field; write {{{{ name }}}} or "
            f'{{{{ name | default("friend") }}}}'
        )
    fallback = match.group("double") if match.group("double") is not None else match.group("single") or ""
    return Field(match.group("name"), fallback, line_number)


def require_known(session: Session, table: FieldTable | Iterable[Field]) -> None:
    """Check that every field names name, email or an attribute at least one subscriber has.

    Raises:
        UnknownField: one does not (the message names its line).
    """
    from sqlalchemy import exists, select

    from newsletter.models import Subscriber

    fields = table.fields if isinstance(table, FieldTable) else tuple(table)
    checked: dict[str, bool] = {}
    for field in fields:
        if field.name in BUILT_IN:
            continue
        if field.name not in checked:
            has = Subscriber.attributes[field.name].as_string().is_not(None)
            checked[field.name] = bool(session.scalar(select(exists().where(has))))
        if not checked[field.name]:
            raise UnknownField(
                f"line {field.line}: {{{{ {field.name} }}}} is no personal field: no subscriber has an attribute "
                f"{field.name!r} (fields are name, email and the attributes of the list)"
            )


def shown_value(value: object) -> str:
    """A field's value as it goes into a message: text, at most FIELD_VALUE_MAX_CHARS, RTL isolated."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    if len(text) > FIELD_VALUE_MAX_CHARS:
        text = text[:FIELD_VALUE_MAX_CHARS]
    if not text.isascii() and any(unicodedata.bidirectional(char) in _RTL_CLASSES for char in text):
        return FIRST_STRONG_ISOLATE + text + POP_DIRECTIONAL_ISOLATE
    return text
