"""What is stored about one subscriber, as they may see, export and erase it (GDPR art. 15, 20, 17)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.errors import NewsletterError
from newsletter.models import Delivery, Event, Issue, Subscriber
from newsletter.subscriptions import forget, is_forgotten
from newsletter.tags import tags_of
from newsletter.tokens import Purpose, Signer, TokenInvalid, as_row_id
from newsletter.topics import chosen_topics

SOURCE_PREFERENCES = "preferences-page"


class SubscriberErased(NewsletterError):
    """The link names a subscriber whose data was erased: there is nothing left to show."""


def subscriber_for_preferences(session: Session, signer: Signer, token: str) -> Subscriber:
    """The subscriber a preferences token names (these tokens never expire).

    Raises:
        TokenInvalid: the token is not a preferences token of this key, or names nobody.
        SubscriberErased: the subscriber's data was erased; the anonymous row left behind is nobody's.
    """
    subscriber = session.get(Subscriber, as_row_id(signer.loads_permanent(Purpose.PREFERENCES, token)))
    if subscriber is None:
        raise TokenInvalid("this link names nobody on the list")
    if is_forgotten(subscriber):
        raise SubscriberErased("the data behind this link was erased at your request; nothing about you is kept")
    return subscriber


def personal_data(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """Everything stored about a subscriber, as plain JSON-ready data."""
    events = session.scalars(select(Event).where(Event.subscriber_id == subscriber.id).order_by(Event.id))
    deliveries = session.execute(
        select(Issue.subject, Delivery.status, Delivery.sent_at)
        .join(Issue, Issue.id == Delivery.issue_id)
        .where(Delivery.subscriber_id == subscriber.id)
        .order_by(Delivery.id)
    )
    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "status": subscriber.status,
        "source": subscriber.source,
        "attributes": subscriber.attributes,
        "created_at": _iso(subscriber.created_at),
        "confirmed_at": _iso(subscriber.confirmed_at),
        "unsubscribed_at": _iso(subscriber.unsubscribed_at),
        "bounce_score": subscriber.bounce_score,
        "language": subscriber.language,
        "paused_until": _iso(subscriber.paused_until),
        "tags": tags_of(session, subscriber.id),
        "topics": chosen_topics(session, subscriber.id),
        "events": [
            {
                "at": _iso(event.created_at),
                "kind": event.kind,
                "old_status": event.old_status,
                "new_status": event.new_status,
                "source": event.source,
                "reason": event.reason,
            }
            for event in events
        ],
        "deliveries": [
            {"issue": subject, "status": status, "sent_at": _iso(sent_at)} for subject, status, sent_at in deliveries
        ],
    }


def erase(session: Session, subscriber: Subscriber) -> None:
    """Erase the subscriber's personal data, keeping an anonymous row so they are never mailed again."""
    forget(session, subscriber.email, source=SOURCE_PREFERENCES)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
