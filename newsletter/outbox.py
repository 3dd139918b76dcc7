"""One-off messages (a confirmation mail) sent through the same queue and SMTP path as issues."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, bindparam, case, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from newsletter import database, leases, multirow, owners, replies
from newsletter.models import REPLY_MAX_CHARS, DeliveryStatus, OutboundMessage, utcnow
from newsletter.replies import Verdict
from newsletter.settings import Settings

# A message re-enqueued for when a lease ends arrives a little after it, so the claim finds it expired.
LEASE_MARGIN_SECONDS = 0.1
# Never tried this long after it was stored: nothing takes one-off mails from the queue (no worker runs).
UNTRIED_ALERT_SECONDS = 600


@dataclass(frozen=True)
class Prepared:
    """A claimed one-off message: the envelope and the complete bytes."""

    outbound_id: int
    envelope_from: str
    recipient: str
    message: bytes
    attempts: int


Sent = tuple[Prepared, Verdict]  # a message tried, and what the server's reply means


def store_message(session: Session, kind: str, envelope_from: str, recipient: str, message: bytes) -> int:
    """Keep a complete message (CRLF bytes) for the queue to send; returns its id for `Queue.send_messages`."""
    # One plain INSERT on the session's connection: the ORM's unit of work costs a sign-up more than the SQL.
    row: dict[str, object] = {
        "kind": kind,
        "envelope_from": envelope_from,
        "recipient": recipient,
        "message": message,
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
    }
    outbound_id: int = session.connection().execute(_INSERT_RETURNING_ID, row).scalar_one()
    return outbound_id


_INSERT_RETURNING_ID = insert(OutboundMessage).returning(OutboundMessage.id)  # built once: values on execution


def unsent_messages(session: Session, lease_seconds: float) -> list[tuple[int, dt.datetime | None]]:
    """The messages a stopped queue may have dropped, each with when it can be claimed (None: now).

    Pending ones can go at once; one still `sending` waits for its worker's lease to run out, since that
    worker may be alive (requeue_unsent first gives back those of a process of this machine that died).
    Sent, bounced and failed ones are final and never listed.
    """
    rows = session.execute(
        select(OutboundMessage.id, OutboundMessage.status, OutboundMessage.claimed_at)
        .where(OutboundMessage.status.in_((DeliveryStatus.PENDING, DeliveryStatus.SENDING)))
        .order_by(OutboundMessage.id)
    ).all()
    lease = dt.timedelta(seconds=lease_seconds + LEASE_MARGIN_SECONDS)
    return [
        (outbound_id, claimed_at + lease if status == DeliveryStatus.SENDING and claimed_at else None)
        for outbound_id, status, claimed_at in rows
    ]


def requeue_unsent(
    engine: Engine,
    lease_seconds: float,
    enqueue: Callable[[Sequence[int], dt.datetime | None], None],
    lifetimes: Mapping[str, float] | None = None,
) -> int:
    """Hand every unsent message to the queue again (claiming keeps a message from going twice); returns how many.

    The embedded queue lives in memory: what it held when the process stopped is only in this table. A
    message a dead process of this machine was sending goes at once, not when its lease runs out. Those
    that may go at the same moment are handed over together (`Queue.send_messages` groups them). A pending
    message of a kind in `lifetimes` older than its kind's seconds is given up instead (give_up_outlived).
    """
    with database.transaction(engine) as session:
        leases.release_orphans(session, OutboundMessage)
        give_up_outlived(session, lifetimes or {})
        unsent = unsent_messages(session, lease_seconds)
    by_moment: dict[dt.datetime | None, list[int]] = {}
    for outbound_id, at in unsent:
        by_moment.setdefault(at, []).append(outbound_id)
    for at, outbound_ids in by_moment.items():
        enqueue(outbound_ids, at)
    return len(unsent)


OUTLIVED_REPLY = "not sent: it was not sent before the link it carries expired"


def give_up_outlived(session: Session, lifetimes: Mapping[str, float], now: dt.datetime | None = None) -> int:
    """Mark `failed` the pending messages older than the lifetime of their kind (a confirmation whose link
    has expired: a process stopped for longer than that left it unsent); returns how many."""
    now = now or utcnow()
    given_up = 0
    for kind, seconds in lifetimes.items():
        result = session.connection().execute(
            update(OutboundMessage)
            .where(
                OutboundMessage.kind == kind,
                OutboundMessage.status == DeliveryStatus.PENDING,
                OutboundMessage.created_at < now - dt.timedelta(seconds=seconds),
            )
            .values(status=DeliveryStatus.FAILED, last_reply=OUTLIVED_REPLY)
        )
        given_up += result.rowcount
    return given_up


def claim_messages(connection: Connection, outbound_ids: Sequence[int], lease_seconds: float) -> list[Prepared]:
    """Take the pending messages among `outbound_ids` (and those whose worker's lease ran out), in id order;
    those not ours to send (sent, or held by a live worker) are left out.

    One statement, like release_messages and record_messages: database.run_statement runs each alone.
    """
    now = utcnow()
    values = {
        "ids": list(outbound_ids),
        "expired": now - dt.timedelta(seconds=lease_seconds),
        "now": now,
        "owner": owners.this_process(),
    }
    return sorted((Prepared(*row) for row in connection.execute(_CLAIM, values)), key=lambda p: p.outbound_id)


# The statements on the path of every one-off mail, built once (building one costs more than running it
# on SQLite) and run as plain SQL on a connection: the ORM's bulk UPDATE, which matches the rows a session
# may hold, costs more again.
_CLAIM = (
    update(OutboundMessage)
    .where(
        OutboundMessage.id.in_(bindparam("ids", expanding=True)),
        or_(OutboundMessage.status == DeliveryStatus.PENDING, leases.lease_ran_out(OutboundMessage)),
    )
    .values(leases.claimed_values(OutboundMessage))
    .returning(
        OutboundMessage.id,
        OutboundMessage.envelope_from,
        OutboundMessage.recipient,
        OutboundMessage.message,
        OutboundMessage.attempts,
    )
)
_RELEASE = (
    update(OutboundMessage)
    .where(OutboundMessage.id.in_(bindparam("ids", expanding=True)), OutboundMessage.status == DeliveryStatus.SENDING)
    .values(status=DeliveryStatus.PENDING, claimed_at=None, attempts=OutboundMessage.attempts - 1)
)


def release_messages(connection: Connection, outbound_ids: Sequence[int]) -> None:
    """Give back claimed messages that were not tried (our side held them back): pending, their try uncounted."""
    if outbound_ids:
        connection.execute(_RELEASE, {"ids": list(outbound_ids)})


def record_messages(connection: Connection, settings: Settings, sent: Sequence[Sent]) -> list[float | None]:
    """Record what each server's reply means (replies.settle), in one statement (multirow); returns, for each,
    the seconds before its next try, or None once it is final."""
    now = utcnow()
    rows: list[dict[str, object]] = []
    retries: list[float | None] = []
    for prepared, verdict in sent:
        settled = replies.settle(verdict, prepared.attempts, settings)
        rows.append(
            {
                "id": prepared.outbound_id,
                "status": str(settled.status),
                "last_reply": str(verdict.reply)[:REPLY_MAX_CHARS],
                "sent_at": now if settled.status == DeliveryStatus.SENT else None,
            }
        )
        retries.append(settled.retry_seconds)
    multirow.update_rows(connection, OutboundMessage, "id", rows, constants={"claimed_at": None})
    return retries


@dataclass(frozen=True)
class Trouble:
    """One-off mails of a kind the editor should hear of: never tried though stored UNTRIED_ALERT_SECONDS ago
    (nothing sends them), or failed lately (our side or the message was refused; the reader is untouched)."""

    kind: str
    untried: int
    failed: int
    last_reply: str  # the latest failure's


@dataclass(frozen=True)
class Failure:
    id: int
    kind: str
    recipient: str
    created_at: dt.datetime
    reply: str


def trouble(session: Session, since: dt.datetime, now: dt.datetime | None = None) -> list[Trouble]:
    """The kinds of one-off mail with mails waiting untried, or failed since `since`, in the order of their names."""
    now = now or utcnow()
    untried = dict(
        session.execute(
            select(OutboundMessage.kind, func.count())
            .where(
                OutboundMessage.status == DeliveryStatus.PENDING,
                OutboundMessage.created_at < now - dt.timedelta(seconds=UNTRIED_ALERT_SECONDS),
                OutboundMessage.attempts == 0,
            )
            .group_by(OutboundMessage.kind)
        ).all()
    )
    failed = {
        kind: (number, last_id)
        for kind, number, last_id in session.execute(
            select(OutboundMessage.kind, func.count(), func.max(OutboundMessage.id))
            .where(OutboundMessage.status == DeliveryStatus.FAILED, OutboundMessage.created_at >= since)
            .group_by(OutboundMessage.kind)
        )
    }
    replies = dict(
        session.execute(
            select(OutboundMessage.id, OutboundMessage.last_reply).where(
                OutboundMessage.id.in_([last_id for _number, last_id in failed.values()])
            )
        ).all()
    )
    return [
        Trouble(
            kind,
            untried.get(kind, 0),
            failed[kind][0] if kind in failed else 0,
            (replies.get(failed[kind][1]) or "") if kind in failed else "",
        )
        for kind in sorted(set(untried) | set(failed))
    ]


def counts_since(session: Session, since: dt.datetime) -> dict[str, dict[str, int]]:
    """One-off mails stored since `since`, by kind, then by state: sent, bounced, failed, sending, and the
    pending ones as `retrying` (tried before) or `waiting` (never tried)."""
    state = case(
        (
            OutboundMessage.status == DeliveryStatus.PENDING,
            case((OutboundMessage.attempts > 0, literal("retrying")), else_=literal("waiting")),
        ),
        else_=OutboundMessage.status,
    )
    counts: dict[str, dict[str, int]] = {}
    for kind, name, number in session.execute(
        select(OutboundMessage.kind, state, func.count())
        .where(OutboundMessage.created_at >= since)
        .group_by(OutboundMessage.kind, state)
    ):
        counts.setdefault(kind, {})[name] = number
    return dict(sorted(counts.items()))


def latest_failures(session: Session, since: dt.datetime, limit: int = 10) -> list[Failure]:
    """The newest one-off mails that failed, stored since `since`."""
    rows = session.execute(
        select(
            OutboundMessage.id,
            OutboundMessage.kind,
            OutboundMessage.recipient,
            OutboundMessage.created_at,
            OutboundMessage.last_reply,
        )
        .where(OutboundMessage.status == DeliveryStatus.FAILED, OutboundMessage.created_at >= since)
        .order_by(OutboundMessage.id.desc())
        .limit(limit)
    )
    return [Failure(row[0], row[1], row[2], row[3], row[4] or "") for row in rows]
