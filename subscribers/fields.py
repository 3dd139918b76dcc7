"""What the desk's forms and the API read from their input: searches, tags, languages, plain text fields."""

from __future__ import annotations

import datetime as dt

from newsletter import directory
from newsletter import language as languages
from newsletter.errors import NewsletterError
from newsletter.models import TAG_MAX_CHARS, SubscriberStatus
from newsletter.tags import InvalidTag, split_tags

MAX_TAGS = 50


class BadInput(NewsletterError):
    """A form field or an API body field that cannot be taken as it is."""


def search_of(params: dict[str, str]) -> directory.Search:
    """The search a query string asks for; unknown or malformed values are left out, never an error page."""
    status = params.get("status", "")
    sort = params.get("sort", "")
    return directory.Search(
        query=params.get("q", "")[: directory.MAX_QUERY_CHARS],
        status=SubscriberStatus(status) if status in set(SubscriberStatus) else None,
        tag=params.get("tag", "").strip()[:TAG_MAX_CHARS],
        joined_from=_date(params.get("from", "")),
        joined_until=_date(params.get("until", "")),
        sort=directory.Sort(sort) if sort in set(directory.Sort) else directory.Sort.NEWEST,
        limit=_int(params.get("limit", ""), directory.DEFAULT_PAGE_ROWS),
    )


def _date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _int(value: str, default: int) -> int:
    return int(value) if value.isdigit() and len(value) < 6 else default


def tags_of_text(text: str) -> list[str]:
    try:
        tags = split_tags(text)
    except InvalidTag as error:
        raise BadInput(str(error)) from None
    if len(tags) > MAX_TAGS:
        raise BadInput(f"a subscriber has at most {MAX_TAGS} tags")
    return tags


def language_of(text: str) -> str:
    if not text:
        return ""
    found = languages.supported(text)
    if found is None:
        raise BadInput(f"there is no translation for {text[:40]!r}: choose one of {', '.join(languages.available())}")
    return found


def refuse_line_breaks(*values: str) -> None:
    if any(char in value for value in values for char in "\r\n\x00"):
        raise BadInput("a name or tag cannot hold a line break")
