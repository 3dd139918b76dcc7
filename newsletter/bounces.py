"""The bounce and complaint policy: what each report does to the reader it names.

A failure about the reader's address suppresses at once; one that may pass adds to a score that decays;
one that is our side's or the content's (newsletter.reasons) and a delay report change nothing about the
reader. Every report is logged once, with the reason's name, the time we got it and its own date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from newsletter.addresses import normalize_address
from newsletter.errors import InvalidAddress
from newsletter.models import (
    REASON_MAX_CHARS,
    REASON_NAME_MAX_CHARS,
    Delivery,
    Event,
    OutboundMessage,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from newsletter.reasons import Diagnosis, Effect
from newsletter.settings import Settings
from newsletter.subscriptions import SUPPRESSED_STATUSES, change_status, record_event

SOFT_BOUNCE_WEIGHT = 1.0
SECONDS_PER_DAY = 86_400


class FeedbackKind(StrEnum):
    """What a bounce, a complaint or a mailed request says; each is also the `kind` of its events row."""

    HARD_BOUNCE = "hard_bounce"  # about the address: suppresses at once
    SOFT_BOUNCE = "soft_bounce"  # may pass: adds to the decaying score
    SENDER_SIDE = "sender_side"  # our relay's, our reputation's or the content's fault: the reader is untouched
    DELAY = "delay"  # RFC 3464 `delayed`: still being tried, never counted
    COMPLAINT = "complaint"
    FEEDBACK_REPORT = "feedback_report"  # ARF that is no complaint (auth-failure, not-spam, virus, other)
    UNSUBSCRIBE = "unsubscribe_request"


BOUNCE_KINDS = (FeedbackKind.HARD_BOUNCE, FeedbackKind.SOFT_BOUNCE, FeedbackKind.SENDER_SIDE, FeedbackKind.DELAY)


def bounce_kind(diagnosis: Diagnosis, action: str = "") -> FeedbackKind:
    """The kind of a failure report: its reason's effect, or a delay."""
    if action.startswith("delay"):
        return FeedbackKind.DELAY
    return {
        Effect.SUPPRESS: FeedbackKind.HARD_BOUNCE,
        Effect.SCORE: FeedbackKind.SOFT_BOUNCE,
        Effect.NONE: FeedbackKind.SENDER_SIDE,
    }[diagnosis.effect]


@dataclass(frozen=True)
class BouncePolicy:
    """When soft bounces make a subscriber `bounced`: a score that halves every `half_life_days`."""

    soft_threshold: float = 3.0
    half_life_days: float = 14.0

    @classmethod
    def from_settings(cls, settings: Settings) -> BouncePolicy:
        return cls(settings.bounce_soft_threshold, settings.bounce_score_half_life_days)

    def decayed(self, score: float, since: dt.datetime | None, now: dt.datetime) -> float:
        """`score` as it stands at `now`, having decayed since `since` (never grown by going back in time)."""
        if since is None or score <= 0:
            return max(score, 0.0)
        elapsed_days = max((now - since).total_seconds(), 0.0) / SECONDS_PER_DAY
        return score * float(0.5 ** (elapsed_days / self.half_life_days))


@dataclass(frozen=True)
class Feedback:
    """One bounce, complaint or unsubscribe request, from inbound mail or an ESP webhook.

    The subscriber is found from `delivery_id` (a verified VERP token or a provider's reference), else
    `subscriber_id`, else `email`. `external_id` names the report so that seeing it twice records it once.
    """

    kind: FeedbackKind
    source: str
    reason: str
    external_id: str | None
    email: str | None = None
    delivery_id: int | None = None
    subscriber_id: int | None = None
    issue_id: int | None = None  # with subscriber_id (a Message-ID of ours): names the delivery
    outbound_id: int | None = None  # a one-off message of ours (a confirmation mail): names its recipient
    at: dt.datetime | None = None  # the report's own date; the event is dated when we record it
    payload: dict[str, Any] = field(default_factory=dict)
    reason_name: str = ""  # newsletter.reasons name, or the feedback type of a report


@dataclass(frozen=True)
class Recorded:
    """What one report did: its events row (None when seen before) and whether it suppressed someone."""

    event: Event | None
    suppressed: bool = False

    @property
    def duplicate(self) -> bool:
        return self.event is None


def already_recorded(session: Session, external_id: str | None) -> bool:
    """True when an event with this external id is already in the log."""
    if external_id is None:
        return False
    return bool(session.scalar(select(exists().where(Event.external_id == external_id))))


def record_bounce(
    session: Session,
    subscriber: Subscriber,
    *,
    hard: bool = False,
    source: str,
    reason: str,
    kind: FeedbackKind | None = None,
    reason_name: str = "",
    delivery_id: int | None = None,
    issue_id: int | None = None,
    external_id: str | None = None,
    at: dt.datetime | None = None,
    payload: dict[str, Any] | None = None,
    policy: BouncePolicy | None = None,
) -> Recorded:
    """Log a failure and apply the policy: hard -> `bounced` now; soft -> score, `bounced` past the threshold;
    sender-side and delay -> logged only.

    `kind` names the failure (else `hard` says hard or soft); `at` is the report's own date. A report
    counts once per delivery: an MTA that reports "failed" twice for one message, or an ESP and a DSN
    both, must not double the score. `policy` only matters for soft bounces.
    """
    if already_recorded(session, external_id):
        return Recorded(None)
    kind = kind or (FeedbackKind.HARD_BOUNCE if hard else FeedbackKind.SOFT_BOUNCE)
    hard = kind == FeedbackKind.HARD_BOUNCE
    policy = policy or BouncePolicy()
    now = min(at, utcnow()) if at is not None else utcnow()
    counted = kind in (FeedbackKind.HARD_BOUNCE, FeedbackKind.SOFT_BOUNCE) and not _counted(session, delivery_id, hard)
    if kind == FeedbackKind.SOFT_BOUNCE and counted:
        score = policy.decayed(subscriber.bounce_score, subscriber.bounce_score_at, now) + SOFT_BOUNCE_WEIGHT
        subscriber.bounce_score = score
        subscriber.bounce_score_at = max(now, subscriber.bounce_score_at or now)
    details = {**(payload or {}), "score": round(subscriber.bounce_score, 3), "counted": counted}
    event = record_event(
        session,
        subscriber,
        kind,
        source,
        reason=reason[:REASON_MAX_CHARS],
        payload=details,
        issue_id=issue_id,
        delivery_id=delivery_id,
        external_id=external_id,
        reason_name=reason_name[:REASON_NAME_MAX_CHARS] or None,
        reported_at=at,
    )
    crossed = counted and (hard or subscriber.bounce_score >= policy.soft_threshold)
    suppressed = False
    if crossed and subscriber.status not in SUPPRESSED_STATUSES:
        soft = f"soft bounce score {subscriber.bounce_score:.2f}"
        why = f"hard bounce ({reason_name or 'permanent'})" if hard else soft
        suppressed = change_status(
            session,
            subscriber,
            SubscriberStatus.BOUNCED,
            source,
            reason=f"{why}: {reason[:200]}",
            reason_name=reason_name,
            reported_at=at,
        )
    return Recorded(event, suppressed)


def record_complaint(
    session: Session,
    subscriber: Subscriber,
    *,
    source: str,
    reason: str,
    delivery_id: int | None = None,
    issue_id: int | None = None,
    external_id: str | None = None,
    at: dt.datetime | None = None,
    payload: dict[str, Any] | None = None,
) -> Recorded:
    """Log a spam complaint (RFC 5965 feedback or an ESP's) and make the subscriber `complained`."""
    if already_recorded(session, external_id):
        return Recorded(None)
    feedback_type = str((payload or {}).get("feedback_type") or "abuse")[:REASON_NAME_MAX_CHARS]
    event = record_event(
        session,
        subscriber,
        FeedbackKind.COMPLAINT,
        source,
        reason=reason[:REASON_MAX_CHARS],
        payload=payload,
        issue_id=issue_id,
        delivery_id=delivery_id,
        external_id=external_id,
        reason_name=feedback_type,
        reported_at=at,
    )
    # A complaint outranks every other state: whoever marked the mail as spam is never mailed again.
    suppressed = change_status(
        session,
        subscriber,
        SubscriberStatus.COMPLAINED,
        source,
        reason=reason[:200],
        reason_name=feedback_type,
        reported_at=at,
    )
    return Recorded(event, suppressed)


def record_report(
    session: Session,
    subscriber: Subscriber,
    *,
    source: str,
    reason: str,
    reason_name: str,
    delivery_id: int | None = None,
    issue_id: int | None = None,
    external_id: str | None = None,
    at: dt.datetime | None = None,
    payload: dict[str, Any] | None = None,
) -> Recorded:
    """Log a feedback report that is no complaint (RFC 6591 auth-failure, not-spam, virus): nothing changes."""
    if already_recorded(session, external_id):
        return Recorded(None)
    event = record_event(
        session,
        subscriber,
        FeedbackKind.FEEDBACK_REPORT,
        source,
        reason=reason[:REASON_MAX_CHARS],
        payload=payload,
        issue_id=issue_id,
        delivery_id=delivery_id,
        external_id=external_id,
        reason_name=reason_name[:REASON_NAME_MAX_CHARS] or None,
        reported_at=at,
    )
    return Recorded(event)


def record_unsubscribe_request(
    session: Session,
    subscriber: Subscriber,
    *,
    source: str,
    reason: str,
    external_id: str | None = None,
    at: dt.datetime | None = None,
    payload: dict[str, Any] | None = None,
) -> Recorded:
    """Log a request to leave (a mail to the List-Unsubscribe mailto address) and unsubscribe."""
    if already_recorded(session, external_id):
        return Recorded(None)
    event = record_event(
        session,
        subscriber,
        FeedbackKind.UNSUBSCRIBE,
        source,
        reason=reason[:REASON_MAX_CHARS],
        payload=payload,
        external_id=external_id,
        reported_at=at,
    )
    suppressed = False
    if subscriber.status not in SUPPRESSED_STATUSES:
        suppressed = change_status(session, subscriber, SubscriberStatus.UNSUBSCRIBED, source)
    return Recorded(event, suppressed)


def apply_feedback(session: Session, feedback: Feedback, policy: BouncePolicy) -> Recorded | None:
    """Find the subscriber a report is about and record it; None when it names no subscriber on the list."""
    delivery = _delivery_of(session, feedback)
    subscriber = _subscriber_of(session, feedback, delivery)
    if subscriber is None:
        return None
    common: dict[str, Any] = {
        "source": feedback.source,
        "reason": feedback.reason,
        "external_id": feedback.external_id,
        "at": feedback.at,
        "payload": feedback.payload,
    }
    if feedback.kind == FeedbackKind.UNSUBSCRIBE:
        return record_unsubscribe_request(session, subscriber, **common)
    delivery_id = delivery.id if delivery is not None else None
    issue_id = delivery.issue_id if delivery is not None else None
    if feedback.kind == FeedbackKind.COMPLAINT:
        return record_complaint(session, subscriber, delivery_id=delivery_id, issue_id=issue_id, **common)
    if feedback.kind == FeedbackKind.FEEDBACK_REPORT:
        return record_report(
            session, subscriber, delivery_id=delivery_id, issue_id=issue_id, reason_name=feedback.reason_name, **common
        )
    return record_bounce(
        session,
        subscriber,
        kind=feedback.kind,
        reason_name=feedback.reason_name,
        delivery_id=delivery_id,
        issue_id=issue_id,
        policy=policy,
        **common,
    )


def apply_all(session: Session, feedback: Iterable[Feedback], policy: BouncePolicy) -> list[Recorded | None]:
    """Record several reports, locking their subscribers in one global order.

    Two multi-recipient reports naming the same subscribers in opposite orders would otherwise each
    hold one lock and wait for the other's (PostgreSQL ends that with a deadlock error).
    """
    ordered = sorted(
        feedback, key=lambda item: (item.delivery_id or 0, item.subscriber_id or 0, (item.email or "").lower())
    )
    return [apply_feedback(session, item, policy) for item in ordered]


def _delivery_of(session: Session, feedback: Feedback) -> Delivery | None:
    if feedback.delivery_id is not None:
        return session.get(Delivery, feedback.delivery_id)
    if feedback.issue_id is not None and feedback.subscriber_id is not None:
        named = select(Delivery).where(
            Delivery.issue_id == feedback.issue_id, Delivery.subscriber_id == feedback.subscriber_id
        )
        return session.scalar(named)
    return None


def _subscriber_of(session: Session, feedback: Feedback, delivery: Delivery | None) -> Subscriber | None:
    """The subscriber a report is about, locked until commit.

    Readers of several mailboxes and webhook retries record at the same time: without the lock two soft
    bounces read one score and each writes it plus one, and the same report passes the duplicate check
    twice. Locked, the second waits, then sees the first one's score and event.
    """
    if delivery is not None:
        subscriber_id: int | None = delivery.subscriber_id
    elif feedback.outbound_id is not None:
        recipient = session.scalar(select(OutboundMessage.recipient).where(OutboundMessage.id == feedback.outbound_id))
        subscriber_id = _subscriber_id_of(session, recipient) if recipient else None
    elif feedback.subscriber_id is not None:
        subscriber_id = feedback.subscriber_id
    else:
        subscriber_id = _subscriber_id_of(session, feedback.email)
    if subscriber_id is None:
        return None
    return session.get(Subscriber, subscriber_id, with_for_update=True, populate_existing=True)


def _subscriber_id_of(session: Session, email: str | None) -> int | None:
    """The id of the subscriber with this address, or None (also for what is no address)."""
    if not email:
        return None
    try:
        _, key = normalize_address(email)
    except InvalidAddress:
        return None
    return session.scalar(select(Subscriber.id).where(Subscriber.email_key == key))


def _counted(session: Session, delivery_id: int | None, hard: bool) -> bool:
    """True when a bounce of this delivery already counted: a second report of one message counts nothing,
    except a hard one after a soft one (the MTA's final word after a temporary failure)."""
    if delivery_id is None:
        return False
    kinds = (FeedbackKind.HARD_BOUNCE,) if hard else (FeedbackKind.HARD_BOUNCE, FeedbackKind.SOFT_BOUNCE)
    query = exists().where(Event.delivery_id == delivery_id, Event.kind.in_(kinds))
    return bool(session.scalar(select(query)))
