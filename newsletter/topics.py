"""Topics the editor defines and readers choose: on the sign-up form, and later on the preferences page."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from newsletter.addresses import clean_name
from newsletter.errors import NewsletterError
from newsletter.models import (
    TOPIC_DESCRIPTION_MAX_CHARS,
    TOPIC_KEY_MAX_CHARS,
    Subscriber,
    SubscriberTopic,
    Topic,
)
from newsletter.subscriptions import record_event

TOPIC_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class InvalidTopic(NewsletterError):
    """A topic key that is not a short lower-case word, or a topic that does not exist."""


class TopicNotFound(InvalidTopic):
    """No topic has this key (`newsletter topics remove`, the API's /topics/KEY)."""


@dataclass(frozen=True)
class TopicView:
    """A topic as pages and commands show it."""

    key: str
    name: str
    description: str


def check_key(key: str) -> str:
    """The key as stored (trimmed, lower-cased).

    Raises:
        InvalidTopic: not a word of letters, digits, `-` and `_` of at most 64 characters.
    """
    cleaned = key.strip().lower()
    if not TOPIC_KEY_RE.match(cleaned) or len(cleaned) > TOPIC_KEY_MAX_CHARS:
        raise InvalidTopic(
            f"topic key {key[:80]!r} must be lower-case letters, digits, - and _ (at most {TOPIC_KEY_MAX_CHARS})"
        )
    return cleaned


def define_topic(
    session: Session, key: str, name: str, description: str = "", *, source: str = "cli", actor: str | None = None
) -> TopicView:
    """Create a topic, or rename and describe the one with this key; the log says who."""
    key = check_key(key)
    shown = clean_name(name) or key
    described = clean_name(description, TOPIC_DESCRIPTION_MAX_CHARS) or ""
    topic = session.scalar(select(Topic).where(Topic.key == key))
    if topic is None:
        topic = Topic(key=key, name=shown, description=described)
        session.add(topic)
    else:
        topic.name, topic.description = shown, described
    session.flush()
    payload = {"key": key, "name": shown}
    record_event(session, None, "topic_defined", source, reason=f"topic {key} defined", payload=payload, actor=actor)
    return TopicView(topic.key, topic.name, topic.description)


def remove_topic(session: Session, key: str, *, source: str = "cli", actor: str | None = None) -> None:
    """Delete a topic and every reader's choice of it; the log says who.

    Raises:
        TopicNotFound: there is no such topic.
        InvalidTopic: the key is not a topic key at all.
    """
    topic = _topic(session, key)
    payload = {"key": topic.key, "name": topic.name}
    session.delete(topic)
    session.flush()
    record_event(
        session, None, "topic_removed", source, reason=f"topic {topic.key} removed", payload=payload, actor=actor
    )


def topic_counts(session: Session) -> list[tuple[TopicView, int]]:
    """Every topic, in the order they were defined, with how many readers chose it."""
    chosen = (
        select(SubscriberTopic.topic_id, func.count().label("readers")).group_by(SubscriberTopic.topic_id).subquery()
    )
    query = (
        select(Topic, func.coalesce(chosen.c.readers, 0))
        .outerjoin(chosen, chosen.c.topic_id == Topic.id)
        .order_by(Topic.id)
    )
    return [(TopicView(topic.key, topic.name, topic.description), count) for topic, count in session.execute(query)]


def list_topics(session: Session) -> list[TopicView]:
    """Every topic, in the order they were defined."""
    return [
        TopicView(topic.key, topic.name, topic.description)
        for topic in session.scalars(select(Topic).order_by(Topic.id))
    ]


def topic_ids(session: Session, keys: Iterable[str]) -> list[int]:
    """The ids of the topics named by `keys`.

    Raises:
        InvalidTopic: a key names no topic.
    """
    wanted = {check_key(key) for key in keys}
    if not wanted:
        return []
    rows = session.execute(select(Topic.key, Topic.id).where(Topic.key.in_(wanted)))
    found = {key: topic_id for key, topic_id in rows}
    missing = wanted - set(found)
    if missing:
        raise InvalidTopic(f"no topic {sorted(missing)[0]!r}; `newsletter topics list` shows them")
    return sorted(found.values())


def chosen_topics(session: Session, subscriber_id: int) -> list[str]:
    """The keys of the topics a reader chose."""
    query = (
        select(Topic.key)
        .join(SubscriberTopic, SubscriberTopic.topic_id == Topic.id)
        .where(SubscriberTopic.subscriber_id == subscriber_id)
        .order_by(Topic.id)
    )
    return list(session.scalars(query))


def choose_topics(session: Session, subscriber: Subscriber, keys: Iterable[str]) -> list[str]:
    """Make the reader's topics exactly `keys` (unknown keys, as a tampered form sends, are ignored)."""
    choose_topics_of(session, subscriber.id, keys)
    return chosen_topics(session, subscriber.id)


def choose_topics_of(session: Session, subscriber_id: int, keys: Iterable[str]) -> None:
    """choose_topics for a subscriber known by id (one not loaded, as a new sign-up)."""
    existing = {key for key in (key.strip().lower() for key in keys) if TOPIC_KEY_RE.match(key)}
    ids = list(session.scalars(select(Topic.id).where(Topic.key.in_(existing)))) if existing else []
    session.execute(delete(SubscriberTopic).where(SubscriberTopic.subscriber_id == subscriber_id))
    session.add_all(SubscriberTopic(subscriber_id=subscriber_id, topic_id=topic_id) for topic_id in ids)
    session.flush()


def set_topics(session: Session, subscriber: Subscriber, keys: Iterable[str]) -> list[str]:
    """Make the reader's topics exactly `keys`, as the editor asks (the desk, the API): an unknown key is an error.

    Raises:
        InvalidTopic: a key names no topic.
    """
    topic_ids(session, keys)
    return choose_topics(session, subscriber, keys)


def _topic(session: Session, key: str) -> Topic:
    topic = session.scalar(select(Topic).where(Topic.key == check_key(key)))
    if topic is None:
        raise TopicNotFound(f"no topic {key[:80]!r}; `newsletter topics list` shows them")
    return topic
