"""A worker's side of the ledger: claim deliveries with a lease, record what the SMTP server said.

See ledger.py for the guarantee these steps give (at least once; the duplicate window).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Engine, Update, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from newsletter import database, multirow, outages, owners, replies, suppressions
from newsletter.bounces import record_bounce
from newsletter.models import (
    REPLY_MAX_CHARS,
    Delivery,
    DeliveryStatus,
    OutboundMessage,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from newsletter.reasons import Effect, rule_named
from newsletter.replies import Action, Fault, Verdict
from newsletter.settings import Settings

# Messages sent between two commits of their outcomes: the most a crash can make be sent twice, per thread.
# Measured on PostgreSQL (one claim and one record a group, 20,000 rows), CPU per message of the database
# and the worker: 377 us in groups of 5, 253 of 10, 186 of 20, 111 of 50, 118 of 100. Past 20 the saving
# is a tenth of a message's cost, and the duplicate window would widen with it.
GROUP_SIZE = 20
SMTP_BOUNCE_SOURCE = "smtp"
# A live worker renews its leases this many times per lease_seconds: a lease only runs out when it stopped.
BEATS_PER_LEASE = 4
LOGGER = logging.getLogger("newsletter.leases")
# The tables whose rows are claimed under a lease: an issue's deliveries, and one-off messages (outbox.py).
Leased = type[Delivery] | type[OutboundMessage]


@dataclass(frozen=True)
class Claim:
    """A delivery a worker holds: whom to send to, and how many tries this one is."""

    delivery_id: int
    subscriber_id: int
    email: str
    name: str | None
    attempts: int
    attributes: Mapping[str, Any] = field(default_factory=dict)  # what personal fields of an issue name


@dataclass(frozen=True)
class Result:
    """What became of one claimed delivery."""

    claim: Claim
    verdict: Verdict
    message_id: str


@dataclass(frozen=True)
class Unfinished:
    """Rows of a batch (deliveries, or one-off messages) still to go, and the earliest moment one of them
    may be claimed."""

    ids: list[int]
    ready_at: dt.datetime | None


def lease_ran_out(leased: Leased) -> ColumnElement[bool]:
    """A row whose claimant's lease ended before `:expired` (bound when the statement runs)."""
    return and_(leased.status == DeliveryStatus.SENDING, leased.claimed_at < bindparam("expired"))


def claimed_values(leased: Leased) -> dict[str, Any]:
    """What a claim sets on a row, with `:now` and `:owner` (owners.this_process) bound when it runs."""
    return {
        "status": DeliveryStatus.SENDING,
        "claimed_at": bindparam("now"),
        "claimed_by": bindparam("owner"),
        "attempts": leased.attempts + 1,
    }


# Built once: a worker runs these for every group, and SQLAlchemy then reuses their compiled SQL.
_CLAIM = (
    update(Delivery)
    .where(
        Delivery.issue_id == bindparam("issue"),
        Delivery.id.in_(bindparam("ids", expanding=True)),
        or_(
            and_(
                Delivery.status == DeliveryStatus.PENDING,
                or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= bindparam("now")),
            ),
            lease_ran_out(Delivery),
        ),
    )
    .values(claimed_values(Delivery))
    # What composing needs comes back with the claim: no second query (SQLite's RETURNING cannot name
    # another table, a correlated subquery it can).
    .returning(
        Delivery.id,
        Delivery.subscriber_id,
        Delivery.attempts,
        *(
            select(column).where(Subscriber.id == Delivery.subscriber_id).scalar_subquery()
            for column in (Subscriber.email, Subscriber.name, Subscriber.status, Subscriber.attributes)
        ),
    )
)
_SKIP = (
    update(Delivery)
    .where(Delivery.id.in_(bindparam("ids", expanding=True)))
    .values(status=DeliveryStatus.SKIPPED, claimed_at=None)
)
_RELEASE = (
    update(Delivery)
    .where(Delivery.id.in_(bindparam("ids", expanding=True)), Delivery.status == DeliveryStatus.SENDING)
    .values(status=DeliveryStatus.PENDING, claimed_at=None, attempts=Delivery.attempts - 1)
)
_UNCLAIM = (
    update(Delivery)
    .where(
        Delivery.id.in_(bindparam("ids", expanding=True)),
        Delivery.status == DeliveryStatus.SENDING,
        Delivery.claimed_at == bindparam("token"),
    )
    .values(status=DeliveryStatus.PENDING, claimed_at=None, attempts=Delivery.attempts - 1)
)
_RENEW: dict[Leased, Update] = {
    table: update(table)
    .where(table.id.in_(bindparam("ids", expanding=True)), table.status == DeliveryStatus.SENDING)
    .values(claimed_at=bindparam("now"))
    for table in (Delivery, OutboundMessage)
}


def claim(
    session: Session, issue_id: int, delivery_ids: Sequence[int], lease_seconds: float, now: dt.datetime | None = None
) -> list[Claim]:
    """Take the due deliveries among `delivery_ids` (`pending -> sending`) and return those to send.

    Rows another worker holds under a live lease, rows not yet due for a retry and finished rows are
    left alone, so a message delivered twice by the broker sends nothing twice. Whoever unsubscribed,
    bounced or complained since the deliveries were created is marked `skipped`. `now` becomes the rows'
    `claimed_at`, which `unclaim` recognizes them by; this process becomes their `claimed_by` (owners.py).
    """
    if not delivery_ids:
        return []
    now = now or utcnow()
    connection = session.connection()
    taken = connection.execute(
        _CLAIM,
        {
            "issue": issue_id,
            "ids": list(delivery_ids),
            "now": now,
            "owner": owners.this_process(),
            "expired": now - dt.timedelta(seconds=lease_seconds),
        },
    ).all()
    if not taken:
        return []
    claims: list[Claim] = []
    left: list[int] = []
    for delivery_id, subscriber_id, attempts, email, name, status, attributes in sorted(taken):
        if status != SubscriberStatus.ACTIVE:  # None: the subscriber row is gone
            left.append(delivery_id)
        else:
            claims.append(Claim(delivery_id, subscriber_id, email, name, attempts, attributes or {}))
    if left:
        connection.execute(_SKIP, {"ids": left})
    return claims


def unclaim(session: Session, delivery_ids: Sequence[int], claimed_at: dt.datetime) -> None:
    """Undo a claim made at `claimed_at` whose commit may have gone through though its answer was lost.

    The connection broke during COMMIT: the rows may be ours, `sending` under a lease nobody renews. Done in
    the transaction that claims again, it gives them back first, so they are neither stranded nor counted twice.
    """
    session.connection().execute(_UNCLAIM, {"ids": list(delivery_ids), "token": claimed_at})


def record(session: Session, settings: Settings, issue_id: int, results: Sequence[Result]) -> list[DeliveryStatus]:
    """Commit-ready outcomes of a group of sends: sent, retried later, failed, or bounced (replies.settle).

    Returns the state each result was recorded in.

    A bounce is also a bounce of the subscriber, hard or soft as its reason says, through the same policy
    as inbound bounce reports (bounces.record_bounce). A final refusal on our side (the relay lacks
    SMTPUTF8, refuses our MAIL FROM) leaves the reader alone and is told to the editor once per issue.
    """
    if not results:
        return []
    now = utcnow()
    rows = [_row(settings, result, now) for result in results]
    multirow.update_rows(
        session.connection(),
        Delivery,
        "id",
        rows,
        when={"status": DeliveryStatus.SENDING},
        constants={"claimed_at": None},
    )
    for result, row in zip(results, rows, strict=True):
        verdict, reason = result.verdict, result.verdict.reason
        if verdict.action == Action.BOUNCE:
            _record_bounce(session, issue_id, result, rule_named(reason.name if reason else "").effect)
        elif verdict.action == Action.RETRY and reason is not None and reason.fault == Fault.READER:
            if row["status"] == DeliveryStatus.FAILED:  # the reader's temporary failure, to the last try
                _record_bounce(session, issue_id, result, Effect.SCORE)
        elif verdict.action == Action.FAIL and reason is not None:
            suppressions.tell_editor(session, issue_id, reason.name, str(verdict.reply))
    return [DeliveryStatus(str(row["status"])) for row in rows]


def _row(settings: Settings, result: Result, now: dt.datetime) -> dict[str, object]:
    settled = replies.settle(result.verdict, result.claim.attempts, settings)
    retry = settled.retry_seconds
    return {
        "id": result.claim.delivery_id,
        "status": str(settled.status),
        "last_reply": str(result.verdict.reply)[:REPLY_MAX_CHARS],
        "message_id": result.message_id,
        "sent_at": now if settled.status == DeliveryStatus.SENT else None,
        "next_attempt_at": None if retry is None else now + dt.timedelta(seconds=retry),
    }


def _record_bounce(session: Session, issue_id: int, result: Result, effect: Effect) -> None:
    """A bounce of the reader: hard when the reason is about the address, else a soft one that scores."""
    subscriber = session.get(Subscriber, result.claim.subscriber_id)
    if subscriber is None:
        return
    name = result.verdict.reason.name if result.verdict.reason is not None else "undefined"
    hard = effect == Effect.SUPPRESS
    record_bounce(
        session,
        subscriber,
        hard=hard,
        reason_name=name,
        source=SMTP_BOUNCE_SOURCE,
        reason=str(result.verdict.reply),
        delivery_id=result.claim.delivery_id,
        issue_id=issue_id,
        external_id=f"smtp:{result.claim.delivery_id}",
    )


def release(session: Session, delivery_ids: Sequence[int], why: str = "") -> None:
    """Give back claimed rows that were not tried: pending, the try uncounted; `why` (a relay's reply) is kept."""
    if not delivery_ids:
        return
    statement = _RELEASE.values(last_reply=why[:REPLY_MAX_CHARS]) if why else _RELEASE
    session.connection().execute(statement, {"ids": list(delivery_ids)})


def release_orphans(session: Session, table: Leased, *where: ColumnElement[bool]) -> list[int]:
    """Give back the rows of `table` (and `where`) held by a process of this machine that runs no longer.

    Their lease need not be waited out: no renewal can come. They go back `pending` with their try
    counted, as when a lease runs out (the dead process may have sent them before it could record it).
    Returns their ids, to enqueue.
    """
    held = [table.status == DeliveryStatus.SENDING, table.claimed_by.is_not(None), *where]
    gone = owners.dead(session.scalars(select(table.claimed_by).where(*held).distinct()))
    if not gone:
        return []
    freed = sorted(
        session.scalars(
            update(table)
            .where(*held, table.claimed_by.in_(gone))
            .values(status=DeliveryStatus.PENDING, claimed_at=None)
            .returning(table.id)
        )
    )
    if freed:
        LOGGER.info("%d %s held by a process no longer running given back: %s", len(freed), table.__tablename__, gone)
    return freed


def unfinished(session: Session, delivery_ids: Sequence[int], lease_seconds: float) -> Unfinished:
    """Which of `delivery_ids` are not final yet, and when the first of them can be claimed."""
    if not delivery_ids:
        return Unfinished([], None)
    rows = session.execute(
        select(Delivery.id, Delivery.status, Delivery.claimed_at, Delivery.next_attempt_at).where(
            Delivery.id.in_(list(delivery_ids)),
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING]),
        )
    ).all()
    now = utcnow()
    moments = []
    for _, status, claimed_at, next_attempt_at in rows:
        if status == DeliveryStatus.SENDING:
            moments.append((claimed_at or now) + dt.timedelta(seconds=lease_seconds))
        else:
            moments.append(next_attempt_at or now)
    return Unfinished(sorted(row[0] for row in rows), min(moments) if moments else None)


class Heartbeat:
    """Renews the leases of the rows this process holds while it lives, so that only a dead worker's expire.

    Deliveries and one-off messages alike (`Leased`). A worker killed without a word (SIGKILL, power loss)
    leaves rows whose lease runs out `lease_seconds` after its last beat. A live one renews every
    `lease_seconds / BEATS_PER_LEASE`, so its rows never expire under it while it can reach the database;
    and since it stops before a message it could only reach after half a lease without a renewal
    (`lease_left`), a database it cannot reach cannot make two workers send the same row either.
    """

    def __init__(self, engine: Engine, lease_seconds: float) -> None:
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.interval_seconds = lease_seconds / BEATS_PER_LEASE
        self.renewed = time.monotonic()  # when the last renewal began that reached the database
        self._held: dict[Leased, set[int]] = {table: set() for table in _RENEW}
        self._lock = threading.Lock()
        self._failing = False

    def hold(self, table: Leased, ids: Sequence[int]) -> None:
        with self._lock:
            self._held[table].update(ids)

    def drop(self, table: Leased, ids: Sequence[int]) -> None:
        with self._lock:
            self._held[table].difference_update(ids)

    def lease_left(self, claimed: float) -> float:
        """Seconds before the lease of rows claimed at monotonic time `claimed` could run out."""
        return self.lease_seconds - (time.monotonic() - max(claimed, self.renewed))

    def beat(self) -> None:
        """Renew the lease of every row held; an unreachable database is said once, and tried at the next beat."""
        with self._lock:
            held = {table: sorted(ids) for table, ids in self._held.items() if ids}
        started = time.monotonic()
        if held:
            try:
                with database.transaction(self.engine) as session:
                    now = utcnow()
                    for table, ids in held.items():
                        session.connection().execute(_RENEW[table], {"ids": ids, "now": now})
            except Exception as error:
                if outages.link_of(error) is None:
                    raise
                if not self._failing:
                    count = sum(map(len, held.values()))
                    LOGGER.warning("cannot renew the leases of %d messages: %s", count, outages.describe(error))
                self._failing = True
                return
            if self._failing:
                LOGGER.warning("renewing leases again")
            self._failing = False
        self.renewed = started
