"""What the bounce policy did, for the editor: failures by reason, who was suppressed and when, reports kept
unverified, and the repair of a reader suppressed by mistake."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.bounces import BOUNCE_KINDS, FeedbackKind
from newsletter.errors import NewsletterError
from newsletter.links import domain_of
from newsletter.models import (
    EXTERNAL_ID_MAX_CHARS,
    REASON_MAX_CHARS,
    REASON_NAME_MAX_CHARS,
    Delivery,
    DeliveryStatus,
    Event,
    Subscriber,
    SubscriberStatus,
    UnrecognizedMessage,
)
from newsletter.reasons import rule_named
from newsletter.subscriptions import change_status, get_subscriber, record_event

REACTIVATED = "reactivated"  # the events kind of a repair by hand
SENDER_SIDE_NOTICE = "sender_side_notice"  # the events kind of "our side failed", logged once per issue and reason


class ReactivationRefused(NewsletterError):
    """A reader who cannot be made active again without more: a complaint needs --force, and so on."""


@dataclass
class Counts:
    hard: int = 0
    soft: int = 0
    uncounted: int = 0  # sender-side failures and delays: shown, never held against the reader
    complaints: int = 0

    @property
    def total(self) -> int:
        return self.hard + self.soft + self.uncounted + self.complaints


@dataclass(frozen=True)
class Suppression:
    email: str
    status: str
    at: dt.datetime  # when we received the report that suppressed the reader
    reported_at: dt.datetime | None  # the report's own date
    reason_name: str
    reason: str


@dataclass(frozen=True)
class BounceReport:
    """Bounces and complaints since a moment, grouped by reason and by domain, and who was suppressed."""

    since: dt.datetime
    by_reason: dict[str, Counts]
    by_domain: dict[str, Counts]
    suppressed: list[Suppression]


def bounce_report(session: Session, since: dt.datetime) -> BounceReport:
    """Every bounce and complaint received since `since`, and the subscribers they suppressed."""
    kinds = (*BOUNCE_KINDS, FeedbackKind.COMPLAINT, FeedbackKind.FEEDBACK_REPORT)
    rows = session.execute(
        select(Event.kind, Event.reason_name, Subscriber.email)
        .join(Subscriber, Subscriber.id == Event.subscriber_id)
        .where(Event.created_at >= since, Event.kind.in_(kinds))
        .execution_options(yield_per=1000)
    )
    by_reason: dict[str, Counts] = {}
    by_domain: dict[str, Counts] = {}
    for kind, reason_name, email in rows:
        for key, table in ((reason_group(kind, reason_name), by_reason), (domain_of(email), by_domain)):
            _count(table.setdefault(key, Counts()), kind)
    suppressed = [
        Suppression(email, status or "", at, reported_at, reason_name or "", reason or "")
        for email, status, at, reported_at, reason_name, reason in session.execute(
            select(
                Subscriber.email, Event.new_status, Event.created_at, Event.reported_at, Event.reason_name, Event.reason
            )
            .join(Subscriber, Subscriber.id == Event.subscriber_id)
            .where(
                Event.created_at >= since,
                Event.kind == "status",
                Event.new_status.in_((SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)),
            )
            .order_by(Event.created_at, Event.id)
        )
    ]
    return BounceReport(since, _by_count(by_reason), _by_count(by_domain), suppressed)


def reason_group(kind: str, reason_name: str | None) -> str:
    """The group an event falls in: a complaint's feedback type, or the name of a failure's reason."""
    if kind in (FeedbackKind.COMPLAINT, FeedbackKind.FEEDBACK_REPORT):
        return f"{'complaint' if kind == FeedbackKind.COMPLAINT else 'report'} ({reason_name or 'abuse'})"
    return rule_named(reason_name or "undefined").name


def reason_meaning(group: str) -> str:
    """What a group of `reason_group` means, in the editor's words."""
    return "" if "(" in group else rule_named(group).description


def unverified_reports(session: Session, limit: int = 100) -> list[UnrecognizedMessage]:
    """Reports kept because nothing ties them to a delivery of ours, newest first, not yet applied by hand."""
    return list(
        session.scalars(
            select(UnrecognizedMessage)
            .where(UnrecognizedMessage.kind == "unverified", UnrecognizedMessage.waiting())
            .order_by(UnrecognizedMessage.received_at.desc(), UnrecognizedMessage.id.desc())
            .limit(limit)
        )
    )


def reactivate(
    session: Session, email: str, reason: str, *, force: bool = False, source: str = "cli", actor: str | None = None
) -> Subscriber:
    """Make a bounced (or, with `force`, complained) reader active again, clearing the bounce score.

    Raises:
        SubscriberNotFound: no subscriber has this address.
        ReactivationRefused: no reason given, the reader complained and `force` is not set, or the reader
            left or never confirmed (only they can come back, by subscribing).
    """
    if not reason.strip():
        raise ReactivationRefused("say why with --reason: the event log keeps it")
    subscriber = get_subscriber(session, email)
    status = subscriber.status
    if status == SubscriberStatus.ACTIVE:
        raise ReactivationRefused(f"{subscriber.email} is already active")
    if status == SubscriberStatus.COMPLAINED and not force:
        raise ReactivationRefused(
            f"{subscriber.email} reported the newsletter as spam; mailing them again needs --force"
        )
    if status not in (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED):
        raise ReactivationRefused(f"{subscriber.email} is {status}: only the reader can subscribe again")
    payload = {"bounce_score": round(subscriber.bounce_score, 3), "forced": force}
    subscriber.bounce_score = 0.0
    subscriber.bounce_score_at = None
    record_event(
        session, subscriber, REACTIVATED, source, reason=reason.strip()[:REASON_MAX_CHARS], payload=payload, actor=actor
    )
    change_status(session, subscriber, SubscriberStatus.ACTIVE, source, reason=reason.strip()[:200], actor=actor)
    return subscriber


@dataclass(frozen=True)
class Notice:
    """A failure on our side that the editor must fix (the relay lacks SMTPUTF8 ...), told once per issue."""

    reason_name: str
    meaning: str
    reply: str
    failed: int  # the issue's deliveries that failed, for this or another reason


def tell_editor(session: Session, issue_id: int, reason_name: str, reply: str) -> None:
    """Log, once per issue and reason, that our side refused deliveries (none of their readers is touched)."""
    external_id = f"sender-side:{issue_id}:{reason_name}"[:EXTERNAL_ID_MAX_CHARS]
    if session.scalar(select(exists().where(Event.external_id == external_id))):
        return
    try:
        with session.begin_nested():  # another worker may tell it at the same moment: once is enough
            record_event(
                session,
                None,
                SENDER_SIDE_NOTICE,
                "smtp",
                reason=reply[:REASON_MAX_CHARS],
                issue_id=issue_id,
                external_id=external_id,
                reason_name=reason_name[:REASON_NAME_MAX_CHARS],
            )
    except IntegrityError:
        pass


def notices(session: Session, issue_id: int) -> list[Notice]:
    """What our side could not do for an issue: each reason once, with the server's words."""
    failed = session.scalar(
        select(func.count())
        .select_from(Delivery)
        .where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.FAILED)
    )
    rows = session.execute(
        select(Event.reason_name, Event.reason)
        .where(Event.issue_id == issue_id, Event.kind == SENDER_SIDE_NOTICE)
        .order_by(Event.id)
    )
    return [
        Notice(name or "", rule_named(name or "undefined").description, reply or "", failed or 0)
        for name, reply in rows
    ]


def _count(counts: Counts, kind: str) -> None:
    if kind == FeedbackKind.COMPLAINT:
        counts.complaints += 1
    elif kind == FeedbackKind.HARD_BOUNCE:
        counts.hard += 1
    elif kind == FeedbackKind.SOFT_BOUNCE:
        counts.soft += 1
    else:
        counts.uncounted += 1


def _by_count(table: dict[str, Counts]) -> dict[str, Counts]:
    return dict(sorted(table.items(), key=lambda item: -item[1].total))
