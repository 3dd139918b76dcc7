"""What the bounce policy did, for the editor: failures by reason, who was suppressed and when, reports kept
unverified, and the repair of a reader suppressed by mistake."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.bounces import BOUNCE_KINDS, FeedbackKind
from newsletter.errors import NewsletterError
from newsletter.links import domain_of
from newsletter.models import Event, Subscriber, SubscriberStatus, UnrecognizedMessage
from newsletter.reasons import rule_named
from newsletter.subscriptions import change_status, get_subscriber, record_event

REACTIVATED = "reactivated"  # the events kind of a repair by hand


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
            .where(UnrecognizedMessage.kind == "unverified", UnrecognizedMessage.applied_at.is_(None))
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
    record_event(session, subscriber, REACTIVATED, source, reason=reason.strip()[:2000], payload=payload, actor=actor)
    change_status(session, subscriber, SubscriberStatus.ACTIVE, source, reason=reason.strip()[:200], actor=actor)
    return subscriber


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
