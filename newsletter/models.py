"""The tables of the ledger: subscribers, issues, deliveries and the append-only event log."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ColumnElement,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from newsletter.language import LANGUAGE_MAX_CHARS
from newsletter.statuses import AccountRole as AccountRole
from newsletter.statuses import SubscriberSource as SubscriberSource
from newsletter.statuses import SubscriberStatus as SubscriberStatus

# Named constraints let Alembic drop and alter them on SQLite's batch mode and on PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Column widths. A value cut to fit a column is cut with one of these names, never with an inline slice.
EMAIL_MAX_CHARS = 320  # RFC 5321 4.5.3.1.1-2: a 64-octet local part, "@" and a 255-octet domain
NAME_MAX_CHARS = 200
STATUS_MAX_CHARS = 16
SUBSCRIBER_SOURCE_MAX_CHARS = 16  # cli, import, web...
SOURCE_MAX_CHARS = 64  # of an event or a kept message: "dsn/maildir", "webhook:ses"...
KIND_MAX_CHARS = 32
SLUG_MAX_CHARS = 200
SUBJECT_MAX_CHARS = 998  # RFC 5322 2.1.1: a header line is at most 998 characters
TAG_MAX_CHARS = 100
TOPIC_KEY_MAX_CHARS = 64
TIMEZONE_MAX_CHARS = 64  # an IANA zone name: "America/Argentina/ComodRivadavia"
HASH_MAX_CHARS = 64  # a SHA-256 digest in hex
MESSAGE_ID_MAX_CHARS = 255
EXTERNAL_ID_MAX_CHARS = 255  # "ses:<id>:<hash>", "message:<sha256>"
FILENAME_MAX_CHARS = 255
CONTENT_TYPE_MAX_CHARS = 100
OWNER_MAX_CHARS = 200  # the process holding a lease, as newsletter.owners names it
THROTTLE_KEY_MAX_CHARS = 80
RELAY_MAX_CHARS = 300  # "host:port" of the SMTP relay: a 255-octet host name, a colon, a port
# Text columns have no width; these bound how much of an unbounded value one row keeps.
REPLY_MAX_CHARS = 2_000  # an SMTP server's last reply, shown by `newsletter status`
REASON_MAX_CHARS = 2_000  # a diagnostic quoted in full can be pages long; the head says what happened
NOTE_MAX_CHARS = 2_000  # why a kept message was not recognised
KEPT_HEADER_MAX_CHARS = 500  # sender, recipient and subject of a kept message
REASON_NAME_MAX_CHARS = 32  # newsletter.reasons names ("userunknown") and ARF feedback types
KEPT_KIND_MAX_CHARS = 16  # "unrecognized" or "unverified"
KEPT_MESSAGE_MAX_BYTES = 256 * 1024  # the head of an unrecognized message kept for the editor
TOPIC_DESCRIPTION_MAX_CHARS = 500  # one line under a topic's name on the sign-up and preferences pages

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets 64-bit keys.
Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    """The current time, timezone-aware in UTC."""
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UtcDateTime(), dict[str, Any]: JSON()}


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for a worker (or for its next attempt, see next_attempt_at)
    SENDING = "sending"  # claimed by a worker (claimed_by) whose lease runs until claimed_at + lease_seconds
    SENT = "sent"  # accepted by the SMTP server
    FAILED = "failed"  # gave up: temporary failures exhausted their retries
    BOUNCED = "bounced"  # permanent SMTP failure (5xx)
    SKIPPED = "skipped"  # the subscriber left between enqueueing and sending


class IssueStatus(StrEnum):
    DRAFT = "draft"
    SENDING = "sending"
    SENT = "sent"


def _check_in(column: str, enum: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(member.value) for member in enum)})"


class Subscriber(Base):
    __tablename__ = "subscribers"
    __table_args__ = (
        CheckConstraint(_check_in("status", SubscriberStatus), name="status"),
        # The desk pages the list newest first by id (keyset), filtered by status or sign-up date.
        Index("ix_subscribers_status_id", "status", "id"),
        Index("ix_subscribers_created_at", "created_at"),
        # Prefix searches (LIKE 'abc%') use these on PostgreSQL whatever the database's collation.
        Index("ix_subscribers_email_key_pattern", "email_key", postgresql_ops={"email_key": "text_pattern_ops"}),
        Index("ix_subscribers_name_pattern", "name", postgresql_ops={"name": "text_pattern_ops"}),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_CHARS))
    # The address trimmed and lower-cased: the form two rows may never share.
    email_key: Mapped[str] = mapped_column(String(EMAIL_MAX_CHARS), unique=True)
    name: Mapped[str | None] = mapped_column(String(NAME_MAX_CHARS))
    status: Mapped[str] = mapped_column(String(STATUS_MAX_CHARS), index=True, default=SubscriberStatus.PENDING)
    source: Mapped[str] = mapped_column(String(SUBSCRIBER_SOURCE_MAX_CHARS), default=SubscriberSource.CLI)
    bounce_score: Mapped[float] = mapped_column(Float, default=0.0)
    bounce_score_at: Mapped[dt.datetime | None]
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[dt.datetime | None]
    unsubscribed_at: Mapped[dt.datetime | None]
    # A BCP 47 tag (zh-CN, en); None means the newsletter's default_language.
    language: Mapped[str | None] = mapped_column(String(LANGUAGE_MAX_CHARS))
    # No issue goes to the reader before this moment (a pause they chose on the preferences page).
    paused_until: Mapped[dt.datetime | None]

    def __repr__(self) -> str:
        return f"<Subscriber {self.id} {self.status}>"


class Issue(Base):
    __tablename__ = "issues"
    __table_args__ = (CheckConstraint(_check_in("status", IssueStatus), name="status"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    slug: Mapped[str] = mapped_column(String(SLUG_MAX_CHARS), unique=True)
    subject: Mapped[str] = mapped_column(String(SUBJECT_MAX_CHARS))
    preheader: Mapped[str] = mapped_column(Text, default="")
    source_text: Mapped[str] = mapped_column(Text)
    source_hash: Mapped[str] = mapped_column(String(HASH_MAX_CHARS))
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(STATUS_MAX_CHARS), default=IssueStatus.DRAFT)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None]
    # With html, text and the images, everything a worker on another machine needs to build the message.
    lang: Mapped[str] = mapped_column(String(LANGUAGE_MAX_CHARS), default="")
    web_html: Mapped[str] = mapped_column(Text, default="")
    # Who the issue goes to: {"tags": [...], "exclude_tags": [...], "topics": [...]}; None is every reader.
    segment: Mapped[dict[str, Any] | None]


class SubscriberTag(Base):
    """A tag the editor (or an import) put on a subscriber; segments select by tag."""

    __tablename__ = "subscriber_tags"

    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(TAG_MAX_CHARS), primary_key=True, index=True)


class Topic(Base):
    """A topic the editor defines and readers choose on the sign-up form and the preferences page."""

    __tablename__ = "topics"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    key: Mapped[str] = mapped_column(String(TOPIC_KEY_MAX_CHARS), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SubscriberTopic(Base):
    __tablename__ = "subscriber_topics"

    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id", ondelete="CASCADE"), primary_key=True, index=True)


class ScheduleStatus(StrEnum):
    SCHEDULED = "scheduled"  # waits for its due time
    STARTED = "started"  # handed to the send use case, once
    CANCELLED = "cancelled"  # by the editor
    MISSED = "missed"  # nothing ran it within schedule_max_lateness: waits for the editor
    FAILED = "failed"  # the send could not start (the note says why)


class ScheduledSend(Base):
    """A send the editor asked for at a later time; a long-running process starts it when due."""

    __tablename__ = "scheduled_sends"
    __table_args__ = (CheckConstraint(_check_in("status", ScheduleStatus), name="status"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    slug: Mapped[str] = mapped_column(String(SLUG_MAX_CHARS), index=True)
    subject: Mapped[str] = mapped_column(String(SUBJECT_MAX_CHARS))
    source_path: Mapped[str] = mapped_column(Text)  # local images are looked up beside it
    source_text: Mapped[str] = mapped_column(Text)
    source_hash: Mapped[str] = mapped_column(String(HASH_MAX_CHARS))
    subject_override: Mapped[str] = mapped_column(String(SUBJECT_MAX_CHARS), default="")
    segment: Mapped[dict[str, Any] | None]
    due_at: Mapped[dt.datetime] = mapped_column(index=True)
    timezone: Mapped[str] = mapped_column(String(TIMEZONE_MAX_CHARS))
    status: Mapped[str] = mapped_column(String(STATUS_MAX_CHARS), default=ScheduleStatus.SCHEDULED, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    note: Mapped[str] = mapped_column(Text, default="")


class IssueImage(Base):
    """An image an issue's HTML shows inline (cid: URL, RFC 2392), stored so any worker can attach it."""

    __tablename__ = "issue_images"
    __table_args__ = (UniqueConstraint("issue_id", "cid"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id", ondelete="CASCADE"))
    cid: Mapped[str] = mapped_column(String(FILENAME_MAX_CHARS))
    filename: Mapped[str] = mapped_column(String(FILENAME_MAX_CHARS))
    content_type: Mapped[str] = mapped_column(String(CONTENT_TYPE_MAX_CHARS))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("issue_id", "subscriber_id"),
        CheckConstraint(_check_in("status", DeliveryStatus), name="status"),
        # A worker claims the next due rows of an issue: WHERE issue_id = ? AND status = ? ORDER BY id.
        Index("ix_deliveries_claim", "issue_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(STATUS_MAX_CHARS), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_reply: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(MESSAGE_ID_MAX_CHARS))
    claimed_at: Mapped[dt.datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(OWNER_MAX_CHARS))  # the last claimant (owners.py)
    next_attempt_at: Mapped[dt.datetime | None]
    sent_at: Mapped[dt.datetime | None]


class OutboundMessage(Base):
    """A prepared one-off message (a confirmation mail) sent through the same queue and SMTP path as issues."""

    __tablename__ = "outbound_messages"
    __table_args__ = (
        CheckConstraint(_check_in("status", DeliveryStatus), name="status"),
        # The unsent ones at start-up, and the desk's failed and waiting ones: never a scan of every sign-up.
        Index("ix_outbound_messages_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(KIND_MAX_CHARS))
    envelope_from: Mapped[str] = mapped_column(String(EMAIL_MAX_CHARS))
    recipient: Mapped[str] = mapped_column(String(EMAIL_MAX_CHARS))
    message: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(STATUS_MAX_CHARS), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_reply: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[dt.datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(OWNER_MAX_CHARS))  # the last claimant (owners.py)
    sent_at: Mapped[dt.datetime | None]


class Event(Base):
    """One line of the append-only log: a subscriber state change, a bounce or a complaint."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"), index=True)
    issue_id: Mapped[int | None] = mapped_column(ForeignKey("issues.id", ondelete="SET NULL"))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(KIND_MAX_CHARS))
    old_status: Mapped[str | None] = mapped_column(String(STATUS_MAX_CHARS))
    new_status: Mapped[str | None] = mapped_column(String(STATUS_MAX_CHARS))
    source: Mapped[str] = mapped_column(String(SOURCE_MAX_CHARS))
    reason: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any] | None]
    # A provider's own id for the event ("ses:<id>", "message:<sha256>"): seen twice, recorded once.
    external_id: Mapped[str | None] = mapped_column(String(EXTERNAL_ID_MAX_CHARS), unique=True)
    # The desk or API account that made the change (its address, kept when the account is removed).
    actor: Mapped[str | None] = mapped_column(String(EMAIL_MAX_CHARS))
    # Why a delivery failed (newsletter.reasons: userunknown, mailboxfull ...), or a feedback report's type.
    reason_name: Mapped[str | None] = mapped_column(String(REASON_NAME_MAX_CHARS))
    # The report's own date (Date header, Arrival-Date, a provider's timestamp); created_at is when we got it.
    reported_at: Mapped[dt.datetime | None]


class UnrecognizedMessage(Base):
    """Mail to the bounce or unsubscribe address that was no report, reply or request: kept for the editor."""

    __tablename__ = "unrecognized_messages"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(SOURCE_MAX_CHARS))
    # "message:<sha256>" as in events: the same mail fetched twice is kept once.
    external_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_MAX_CHARS), unique=True)
    sender: Mapped[str] = mapped_column(Text, default="")
    recipient: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    note: Mapped[str] = mapped_column(Text)  # why it was not recognised
    # "unrecognized", or "unverified": a report we read but cannot tie to a delivery of ours (never applied
    # by itself; the editor may apply it by hand, which sets applied_at).
    kind: Mapped[str] = mapped_column(
        String(KEPT_KIND_MAX_CHARS), default="unrecognized", server_default="unrecognized", index=True
    )
    applied_at: Mapped[dt.datetime | None]
    # Set when the editor dismissed it: the row stays (without the message) so the same mail read again
    # is known by its external_id and not kept a second time. Who did it is in `events`.
    dismissed_at: Mapped[dt.datetime | None]
    size_bytes: Mapped[int] = mapped_column(Integer)
    raw: Mapped[bytes] = mapped_column(LargeBinary)  # the head of the message, cut at a fixed size

    @classmethod
    def waiting(cls) -> ColumnElement[bool]:
        """The kept messages still before the editor: neither applied nor dismissed."""
        return and_(cls.applied_at.is_(None), cls.dismissed_at.is_(None))


class RelayRefusal(Base):
    """The relay refused our session (AUTH, TLS, a 554 greeting): one row per relay, however many attempts,
    so every process (the desk, `newsletter send`, the workers) sees it; a later message sent clears it."""

    __tablename__ = "relay_refusals"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    relay: Mapped[str] = mapped_column(String(RELAY_MAX_CHARS), unique=True)
    reply: Mapped[str] = mapped_column(Text)  # what we were told, as SessionRefused words it
    first_at: Mapped[dt.datetime]  # the first refusal with this reply since the relay last took a message
    last_at: Mapped[dt.datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    cleared_at: Mapped[dt.datetime | None]  # when a message went out again; None while it refuses


class Throttle(Base):
    """One fixed-window counter: how often a key (a hashed client IP or address) was seen in a window."""

    __tablename__ = "throttles"

    key: Mapped[str] = mapped_column(String(THROTTLE_KEY_MAX_CHARS), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(primary_key=True, index=True)
    hits: Mapped[int] = mapped_column(Integer, default=0)


class Account(Base):
    """Someone who signs in to the editor's desk or calls the API: an editor or a viewer."""

    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint(_check_in("role", AccountRole), name="role"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_CHARS))
    email_key: Mapped[str] = mapped_column(String(EMAIL_MAX_CHARS), unique=True)
    role: Mapped[str] = mapped_column(String(STATUS_MAX_CHARS), default=AccountRole.EDITOR)
    password_hash: Mapped[str] = mapped_column(Text)  # argon2id, in the PHC string format
    # Raised by a new password: every session cookie signed with the old number stops working.
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    signed_in_at: Mapped[dt.datetime | None]


class ApiToken(Base):
    """A bearer token of the JSON API; only its SHA-256 is stored, the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(HASH_MAX_CHARS), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    used_at: Mapped[dt.datetime | None]
