"""The list searched, filtered and paged (keyset: as fast on the last page as on the first), and a reader's record."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, literal, or_, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from newsletter.addresses import clean_name
from newsletter.errors import NewsletterError, SubscriberNotFound
from newsletter.models import (
    TAG_MAX_CHARS,
    Delivery,
    Event,
    Issue,
    Subscriber,
    SubscriberStatus,
    SubscriberTag,
    UtcDateTime,
)
from newsletter.subscriptions import record_event
from newsletter.tags import add_tags, tags_of
from newsletter.topics import TopicView, chosen_topics, list_topics, set_topics

DEFAULT_PAGE_ROWS = 50
MAX_PAGE_ROWS = 500
MAX_QUERY_CHARS = 320
HISTORY_ROWS = 200
SPARSE_PREFIX_CHARS = 3


class Sort(StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"
    EMAIL = "email"


class BadCursor(NewsletterError):
    """A page cursor that this list did not hand out (edited, or from another sort order)."""


@dataclass(frozen=True)
class Search:
    """What the editor looks for; every field is optional."""

    query: str = ""  # the start of the address or of the name; "@example.org" for every address at a domain
    status: SubscriberStatus | None = None
    tag: str = ""
    joined_from: dt.date | None = None
    joined_until: dt.date | None = None  # inclusive
    sort: Sort = Sort.NEWEST
    limit: int = DEFAULT_PAGE_ROWS


@dataclass(frozen=True)
class Row:
    id: int
    email: str
    name: str | None
    status: str
    source: str
    created_at: dt.datetime


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    next_cursor: str | None  # None on the last page


def search(session: Session, wanted: Search, cursor: str | None = None) -> Page:
    """One page of subscribers matching `wanted`, after `cursor` (a `next_cursor` of the page before).

    Raises:
        BadCursor: the cursor was not made by this function for this sort order.
    """
    limit = max(1, min(wanted.limit, MAX_PAGE_ROWS))
    query = select(
        Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.status, Subscriber.source, Subscriber.created_at
    ).where(*_conditions(wanted))
    key, last_id = _read_cursor(cursor, wanted.sort) if cursor else ("", 0)
    by_date = wanted.joined_from is not None or wanted.joined_until is not None
    if wanted.sort == Sort.EMAIL:
        # The address key is unique: it alone orders the list, and its index serves `key > last` directly.
        query = query.order_by(Subscriber.email_key)
        if cursor:
            query = query.where(Subscriber.email_key > key)
    elif by_date:
        # A date range is found through the sign-up time's index, and paged along it.
        newest = wanted.sort == Sort.NEWEST
        position = tuple_(Subscriber.created_at, Subscriber.id)
        query = (
            query.order_by(Subscriber.created_at.desc(), Subscriber.id.desc())
            if newest
            else query.order_by(Subscriber.created_at, Subscriber.id)
        )
        if cursor:
            after = tuple_(literal(_time_of(key), UtcDateTime()), literal(last_id))
            query = query.where(position < after if newest else position > after)
    elif wanted.sort == Sort.OLDEST:
        query = query.order_by(_id_order(wanted))
        if cursor:
            query = query.where(Subscriber.id > last_id)
    else:
        query = query.order_by(_id_order(wanted).desc())
        if cursor:
            query = query.where(Subscriber.id < last_id)
    found = [Row(*row) for row in session.execute(query.limit(limit + 1))]
    rows = found[:limit]
    next_cursor = None
    if len(found) > limit:
        last = rows[-1]
        if wanted.sort == Sort.EMAIL:
            key = last.email.strip().lower()
        else:
            key = last.created_at.isoformat() if by_date else ""
        next_cursor = _make_cursor(wanted.sort, key, last.id)
    return Page(rows, next_cursor)


def _id_order(wanted: Search) -> ColumnElement[int] | InstrumentedAttribute[int]:
    """The id to order by. A prefix of SPARSE_PREFIX_CHARS or more matches few rows, spread over the whole list:
    ordering by `id + 0` keeps the database from walking the primary key for them (a full scan on a million
    rows) and makes it take the few matches from the prefix indexes, then sort them."""
    if len(wanted.query.strip().lstrip("@")) >= SPARSE_PREFIX_CHARS and not wanted.query.startswith("@"):
        return Subscriber.id + 0
    return Subscriber.id


def _time_of(key: str) -> dt.datetime:
    try:
        at = dt.datetime.fromisoformat(key)
    except ValueError:
        raise BadCursor("this page link belongs to another search: start again from the first page") from None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def _conditions(wanted: Search) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    query = wanted.query.strip()[:MAX_QUERY_CHARS]
    if query.startswith("@"):  # a domain: every address at it (and its subdomains)
        domain = _escape_like(query[1:].lower())
        conditions.append(
            or_(
                Subscriber.email_key.like(f"%@{domain}", escape="\\"),
                Subscriber.email_key.like(f"%.{domain}", escape="\\"),
            )
        )
    elif query:
        # Prefixes only, each served by an index (text_pattern_ops on PostgreSQL): the start of the address,
        # or of the name as typed or capitalized.
        matches = [Subscriber.email_key.like(f"{_escape_like(query.lower())}%", escape="\\")]
        if "@" not in query:
            for form in dict.fromkeys((query, query[:1].upper() + query[1:])):
                matches.append(Subscriber.name.like(f"{_escape_like(form)}%", escape="\\"))
        conditions.append(or_(*matches))
    if wanted.status is not None:
        conditions.append(Subscriber.status == wanted.status)
    if wanted.tag:
        conditions.append(
            exists().where(
                SubscriberTag.subscriber_id == Subscriber.id, SubscriberTag.tag == wanted.tag[:TAG_MAX_CHARS]
            )
        )
    if wanted.joined_from is not None:
        conditions.append(Subscriber.created_at >= _start_of(wanted.joined_from))
    if wanted.joined_until is not None:
        conditions.append(Subscriber.created_at < _start_of(wanted.joined_until + dt.timedelta(days=1)))
    return conditions


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _start_of(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def cursor_at(sort: Sort, last_id: int, email_key: str = "") -> str:
    """The cursor of the page that starts after the row `last_id` (with `email_key` when sorted by address)."""
    return _make_cursor(sort, email_key if sort == Sort.EMAIL else "", last_id)


def _make_cursor(sort: Sort, key: str, last_id: int) -> str:
    data = json.dumps([str(sort), key, last_id], ensure_ascii=False, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _read_cursor(cursor: str, sort: Sort) -> tuple[str, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise BadCursor("this page link is damaged: start again from the first page") from None
    valid = isinstance(data, list) and len(data) == 3 and isinstance(data[1], str) and type(data[2]) is int
    if not valid or data[0] != sort:
        raise BadCursor("this page link belongs to another order of the list: start again from the first page")
    return data[1], data[2]


@dataclass(frozen=True)
class HistoryLine:
    at: dt.datetime
    kind: str
    old_status: str | None
    new_status: str | None
    source: str
    reason: str | None
    actor: str | None
    issue_slug: str | None


@dataclass(frozen=True)
class Received:
    slug: str
    subject: str
    status: str
    attempts: int
    sent_at: dt.datetime | None
    reply: str


@dataclass(frozen=True)
class Record:
    """A reader's page: who they are, what happened to them, what they were sent."""

    subscriber: Subscriber
    tags: list[str]
    history: list[HistoryLine]
    received: list[Received] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)  # the keys the reader chose
    offered: list[TopicView] = field(default_factory=list)  # every topic the editor defined


def reader(session: Session, subscriber_id: int) -> Record:
    """Everything the desk shows about one subscriber.

    Raises:
        SubscriberNotFound: no subscriber has this id.
    """
    subscriber = get_by_id(session, subscriber_id)
    history = [
        HistoryLine(*row)
        for row in session.execute(
            select(
                Event.created_at,
                Event.kind,
                Event.old_status,
                Event.new_status,
                Event.source,
                Event.reason,
                Event.actor,
                Issue.slug,
            )
            .outerjoin(Issue, Issue.id == Event.issue_id)
            .where(Event.subscriber_id == subscriber_id)
            .order_by(Event.created_at.desc(), Event.id.desc())
            .limit(HISTORY_ROWS)
        )
    ]
    received = [
        Received(slug, subject, status, attempts, sent_at, reply or "")
        for slug, subject, status, attempts, sent_at, reply in session.execute(
            select(Issue.slug, Issue.subject, Delivery.status, Delivery.attempts, Delivery.sent_at, Delivery.last_reply)
            .join(Issue, Issue.id == Delivery.issue_id)
            .where(Delivery.subscriber_id == subscriber_id)
            .order_by(Delivery.id.desc())
            .limit(HISTORY_ROWS)
        )
    ]
    tags = tags_of(session, subscriber_id)
    return Record(subscriber, tags, history, received, chosen_topics(session, subscriber_id), list_topics(session))


def get_by_id(session: Session, subscriber_id: int) -> Subscriber:
    """The subscriber with this id.

    Raises:
        SubscriberNotFound: there is none.
    """
    # An id past the 64-bit keys can name no row (and would overflow the driver's integer).
    subscriber = session.get(Subscriber, subscriber_id) if 0 < subscriber_id < 2**63 else None
    if subscriber is None:
        raise SubscriberNotFound(f"no subscriber has the id {subscriber_id}")
    return subscriber


def edit(
    session: Session,
    subscriber_id: int,
    *,
    name: str | None,
    language: str | None,
    tags: list[str] | None,
    source: str,
    actor: str | None,
    topics: list[str] | None = None,
) -> Subscriber:
    """Change a subscriber's name, language, tags and topics (None leaves a field as it is); logs what changed.

    The caller passes tags already cleaned (tags.split_tags) and a language the catalogs support.

    Raises:
        SubscriberNotFound: no subscriber has this id.
        InvalidTopic: a topic key names no topic.
    """
    subscriber = get_by_id(session, subscriber_id)
    changed: dict[str, Any] = {}
    if name is not None and clean_name(name) != subscriber.name:
        subscriber.name = clean_name(name)
        changed["name"] = True
    if language is not None and (language or None) != subscriber.language:
        subscriber.language = language or None
        changed["language"] = subscriber.language
    if tags is not None:
        old = set(tags_of(session, subscriber_id))
        new = set(tags)
        session.execute(
            delete(SubscriberTag).where(SubscriberTag.subscriber_id == subscriber_id, SubscriberTag.tag.in_(old - new))
        )
        add_tags(session, [subscriber_id], sorted(new - old))
        if old != new:
            changed["tags"] = sorted(new)
    if topics is not None:
        old_topics = chosen_topics(session, subscriber_id)
        new_topics = set_topics(session, subscriber, topics)
        if new_topics != old_topics:
            changed["topics"] = new_topics
    if changed:
        record_event(session, subscriber, "edited", source, payload=changed, actor=actor)
    return subscriber
