"""Front matter at the top of an issue: a YAML `---` block, or `Key: value` lines as Pelican writes them."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import yaml

from newsletter.errors import IssueFormatError

# Pelican's header lines are recognised only when the first one names a key an issue uses, so a
# document that happens to open with "Note: ..." stays Markdown.
KNOWN_KEYS = frozenset(
    {
        "title",
        "subject",
        "preheader",
        "summary",
        "date",
        "slug",
        "lang",
        "author",
        "authors",
        "tags",
        "category",
        "modified",
        "status",
        "description",
    }
)
_PELICAN_LINE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)\s*:\s*(.*)$")
_YAML_FENCE_RE = re.compile(r"^---[ \t]*$")
_YAML_END_RE = re.compile(r"^(---|\.\.\.)[ \t]*$")


@dataclass(frozen=True)
class FrontMatter:
    """The metadata of an issue and the Markdown after it."""

    meta: dict[str, str] = field(default_factory=dict)
    body: str = ""
    body_line: int = 0  # 0-based line of the source where the body starts


def split_front_matter(source: str) -> FrontMatter:
    """Separate the front matter (keys lower-cased, values as text) from the Markdown body.

    Raises:
        IssueFormatError: the YAML block is not valid YAML or not a mapping.
    """
    lines = source.split("\n")
    if lines and _YAML_FENCE_RE.match(lines[0]):
        for end in range(1, len(lines)):
            if _YAML_END_RE.match(lines[end]):
                meta = _read_yaml("\n".join(lines[1:end]))
                return FrontMatter(meta, "\n".join(lines[end + 1 :]), end + 1)
        # An opening `---` without a closing one is a thematic break, not front matter.
    return _split_pelican(lines)


def _read_yaml(text: str) -> dict[str, str]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark is not None else ""
        raise IssueFormatError(f"the front matter is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise IssueFormatError("the front matter must be `key: value` lines")
    return {str(key).strip().lower(): _as_text(value) for key, value in data.items()}


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return ", ".join(_as_text(item) for item in value)
    return str(value).strip()


def _split_pelican(lines: list[str]) -> FrontMatter:
    first = _PELICAN_LINE_RE.match(lines[0]) if lines else None
    if first is None or first.group(1).lower() not in KNOWN_KEYS:
        return FrontMatter({}, "\n".join(lines), 0)
    meta: dict[str, str] = {}
    index = 0
    while index < len(lines) and lines[index].strip():
        match = _PELICAN_LINE_RE.match(lines[index])
        if match is None:
            # Not a header block after all: leave the whole text to Markdown.
            return FrontMatter({}, "\n".join(lines), 0)
        meta[match.group(1).lower()] = match.group(2).strip()
        index += 1
    return FrontMatter(meta, "\n".join(lines[index:]), index)
