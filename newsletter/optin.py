"""Double opt-in: subscribe (with its abuse caps), confirm, unsubscribe and re-subscribe by token."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, String, bindparam, exists, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsletter import throttle, topics
from newsletter.addresses import clean_name, normalize_address
from newsletter.errors import NewsletterError
from newsletter.models import Event, Subscriber, SubscriberSource, SubscriberStatus, utcnow
from newsletter.settings import Settings
from newsletter.subscriptions import SUPPRESSED_STATUSES, is_forgotten, record_event
from newsletter.tokens import Purpose, Signer, TokenInvalid, as_row_id

CONFIRMATION_REQUESTED = "confirmation-requested"  # event kind: a confirmation mail was queued
SIGNUP_WINDOW_SECONDS = 3600  # the rate limits count sign-ups per hour
CAP_WINDOW_SECONDS = 24 * 3600  # the cap counts confirmation mails per day
SOURCE_FORM = "form"
SOURCE_CONFIRM = "confirm-link"
SOURCE_UNSUBSCRIBE = "unsubscribe-link"
SOURCE_ONE_CLICK = "one-click"  # RFC 8058 List-Unsubscribe-Post from a mail provider


class TooManySignups(NewsletterError):
    """Too many sign-ups from one client IP or for one address in the last hour."""


class TokenUsed(TokenInvalid):
    """A confirmation link that has already done its work (or was overtaken by a later change)."""


@dataclass(frozen=True)
class Reader:
    """Who a one-off mail goes to, as the mail names them."""

    email: str
    name: str | None
    language: str | None


@dataclass(frozen=True)
class ConfirmationRequest:
    """A confirmation mail to send once the transaction commits: the token is made from the IDs."""

    subscriber_id: int
    request_id: int  # the id of the `confirmation-requested` event the link names
    reader: Reader  # as of the request, so composing the mail reads nothing back


def confirmation_token(signer: Signer, request: ConfirmationRequest) -> str:
    """The signed, expiring token of a confirmation link."""
    return signer.dumps(Purpose.CONFIRM, [request.subscriber_id, request.request_id])


def subscribe(
    session: Session,
    settings: Settings,
    email: str,
    name: str | None = None,
    client_ip: str | None = None,
    now: dt.datetime | None = None,
    *,
    language: str | None = None,
    topic_keys: Sequence[str] = (),
) -> ConfirmationRequest | None:
    """Take a sign-up from the form; returns the confirmation mail to send, or None when none is due.

    A reader not yet active takes the `language` and topics of this sign-up; an active one keeps theirs
    (a stranger must not change them by signing their address up).

    The caller shows the same answer whatever the address's state (no enumeration): a new or pending
    address gets a (fresh) confirmation, an active one nothing new, a suppressed one a confirmation
    to re-subscribe. At most `confirmation_daily_cap` confirmations go to one address a day.

    Raises:
        InvalidAddress: the address is not valid.
        TooManySignups: the client IP or the address is over its hourly limit.
    """
    now = now or utcnow()
    given, key = normalize_address(email, check_deliverability=settings.signup_check_deliverability)
    if client_ip:
        _within_limit(session, settings, "ip", client_ip, settings.signup_limit_per_ip, now)
    _within_limit(session, settings, "address", key, settings.signup_limit_per_address, now)
    reader = Reader(given, clean_name(name), language or None)
    if session.get_bind().dialect.name == "postgresql" and not _over_daily_cap(settings, 0):
        created = _insert_pending_requested(session, key, reader, now)
        if created is not None:
            subscriber_id, request_id = created
            if topic_keys:
                topics.choose_topics_of(session, subscriber_id, topic_keys)
            return ConfirmationRequest(subscriber_id, request_id, reader)
    else:
        created_id = _insert_pending(session, key, reader, now)
        if created_id is not None:
            return _request_first_confirmation(session, settings, created_id, reader, topic_keys, now)
    subscriber = session.scalars(select(Subscriber).where(Subscriber.email_key == key).with_for_update()).one()
    if subscriber.status == SubscriberStatus.ACTIVE:
        return None
    if subscriber.status == SubscriberStatus.PENDING and name and reader.name != subscriber.name:
        subscriber.name = reader.name
    if language:
        subscriber.language = language
    if topic_keys:
        topics.choose_topics(session, subscriber, topic_keys)
    return request_confirmation(session, settings, subscriber, SOURCE_FORM, now)


def request_confirmation(
    session: Session, settings: Settings, subscriber: Subscriber, source: str, now: dt.datetime | None = None
) -> ConfirmationRequest | None:
    """Make a not-yet-active subscriber pending and log a confirmation request, within the daily cap."""
    now = now or utcnow()
    if subscriber.status in SUPPRESSED_STATUSES:
        # ARCHITECTURE: back to pending on re-subscribe; nothing is mailed until the link is used.
        _move(session, subscriber, set(SUPPRESSED_STATUSES), SubscriberStatus.PENDING, source, "re-subscribe")
    if subscriber.status != SubscriberStatus.PENDING:
        return None
    if _over_daily_cap(settings, _confirmations_since(session, subscriber.id, now)):
        return None
    event = record_event(session, subscriber, CONFIRMATION_REQUESTED, source, at=now)
    session.flush()
    return ConfirmationRequest(subscriber.id, event.id, Reader(subscriber.email, subscriber.name, subscriber.language))


def check_confirmation(session: Session, signer: Signer, token: str, max_age_seconds: int) -> Subscriber:
    """The pending subscriber a confirmation token names, changing nothing (the page with the button).

    Raises:
        TokenExpired: the link is older than `max_age_seconds`.
        TokenUsed: the subscriber was confirmed (or changed state) since this link was sent.
        TokenInvalid: the token is not a confirmation token of this key.
    """
    subscriber_id, request_id = _confirmation_ids(signer.loads(Purpose.CONFIRM, token, max_age_seconds))
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise TokenInvalid("this link names nobody on the list")
    later_change = exists().where(
        Event.subscriber_id == subscriber_id, Event.id > request_id, Event.new_status.is_not(None)
    )
    if subscriber.status != SubscriberStatus.PENDING or session.scalar(select(later_change)):
        raise TokenUsed("this link has already been used")
    return subscriber


def confirm(session: Session, signer: Signer, token: str, max_age_seconds: int) -> Subscriber:
    """Activate the subscriber a confirmation token names; a token works once.

    Raises:
        TokenExpired, TokenUsed, TokenInvalid: as check_confirmation.
    """
    subscriber = check_confirmation(session, signer, token, max_age_seconds)
    if not _move(session, subscriber, {SubscriberStatus.PENDING}, SubscriberStatus.ACTIVE, SOURCE_CONFIRM):
        raise TokenUsed("this link has already been used")
    return subscriber


def subscriber_for_unsubscribe(session: Session, signer: Signer, token: str) -> Subscriber | None:
    """The subscriber an unsubscribe token names (these tokens never expire), or None if erased.

    Raises:
        TokenInvalid: the token is not an unsubscribe token of this key.
    """
    subscriber = session.get(Subscriber, as_row_id(signer.loads_permanent(Purpose.UNSUBSCRIBE, token)))
    # The anonymous row `forget` leaves is nobody's: an old link must not show it nor re-subscribe it.
    return None if subscriber is None or is_forgotten(subscriber) else subscriber


def unsubscribe_by_token(session: Session, signer: Signer, token: str, source: str = SOURCE_UNSUBSCRIBE) -> bool:
    """Unsubscribe whoever the token names; True if this call changed anything (repeating is harmless).

    Raises:
        TokenInvalid: the token is not an unsubscribe token of this key.
    """
    subscriber = subscriber_for_unsubscribe(session, signer, token)
    if subscriber is None:
        return False
    leaving = {SubscriberStatus.PENDING, SubscriberStatus.ACTIVE}
    return _move(session, subscriber, leaving, SubscriberStatus.UNSUBSCRIBED, source)


def resubscribe_by_token(
    session: Session, settings: Settings, signer: Signer, token: str
) -> ConfirmationRequest | None:
    """After unsubscribing by mistake: send a confirmation to come back (consent is asked again).

    Raises:
        TokenInvalid: the token is not an unsubscribe token of this key.
    """
    subscriber = subscriber_for_unsubscribe(session, signer, token)
    if subscriber is None or subscriber.status == SubscriberStatus.ACTIVE:
        return None
    return request_confirmation(session, settings, subscriber, SOURCE_UNSUBSCRIBE)


def _within_limit(session: Session, settings: Settings, kind: str, value: str, limit: int, now: dt.datetime) -> None:
    if limit <= 0:
        return
    key = throttle.throttle_key(settings.secret_key, kind, value)
    if throttle.hit(session, key, SIGNUP_WINDOW_SECONDS, now) > limit:
        raise TooManySignups(
            f"too many sign-ups from this {'network' if kind == 'ip' else 'address'}: please try again in an hour"
        )


def _insert_pending(session: Session, key: str, reader: Reader, now: dt.datetime) -> int | None:
    """Create the subscriber with this key, pending; its id, or None when the key is taken. One atomic insert,
    so a race never doubles it (on PostgreSQL the loser waits for the winner's commit, then finds its row)."""
    statement = _INSERT_PENDING[session.get_bind().dialect.name == "postgresql"]
    created: int | None = session.connection().execute(statement, _pending_row(key, reader, now)).scalar_one_or_none()
    return created


def _insert_pending_requested(session: Session, key: str, reader: Reader, now: dt.datetime) -> tuple[int, int] | None:
    """On PostgreSQL, _insert_pending and the new subscriber's first events (_FIRST_EVENTS) in one statement,
    a round trip where they take three: (subscriber id, confirmation request id), or None when the key is taken."""
    parameters = {**_pending_row(key, reader, now), "event_source": SOURCE_FORM}
    row = session.connection().execute(_INSERT_PENDING_REQUESTED, parameters).first()
    return None if row is None else (row[0], row[1])


def _pending_row(key: str, reader: Reader, now: dt.datetime) -> dict[str, Any]:
    return {
        "email": reader.email,
        "email_key": key,
        "name": reader.name,
        "status": SubscriberStatus.PENDING,
        "source": SubscriberSource.FORM,
        "bounce_score": 0.0,
        "attributes": {},
        "created_at": now,
        "language": reader.language,
    }


# Built once, their values passed on execution: building a statement costs more than running it here.
_INSERT_PENDING = {
    is_postgresql: (postgresql.insert if is_postgresql else sqlite.insert)(Subscriber)
    .on_conflict_do_nothing(index_elements=[Subscriber.email_key])
    .returning(Subscriber.id)
    for is_postgresql in (False, True)
}
_INSERT_EVENT = insert(Event)
_INSERT_EVENT_RETURNING_ID = insert(Event).returning(Event.id)
# A new subscriber's events, in this order (a confirmation link refuses to work after a later change of
# status, so `created` must come first): the kind and the status each sets.
_FIRST_EVENTS = (("created", SubscriberStatus.PENDING), (CONFIRMATION_REQUESTED, None))


def _pending_requested_statement() -> Select[int, int]:
    """INSERT the subscriber ... ON CONFLICT DO NOTHING, then its _FIRST_EVENTS from the row it returned
    (none when the key was taken); selects the subscriber's id and the last event's (the request's)."""
    table = Subscriber.__table__
    row = {
        name: bindparam(name, type_=table.c[name].type) for name in _pending_row("", Reader("", None, None), utcnow())
    }
    created = (
        postgresql.insert(Subscriber)
        .values(row)
        .on_conflict_do_nothing(index_elements=[Subscriber.email_key])
        .returning(Subscriber.id)
        .cte("created")
    )
    columns = [Event.subscriber_id, Event.kind, Event.new_status, Event.source, Event.created_at]
    source, at = bindparam("event_source", type_=String), row["created_at"]
    # Each event inserted from the row the one before returned: their ids come in that order.
    earlier: Any = created
    for place, (kind, status) in enumerate(_FIRST_EVENTS):
        given = select(earlier.c[0], literal(kind), literal(status, String), source, at)
        earlier = insert(Event).from_select(columns, given).returning(Event.subscriber_id, Event.id).cte(f"e{place}")
    return select(earlier.c.subscriber_id, earlier.c.id)


_INSERT_PENDING_REQUESTED = _pending_requested_statement()


def _request_first_confirmation(
    session: Session,
    settings: Settings,
    subscriber_id: int,
    reader: Reader,
    topic_keys: Sequence[str],
    now: dt.datetime,
) -> ConfirmationRequest | None:
    """A new subscriber's topics, `created` event and first confirmation request, in plain statements: the
    hot path of the sign-up form, where nothing has to be read back (no confirmation was sent yet)."""
    connection = session.connection()
    logged = {"subscriber_id": subscriber_id, "source": SOURCE_FORM, "created_at": now}
    (created, status), (requested, _) = _FIRST_EVENTS
    connection.execute(_INSERT_EVENT, {"kind": created, "new_status": status, **logged})
    if topic_keys:
        topics.choose_topics_of(session, subscriber_id, topic_keys)
    if _over_daily_cap(settings, 0):
        return None
    request_id = connection.execute(_INSERT_EVENT_RETURNING_ID, {"kind": requested, **logged}).scalar_one()
    return ConfirmationRequest(subscriber_id, request_id, reader)


def _over_daily_cap(settings: Settings, confirmations_today: int) -> bool:
    """List-bombing: past `confirmation_daily_cap` mails a day, the same answer but no more mail to the address."""
    return confirmations_today >= settings.confirmation_daily_cap


def _move(
    session: Session,
    subscriber: Subscriber,
    from_statuses: set[SubscriberStatus],
    to: SubscriberStatus,
    source: str,
    reason: str | None = None,
) -> bool:
    """Change the status only if it is still one of `from_statuses` (a conditional UPDATE: races lose)."""
    now = utcnow()
    values: dict[str, Any] = {"status": to}
    if to == SubscriberStatus.ACTIVE:
        values["confirmed_at"] = now
    elif to == SubscriberStatus.UNSUBSCRIBED:
        values["unsubscribed_at"] = now
    old = subscriber.status
    result = session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber.id, Subscriber.status.in_([str(status) for status in from_statuses]))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(subscriber)
        return False
    session.refresh(subscriber)
    record_event(session, subscriber, "status", source, old_status=old, new_status=to, reason=reason, at=now)
    return True


def _confirmations_since(session: Session, subscriber_id: int, now: dt.datetime) -> int:
    since = now - dt.timedelta(seconds=CAP_WINDOW_SECONDS)
    count = session.scalar(
        select(func.count())
        .select_from(Event)
        .where(Event.subscriber_id == subscriber_id, Event.kind == CONFIRMATION_REQUESTED, Event.created_at > since)
    )
    return int(count or 0)


def _confirmation_ids(data: Any) -> tuple[int, int]:
    if isinstance(data, list) and len(data) == 2:
        return as_row_id(data[0]), as_row_id(data[1])
    raise TokenInvalid("this link is not valid")
