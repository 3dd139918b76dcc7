"""What the desk's dashboard shows: the list by status, joiners and leavers per day, the last issues, what waits."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Date, and_, cast, func, select
from sqlalchemy.orm import Session

from newsletter import language, ledger, outbox, relays, schedule
from newsletter.bounces import FeedbackKind
from newsletter.models import (
    Delivery,
    DeliveryStatus,
    Event,
    Issue,
    IssueStatus,
    Subscriber,
    SubscriberStatus,
    UnrecognizedMessage,
    utcnow,
)
from newsletter.subscriptions import SUPPRESSED_STATUSES

# Unsubscribes this long after an issue reached a reader are put down to that issue.
UNSUBSCRIBED_AFTER_DAYS = 7
LAST_ISSUES = 10
PAST_REFUSAL_HOURS = 24  # a relay that refused us and takes mail again is named this long, as past
ONE_OFF_DAYS = 7  # one-off mails that failed are named this long after they were stored
ONE_OFF_PATH = "/admin/deliverability#one-off"
N_ = language.N_


@dataclass(frozen=True)
class Day:
    day: dt.date
    joined: int
    left: int


@dataclass(frozen=True)
class IssueSummary:
    slug: str
    subject: str
    status: str
    sent_at: dt.datetime | None
    sent: int
    unfinished: int
    failed: int
    bounced: int
    complained: int
    unsubscribed_after: int


@dataclass(frozen=True)
class Attention:
    """Something the editor should look at, with the desk page that deals with it."""

    message: str
    path: str


def status_counts(session: Session) -> dict[str, int]:
    """How many subscribers are in each state (every state present, zero when none)."""
    rows = session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status))
    found = {status: number for status, number in rows}
    return {str(status): found.get(status, 0) for status in SubscriberStatus}


def _day(session: Session, column: Any) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)  # the UTC day, whatever the server's time zone
    return func.date(column)


def joiners_and_leavers(session: Session, days: int, now: dt.datetime | None = None) -> list[Day]:
    """Per day over the last `days` (oldest first): subscribers created, and those who left or were suppressed."""
    now = now or utcnow()
    first = (now - dt.timedelta(days=days - 1)).date()
    since = dt.datetime.combine(first, dt.time(), dt.UTC)
    joined_day = _day(session, Subscriber.created_at)
    joined: dict[object, int] = dict(
        session.execute(
            select(joined_day, func.count()).where(Subscriber.created_at >= since).group_by(joined_day)
        ).all()
    )
    left_day = _day(session, Event.created_at)
    left: dict[object, int] = dict(
        session.execute(
            select(left_day, func.count())
            .where(
                Event.created_at >= since,
                Event.kind.in_(("status", "forgotten")),
                Event.new_status.in_([str(status) for status in SUPPRESSED_STATUSES]),
                Event.old_status.not_in([str(status) for status in SUPPRESSED_STATUSES]),
            )
            .group_by(left_day)
        ).all()
    )
    result = []
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        result.append(Day(day, _on(joined, day), _on(left, day)))
    return result


def _on(table: dict[object, int], day: dt.date) -> int:
    return table.get(day, 0) or table.get(day.isoformat(), 0)


def issue_summaries(session: Session, limit: int = LAST_ISSUES) -> list[IssueSummary]:
    """The last issues with their delivery counts, complaints and the unsubscribes that followed them."""
    return [summary(session, issue) for issue in ledger.issues_by_recency(session)[:limit]]


def summary(session: Session, issue: Issue) -> IssueSummary:
    """One issue's delivery counts, complaints and the unsubscribes that followed it."""
    counts = ledger.counts(session, issue.id)
    return IssueSummary(
        slug=issue.slug,
        subject=issue.subject,
        status=issue.status,
        sent_at=issue.sent_at,
        sent=counts[DeliveryStatus.SENT],
        unfinished=counts.remaining,
        failed=counts[DeliveryStatus.FAILED],
        bounced=counts[DeliveryStatus.BOUNCED],
        complained=_complaints(session, issue.id),
        unsubscribed_after=_unsubscribed_after(session, issue.id),
    )


def _complaints(session: Session, issue_id: int) -> int:
    query = (
        select(func.count()).select_from(Event).where(Event.issue_id == issue_id, Event.kind == FeedbackKind.COMPLAINT)
    )
    return int(session.execute(query).scalar_one())


def _unsubscribed_after(session: Session, issue_id: int) -> int:
    window = dt.timedelta(days=UNSUBSCRIBED_AFTER_DAYS)
    query = (
        select(func.count(func.distinct(Event.subscriber_id)))
        .select_from(Event)
        .join(Delivery, and_(Delivery.subscriber_id == Event.subscriber_id, Delivery.issue_id == issue_id))
        .where(
            Delivery.status == DeliveryStatus.SENT,
            Event.kind == "status",
            Event.new_status == SubscriberStatus.UNSUBSCRIBED,
            Event.created_at >= Delivery.sent_at,
        )
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.where(Event.created_at < Delivery.sent_at + window)
    else:  # SQLite stores the times as text: compare with a shifted text
        query = query.where(Event.created_at < func.datetime(Delivery.sent_at, f"+{UNSUBSCRIBED_AFTER_DAYS} days"))
    return int(session.execute(query).scalar_one())


def needs_attention(session: Session, lang: str) -> list[Attention]:
    """What waits for the editor: a relay refusing us, sends not finished, deliveries that gave up, mail nobody
    recognised; said in `lang`."""
    found = relay_refusals(session, lang)
    for slug, subject in session.execute(
        select(Issue.slug, Issue.subject).where(Issue.status == IssueStatus.SENDING).order_by(Issue.id)
    ):
        message = language.gettext(lang, N_("“%(subject)s” is still being sent")) % {"subject": subject}
        found.append(Attention(message, f"/admin/issues/{slug}"))
    failed = session.execute(
        select(Issue.slug, func.count())
        .join(Delivery, Delivery.issue_id == Issue.id)
        .where(Delivery.status == DeliveryStatus.FAILED)
        .group_by(Issue.slug)
    ).all()
    for slug, number in failed:
        message = counted(
            lang,
            number,
            N_("%(count)s delivery of %(slug)s failed for a temporary reason"),
            N_("%(count)s deliveries of %(slug)s failed for a temporary reason"),
            slug=slug,
        )
        found.append(Attention(message, f"/admin/issues/{slug}"))
    for waiting in schedule.list_schedules(session):
        message = language.gettext(lang, N_("“%(subject)s” is scheduled for %(when)s %(zone)s (%(status)s)")) % {
            "subject": waiting.subject,
            "when": f"{waiting.local_due:%Y-%m-%d %H:%M}",
            "zone": waiting.timezone,
            "status": language.gettext(lang, str(waiting.status)),  # its name is in the desk's table of states
        }
        found.append(Attention(message, f"/admin/issues/{waiting.slug}"))
    kept: dict[str, int] = dict(
        session.execute(
            select(UnrecognizedMessage.kind, func.count())
            .where(UnrecognizedMessage.waiting())
            .group_by(UnrecognizedMessage.kind)
        ).all()
    )
    if kept.get("unverified"):
        message = counted(
            lang,
            kept["unverified"],
            N_("%(count)s report is not tied to our mail: apply or dismiss each"),
            N_("%(count)s reports are not tied to our mail: apply or dismiss each"),
        )
        found.append(Attention(message, "/admin/bounces"))
    if kept.get("unrecognized"):
        message = counted(
            lang,
            kept["unrecognized"],
            N_("%(count)s message to the bounce address was not recognised"),
            N_("%(count)s messages to the bounce address were not recognised"),
        )
        found.append(Attention(message, "/admin/bounces"))
    return found + one_off_trouble(session, lang)


# A number of one-off mails of a kind, in English's two forms (the catalog words them once for Chinese).
MAILS = {
    "confirmation": (N_("%(count)s confirmation mail"), N_("%(count)s confirmation mails")),
    "welcome": (N_("%(count)s welcome mail"), N_("%(count)s welcome mails")),
}
OTHER_MAILS = (N_("%(count)s %(kind)s mail"), N_("%(count)s %(kind)s mails"))


def one_off_trouble(session: Session, lang: str, now: dt.datetime | None = None) -> list[Attention]:
    """Confirmation and welcome mails that nothing sends, or that failed lately: readers who signed up and
    never got their link; said in `lang`."""
    now = now or utcnow()
    found = []
    for trouble in outbox.trouble(session, now - dt.timedelta(days=ONE_OFF_DAYS), now):
        mails = MAILS.get(trouble.kind, OTHER_MAILS)
        if trouble.untried:
            message = language.gettext(
                lang,
                N_(
                    "%(mails)s stored over %(minutes)s minutes ago went to no SMTP server yet: "
                    "nothing sends them (with broker_url set, `newsletter worker` must run)"
                ),
            ) % {
                "mails": counted(lang, trouble.untried, *mails, kind=trouble.kind),
                "minutes": outbox.UNTRIED_ALERT_SECONDS // 60,
            }
            found.append(Attention(message, ONE_OFF_PATH))
        if trouble.failed:
            message = language.gettext(
                lang, N_("%(mails)s failed in the last %(days)s days, the last with: %(reply)s")
            ) % {
                "mails": counted(lang, trouble.failed, *mails, kind=trouble.kind),
                "days": ONE_OFF_DAYS,
                "reply": trouble.last_reply,
            }
            found.append(Attention(message, ONE_OFF_PATH))
    return found


def counted(lang: str, number: int, one: str, many: str, **values: object) -> str:
    """`1 report`, `2 reports`: `one` or `many` (messages with `%(count)s`) by the English plural, in `lang`
    (Chinese words both alike), with `values` and the number put in."""
    return language.gettext(lang, one if number == 1 else many) % {**values, "count": f"{number:,}"}


def relay_refusals(session: Session, lang: str) -> list[Attention]:
    """A relay that refuses our session, from whichever process sent; one that took mail again lately, as past;
    said in `lang`."""
    found = []
    for refusal in relays.refusals(session, utcnow() - dt.timedelta(hours=PAST_REFUSAL_HOURS)):
        since = f"{refusal.first_at:%Y-%m-%d %H:%M} UTC"
        if refusal.cleared_at is None:
            message = counted(
                lang,
                refusal.attempts,
                N_("The relay %(relay)s refuses our session (%(count)s try since %(since)s): %(reply)s"),
                N_("The relay %(relay)s refuses our session (%(count)s tries since %(since)s): %(reply)s"),
                relay=refusal.relay,
                since=since,
                reply=refusal.reply,
            )
        else:
            message = language.gettext(
                lang,
                N_(
                    "Past: the relay %(relay)s refused our session from %(since)s until mail went out again "
                    "at %(until)s: %(reply)s"
                ),
            ) % {
                "relay": refusal.relay,
                "since": since,
                "until": f"{refusal.cleared_at:%Y-%m-%d %H:%M} UTC",
                "reply": refusal.reply,
            }
        found.append(Attention(message, "/admin/deliverability"))
    return found


@dataclass(frozen=True)
class Unrecognized:
    id: int
    kind: str  # unrecognized, or unverified: a report not tied to a delivery of ours
    received_at: dt.datetime
    source: str
    sender: str
    subject: str
    note: str


def unrecognized_messages(session: Session, limit: int = 100) -> list[Unrecognized]:
    """The newest mail kept for the editor (unrecognised, or reports not tied to our mail), not yet applied."""
    rows = session.execute(
        select(
            UnrecognizedMessage.id,
            UnrecognizedMessage.kind,
            UnrecognizedMessage.received_at,
            UnrecognizedMessage.source,
            UnrecognizedMessage.sender,
            UnrecognizedMessage.subject,
            UnrecognizedMessage.note,
        )
        .where(UnrecognizedMessage.waiting())
        .order_by(UnrecognizedMessage.received_at.desc(), UnrecognizedMessage.id.desc())
        .limit(limit)
    )
    return [Unrecognized(*row) for row in rows]
