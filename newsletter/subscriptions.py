"""Use cases that change a subscriber: add, change status, unsubscribe, forget. Each logs an event."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.addresses import clean_name, normalize_address
from newsletter.errors import NewsletterError, SubscriberNotFound
from newsletter.models import Event, Subscriber, SubscriberSource, SubscriberStatus, utcnow

# A subscriber in one of these states left on purpose or cannot be reached: never re-activated silently.
SUPPRESSED_STATUSES = frozenset({SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED})
FORGOTTEN_DOMAIN = "forgotten.invalid"  # RFC 2606: .invalid can never be delivered to


class SubscriberExists(NewsletterError):
    """The address is already on the list."""


def find_subscriber(session: Session, email: str) -> Subscriber | None:
    """The subscriber with this address (compared by its normalized key), or None."""
    _, key = normalize_address(email)
    return session.scalar(select(Subscriber).where(Subscriber.email_key == key))


def get_subscriber(session: Session, email: str) -> Subscriber:
    subscriber = find_subscriber(session, email)
    if subscriber is None:
        raise SubscriberNotFound(f"no subscriber with address {email.strip()!r}")
    return subscriber


def add_subscriber(
    session: Session,
    email: str,
    name: str | None = None,
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    source: SubscriberSource = SubscriberSource.CLI,
    attributes: dict[str, Any] | None = None,
    actor: str | None = None,
) -> Subscriber:
    """Put a new address on the list (`actor`: the desk or API account that did it).

    Raises:
        InvalidAddress: the address is not valid.
        SubscriberExists: the address is already on the list, in whatever state.
    """
    given, key = normalize_address(email)
    existing = session.scalar(select(Subscriber).where(Subscriber.email_key == key))
    if existing is not None:
        raise SubscriberExists(f"{given} is already on the list ({existing.status})")
    now = utcnow()
    subscriber = Subscriber(
        email=given,
        email_key=key,
        name=clean_name(name),
        status=status,
        source=source,
        attributes=attributes or {},
        created_at=now,
        confirmed_at=now if status == SubscriberStatus.ACTIVE else None,
    )
    session.add(subscriber)
    session.flush()
    record_event(session, subscriber, "created", source, new_status=status, actor=actor)
    return subscriber


def change_status(
    session: Session,
    subscriber: Subscriber,
    status: SubscriberStatus,
    source: str,
    reason: str | None = None,
    payload: dict[str, Any] | None = None,
    actor: str | None = None,
    *,
    reason_name: str = "",
    reported_at: dt.datetime | None = None,
) -> bool:
    """Move a subscriber to `status` and log it; returns False (and logs nothing) when already there."""
    old = subscriber.status
    if old == status:
        return False
    now = utcnow()
    subscriber.status = status
    if status == SubscriberStatus.ACTIVE:
        subscriber.confirmed_at = now
    elif status == SubscriberStatus.UNSUBSCRIBED:
        subscriber.unsubscribed_at = now
    record_event(
        session,
        subscriber,
        "status",
        source,
        old_status=old,
        new_status=status,
        reason=reason,
        payload=payload,
        actor=actor,
        reason_name=reason_name or None,
        reported_at=reported_at,
    )
    return True


def unsubscribe(session: Session, email: str, source: str = "cli", actor: str | None = None) -> Subscriber:
    """Unsubscribe an address, keeping its record so it is never mailed again."""
    subscriber = get_subscriber(session, email)
    if subscriber.status not in SUPPRESSED_STATUSES:
        change_status(session, subscriber, SubscriberStatus.UNSUBSCRIBED, source, actor=actor)
    return subscriber


def forget(session: Session, email: str, source: str = "cli", actor: str | None = None) -> None:
    """Erase a subscriber's personal data (GDPR art. 17), keeping an anonymous row so counts stay true."""
    subscriber = get_subscriber(session, email)
    old = subscriber.status
    placeholder = f"forgotten-{subscriber.id}@{FORGOTTEN_DOMAIN}"
    subscriber.email = placeholder
    subscriber.email_key = placeholder
    subscriber.name = None
    subscriber.attributes = {}
    subscriber.status = SubscriberStatus.UNSUBSCRIBED
    subscriber.unsubscribed_at = subscriber.unsubscribed_at or utcnow()
    # The log may quote the address (a bounce's raw reason, a form's payload): erase that too.
    session.execute(update(Event).where(Event.subscriber_id == subscriber.id).values(reason=None, payload=None))
    record_event(
        session,
        subscriber,
        "forgotten",
        source,
        old_status=old,
        new_status=SubscriberStatus.UNSUBSCRIBED,
        actor=actor,
    )


def is_forgotten(subscriber: Subscriber) -> bool:
    """True for the anonymous row `forget` leaves behind."""
    return subscriber.email_key.endswith(f"@{FORGOTTEN_DOMAIN}")


def list_subscribers(session: Session, status: SubscriberStatus | None = None) -> Iterator[Subscriber]:
    """Every subscriber (or those with `status`), oldest first, streamed."""
    query = select(Subscriber).order_by(Subscriber.id)
    if status is not None:
        query = query.where(Subscriber.status == status)
    yield from session.scalars(query.execution_options(yield_per=1000))


def record_event(
    session: Session,
    subscriber: Subscriber | None,
    kind: str,
    source: str,
    *,
    old_status: str | None = None,
    new_status: str | None = None,
    reason: str | None = None,
    payload: dict[str, Any] | None = None,
    issue_id: int | None = None,
    delivery_id: int | None = None,
    external_id: str | None = None,
    at: dt.datetime | None = None,
    actor: str | None = None,
    reason_name: str | None = None,
    reported_at: dt.datetime | None = None,
) -> Event:
    """Append one row to the event log; `actor` is the desk or API account that made the change, `reported_at`
    a report's own date."""
    event = Event(
        subscriber_id=subscriber.id if subscriber is not None else None,
        kind=kind,
        source=source,
        old_status=old_status,
        new_status=new_status,
        reason=reason,
        payload=payload,
        issue_id=issue_id,
        delivery_id=delivery_id,
        external_id=external_id,
        created_at=at or utcnow(),
        actor=actor,
        reason_name=reason_name,
        reported_at=reported_at,
    )
    session.add(event)
    return event
