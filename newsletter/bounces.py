"""The bounce and complaint policy: a hard bounce suppresses at once, soft ones add to a decaying score."""

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
from newsletter.links import domain_of
from newsletter.models import REASON_MAX_CHARS, Delivery, Event, Subscriber, SubscriberStatus, utcnow
from newsletter.settings import Settings
from newsletter.subscriptions import SUPPRESSED_STATUSES, change_status, record_event

SOFT_BOUNCE_WEIGHT = 1.0
SECONDS_PER_DAY = 86_400


class FeedbackKind(StrEnum):
    """What a bounce, a complaint or a mailed request says; each is also the `kind` of its events row."""

    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe_request"


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
    at: dt.datetime | None = None
    payload: dict[str, Any] = field(default_factory=dict)


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
    hard: bool,
    source: str,
    reason: str,
    delivery_id: int | None = None,
    issue_id: int | None = None,
    external_id: str | None = None,
    at: dt.datetime | None = None,
    payload: dict[str, Any] | None = None,
    policy: BouncePolicy | None = None,
) -> Recorded:
    """Log a bounce and apply the policy: hard -> `bounced` now; soft -> score, `bounced` past the threshold.

    A soft bounce counts once per delivery: an MTA that reports "delayed" every few hours and then
    "failed" for the same message must not triple the score. `policy` only matters for soft bounces.
    """
    if already_recorded(session, external_id):
        return Recorded(None)
    policy = policy or BouncePolicy()
    now = at or utcnow()
    counted = hard or not _soft_bounce_counted(session, delivery_id)
    if not hard and counted:
        score = policy.decayed(subscriber.bounce_score, subscriber.bounce_score_at, now) + SOFT_BOUNCE_WEIGHT
        subscriber.bounce_score = score
        subscriber.bounce_score_at = max(now, subscriber.bounce_score_at or now)
    kind = FeedbackKind.HARD_BOUNCE if hard else FeedbackKind.SOFT_BOUNCE
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
        at=now,
    )
    crossed = hard or subscriber.bounce_score >= policy.soft_threshold
    suppressed = False
    if crossed and subscriber.status not in SUPPRESSED_STATUSES:
        why = "hard bounce" if hard else f"soft bounce score {subscriber.bounce_score:.2f}"
        suppressed = change_status(
            session, subscriber, SubscriberStatus.BOUNCED, source, reason=f"{why}: {reason[:200]}"
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
        at=at,
    )
    # A complaint outranks every other state: whoever marked the mail as spam is never mailed again.
    suppressed = change_status(session, subscriber, SubscriberStatus.COMPLAINED, source, reason=reason[:200])
    return Recorded(event, suppressed)


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
        at=at,
    )
    suppressed = False
    if subscriber.status not in SUPPRESSED_STATUSES:
        suppressed = change_status(session, subscriber, SubscriberStatus.UNSUBSCRIBED, source)
    return Recorded(event, suppressed)


def apply_feedback(session: Session, feedback: Feedback, policy: BouncePolicy) -> Recorded | None:
    """Find the subscriber a report is about and record it; None when it names no subscriber on the list."""
    delivery = session.get(Delivery, feedback.delivery_id) if feedback.delivery_id is not None else None
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
    return record_bounce(
        session,
        subscriber,
        hard=feedback.kind == FeedbackKind.HARD_BOUNCE,
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


def _subscriber_of(session: Session, feedback: Feedback, delivery: Delivery | None) -> Subscriber | None:
    """The subscriber a report is about, locked until commit.

    Readers of several mailboxes and webhook retries record at the same time: without the lock two soft
    bounces read one score and each writes it plus one, and the same report passes the duplicate check
    twice. Locked, the second waits, then sees the first one's score and event.
    """
    if delivery is not None:
        subscriber_id: int | None = delivery.subscriber_id
    elif feedback.subscriber_id is not None:
        subscriber_id = feedback.subscriber_id
    elif feedback.email:
        try:
            _, key = normalize_address(feedback.email)
        except InvalidAddress:
            return None
        subscriber_id = session.scalar(select(Subscriber.id).where(Subscriber.email_key == key))
    else:
        return None
    if subscriber_id is None:
        return None
    return session.get(Subscriber, subscriber_id, with_for_update=True, populate_existing=True)


def _soft_bounce_counted(session: Session, delivery_id: int | None) -> bool:
    if delivery_id is None:
        return False
    query = exists().where(Event.delivery_id == delivery_id, Event.kind == FeedbackKind.SOFT_BOUNCE)
    return bool(session.scalar(select(query)))


# RFC 3463 3: the subject.detail codes bounces carry most, in the editor's words.
STATUS_MEANINGS = {
    "1.1": "no such mailbox",
    "1.2": "no such domain",
    "1.10": "no such recipient",
    "2.1": "mailbox disabled",
    "2.2": "mailbox full",
    "2.3": "message too large",
    "3.0": "receiving system error",
    "4.1": "no answer from host",
    "4.4": "unable to route",
    "4.7": "delivery time expired",
    "7.1": "refused by policy",
}


@dataclass
class Counts:
    hard: int = 0
    soft: int = 0
    complaints: int = 0


@dataclass(frozen=True)
class Suppression:
    email: str
    status: str
    at: dt.datetime
    reason: str


@dataclass(frozen=True)
class BounceReport:
    """Bounces and complaints since a moment, grouped by reason and by domain, and who was suppressed."""

    since: dt.datetime
    by_reason: dict[str, Counts]
    by_domain: dict[str, Counts]
    suppressed: list[Suppression]


def bounce_report(session: Session, since: dt.datetime) -> BounceReport:
    """Every bounce and complaint logged since `since`, and the subscribers they suppressed."""
    kinds = (FeedbackKind.HARD_BOUNCE, FeedbackKind.SOFT_BOUNCE, FeedbackKind.COMPLAINT)
    rows = session.execute(
        select(Event.kind, Event.reason, Event.payload, Subscriber.email)
        .join(Subscriber, Subscriber.id == Event.subscriber_id)
        .where(Event.created_at >= since, Event.kind.in_(kinds))
        .execution_options(yield_per=1000)
    )
    by_reason: dict[str, Counts] = {}
    by_domain: dict[str, Counts] = {}
    for kind, reason, payload, email in rows:
        for key, table in ((reason_group(kind, reason, payload), by_reason), (domain_of(email), by_domain)):
            counts = table.setdefault(key, Counts())
            if kind == FeedbackKind.COMPLAINT:
                counts.complaints += 1
            elif kind == FeedbackKind.HARD_BOUNCE:
                counts.hard += 1
            else:
                counts.soft += 1
    suppressed = [
        Suppression(email, status or "", at, reason or "")
        for email, status, at, reason in session.execute(
            select(Subscriber.email, Event.new_status, Event.created_at, Event.reason)
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


def reason_group(kind: str, reason: str | None, payload: dict[str, Any] | None) -> str:
    """The group a report falls in: a complaint's feedback type, or a bounce's status code and its meaning."""
    payload = payload or {}
    if kind == FeedbackKind.COMPLAINT:
        return f"complaint ({payload.get('feedback_type') or 'abuse'})"
    code = str(payload.get("status") or "")
    if not code and reason:
        code = reason.split(" ", 1)[0] if reason[:1] in "245" and reason[1:2] == "." else ""
    if not code:
        return "other"
    meaning = STATUS_MEANINGS.get(code.partition(".")[2], "")
    return f"{code} {meaning}".strip()


def _by_count(table: dict[str, Counts]) -> dict[str, Counts]:
    return dict(sorted(table.items(), key=lambda item: -(item[1].hard + item[1].soft + item[1].complaints)))
