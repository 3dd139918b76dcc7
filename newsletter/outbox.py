"""One-off messages (a confirmation mail) sent through the same queue and SMTP path as issues."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from newsletter import database, leases, owners, replies
from newsletter.models import REPLY_MAX_CHARS, DeliveryStatus, OutboundMessage, utcnow
from newsletter.replies import Verdict
from newsletter.settings import Settings

# A message re-enqueued for when a lease ends arrives a little after it, so the claim finds it expired.
LEASE_MARGIN_SECONDS = 0.1


@dataclass(frozen=True)
class Prepared:
    """A claimed one-off message: the envelope and the complete bytes."""

    envelope_from: str
    recipient: str
    message: bytes
    attempts: int


def store_message(session: Session, kind: str, envelope_from: str, recipient: str, message: bytes) -> int:
    """Keep a complete message (CRLF bytes) for the queue to send; returns its id for `Queue.send_message`."""
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


def requeue_unsent(engine: Engine, lease_seconds: float, enqueue: Callable[[int, dt.datetime | None], None]) -> int:
    """Hand every unsent message to the queue again (claiming keeps a message from going twice); returns how many.

    The embedded queue lives in memory: what it held when the process stopped is only in this table. A
    message a dead process of this machine was sending goes at once, not when its lease runs out.
    """
    with database.transaction(engine) as session:
        leases.release_orphans(session, OutboundMessage)
        unsent = unsent_messages(session, lease_seconds)
    for outbound_id, at in unsent:
        enqueue(outbound_id, at)
    return len(unsent)


def claim_message(connection: Connection, outbound_id: int, lease_seconds: float) -> Prepared | None:
    """Take a pending message (or one whose worker's lease ran out); None when it is not ours to send.

    One statement, like release_message and record_message: database.run_statement runs each alone.
    """
    now = utcnow()
    values = {
        "outbound_id": outbound_id,
        "expired": now - dt.timedelta(seconds=lease_seconds),
        "now": now,
        "owner": owners.this_process(),
    }
    row = connection.execute(_CLAIM, values).first()
    return None if row is None else Prepared(row[0], row[1], row[2], row[3])


# The statements on the path of every one-off mail, built once (building one costs more than running it
# on SQLite) and run as plain SQL on a connection: the ORM's bulk UPDATE, which matches the rows a session
# may hold, costs more again.
_CLAIM = (
    update(OutboundMessage)
    .where(
        OutboundMessage.id == bindparam("outbound_id"),
        or_(OutboundMessage.status == DeliveryStatus.PENDING, leases.lease_ran_out(OutboundMessage)),
    )
    .values(leases.claimed_values(OutboundMessage))
    .returning(
        OutboundMessage.envelope_from, OutboundMessage.recipient, OutboundMessage.message, OutboundMessage.attempts
    )
)
_RELEASE = (
    update(OutboundMessage)
    .where(OutboundMessage.id == bindparam("outbound_id"), OutboundMessage.status == DeliveryStatus.SENDING)
    .values(status=DeliveryStatus.PENDING, claimed_at=None, attempts=OutboundMessage.attempts - 1)
)
_RECORD = (
    update(OutboundMessage)
    .where(OutboundMessage.id == bindparam("outbound_id"))
    .values(status=bindparam("status"), last_reply=bindparam("reply"), claimed_at=None, sent_at=bindparam("sent_at"))
)


def release_message(connection: Connection, outbound_id: int) -> None:
    """Give back a claimed message that was not tried (our side held it back): pending, its try uncounted."""
    connection.execute(_RELEASE, {"outbound_id": outbound_id})


def record_message(
    connection: Connection, settings: Settings, outbound_id: int, verdict: Verdict, attempts: int
) -> float | None:
    """Record what the server's reply means (replies.settle); returns the seconds before the next try, or None."""
    settled = replies.settle(verdict, attempts, settings)
    values = {
        "outbound_id": outbound_id,
        "status": settled.status,
        "reply": str(verdict.reply)[:REPLY_MAX_CHARS],
        "sent_at": utcnow() if settled.status == DeliveryStatus.SENT else None,
    }
    connection.execute(_RECORD, values)
    return settled.retry_seconds
