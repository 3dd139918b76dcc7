"""Who an issue goes to: readers with any of some tags, without any of others, who chose some topics.

A segment only adds conditions to the one `INSERT ... SELECT` that creates an issue's deliveries
(ledger.create_deliveries): EXISTS subqueries on the tag and topic tables, no list passes through Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, true

from newsletter.errors import NewsletterError
from newsletter.models import Subscriber, SubscriberTag, SubscriberTopic, Topic
from newsletter.tags import clean_tag
from newsletter.topics import check_key

SEGMENT_KEY = "segment"  # the front matter key: `segment: ai, ml, -old, topic:weekly`
TOPIC_PREFIX = "topic:"
EXCLUDE_PREFIX = "-"


class InvalidSegment(NewsletterError):
    """A segment written in a way that cannot be read."""


@dataclass(frozen=True)
class Segment:
    """Readers with any of `tags` (when given), with none of `exclude_tags`, who chose any of `topics`.

    A reader who never chose a topic gets every topic: they did not narrow what they receive.
    """

    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()

    @property
    def everyone(self) -> bool:
        return not (self.tags or self.exclude_tags or self.topics)

    def as_json(self) -> dict[str, Any] | None:
        """The segment as stored on the issue, None for every reader."""
        if self.everyone:
            return None
        return {"tags": list(self.tags), "exclude_tags": list(self.exclude_tags), "topics": list(self.topics)}

    def describe(self) -> str:
        """`tags ai or ml, not old, topics weekly`; `every active subscriber` when it is no segment."""
        parts = []
        if self.tags:
            parts.append("tagged " + " or ".join(self.tags))
        if self.exclude_tags:
            parts.append("not tagged " + " or ".join(self.exclude_tags))
        if self.topics:
            parts.append("topic " + " or ".join(self.topics))
        return ", ".join(parts) if parts else "every active subscriber"


def from_json(data: Mapping[str, Any] | None) -> Segment:
    """The segment stored on an issue."""
    if not data:
        return Segment()
    return Segment(
        tuple(data.get("tags") or ()), tuple(data.get("exclude_tags") or ()), tuple(data.get("topics") or ())
    )


def make_segment(tags: Iterable[str] = (), exclude_tags: Iterable[str] = (), topics: Iterable[str] = ()) -> Segment:
    """A segment from command-line options, each tag and topic key checked.

    Raises:
        InvalidTag, InvalidTopic: a tag or topic key cannot be one.
    """
    return Segment(
        tuple(dict.fromkeys(clean_tag(tag) for tag in tags)),
        tuple(dict.fromkeys(clean_tag(tag) for tag in exclude_tags)),
        tuple(dict.fromkeys(check_key(topic) for topic in topics)),
    )


def parse_segment(text: str) -> Segment:
    """The front matter's `segment:` line: comma-separated tags, `-tag` to leave out, `topic:key` for a topic.

    Raises:
        InvalidSegment: an item is empty or not a valid tag or topic.
    """
    tags, excluded, topics = [], [], []
    for item in (piece.strip() for piece in text.split(",")):
        if not item:
            raise InvalidSegment(f"segment {text!r} has an empty item; write `segment: ai, -old, topic:weekly`")
        if item.lower().startswith(TOPIC_PREFIX):
            topics.append(item[len(TOPIC_PREFIX) :])
        elif item.startswith(EXCLUDE_PREFIX):
            excluded.append(item[len(EXCLUDE_PREFIX) :])
        else:
            tags.append(item)
    try:
        return make_segment(tags, excluded, topics)
    except NewsletterError as error:
        raise InvalidSegment(f"segment {text!r}: {error}") from None


def segment_filter(segment: Segment) -> ColumnElement[bool]:
    """The condition on `Subscriber` rows that selects the segment (true for every reader)."""
    conditions: list[ColumnElement[bool]] = []
    if segment.tags:
        conditions.append(_has_tag(segment.tags))
    if segment.exclude_tags:
        conditions.append(~_has_tag(segment.exclude_tags))
    if segment.topics:
        chose = exists().where(SubscriberTopic.subscriber_id == Subscriber.id)
        chose_these = exists().where(
            SubscriberTopic.subscriber_id == Subscriber.id,
            SubscriberTopic.topic_id == Topic.id,
            Topic.key.in_(segment.topics),
        )
        conditions.append(~chose | chose_these)
    return and_(*conditions) if conditions else true()


def _has_tag(tags: tuple[str, ...]) -> ColumnElement[bool]:
    return exists().where(SubscriberTag.subscriber_id == Subscriber.id, SubscriberTag.tag.in_(tags))


def chosen_segment(
    meta: Mapping[str, str], tags: Iterable[str] = (), exclude_tags: Iterable[str] = (), topics: Iterable[str] = ()
) -> Segment:
    """The segment of a send: the command's options when it gives any, else the issue's `segment:` line.

    Raises:
        InvalidSegment, InvalidTag, InvalidTopic: the segment cannot be read.
    """
    tags, exclude_tags, topics = tuple(tags), tuple(exclude_tags), tuple(topics)
    if tags or exclude_tags or topics:
        return make_segment(tags, exclude_tags, topics)
    written = meta.get(SEGMENT_KEY, "").strip()
    return parse_segment(written) if written else Segment()
