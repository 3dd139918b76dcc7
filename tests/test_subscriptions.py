"""Subscriber use cases: add, unsubscribe, forget, and the event log each leaves."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import subscriptions
from newsletter.addresses import clean_name, normalize_address
from newsletter.errors import InvalidAddress, SubscriberNotFound
from newsletter.models import Event, Subscriber, SubscriberStatus


def events_of(session: Session, subscriber: Subscriber) -> list[tuple[str, str | None, str | None]]:
    rows = session.scalars(select(Event).where(Event.subscriber_id == subscriber.id).order_by(Event.id))
    return [(event.kind, event.old_status, event.new_status) for event in rows]


def test_address_keeps_its_form_and_keys_case_insensitively() -> None:
    assert normalize_address("  Ann.Lee@Example.ORG ") == ("Ann.Lee@Example.ORG", "ann.lee@example.org")
    assert normalize_address("用户@例子.广告")[1] == "用户@例子.广告"


@pytest.mark.parametrize("bad", ["", "no-at-sign", "a@b", "a@@example.org", "a@example.org\r\nBcc: x@y.org", "x" * 400])
def test_invalid_addresses_are_refused(bad: str) -> None:
    with pytest.raises(InvalidAddress):
        normalize_address(bad)


def test_names_lose_control_characters() -> None:
    assert clean_name("Ann\r\nBcc: victim@example.org") == "Ann Bcc: victim@example.org"
    assert clean_name("  \t ") is None


def test_add_is_unique_on_the_normalized_address(session: Session) -> None:
    subscriber = subscriptions.add_subscriber(session, "Ann@Example.org", "Ann")
    with pytest.raises(subscriptions.SubscriberExists, match="already on the list"):
        subscriptions.add_subscriber(session, " ann@EXAMPLE.org")
    assert subscriber.status == SubscriberStatus.ACTIVE
    assert subscriber.confirmed_at is not None
    assert events_of(session, subscriber) == [("created", None, "active")]


def test_unsubscribe_keeps_the_record_and_logs(session: Session) -> None:
    subscriber = subscriptions.add_subscriber(session, "bob@example.org")
    subscriptions.unsubscribe(session, "BOB@example.org")
    subscriptions.unsubscribe(session, "bob@example.org")  # twice is harmless
    assert subscriber.status == SubscriberStatus.UNSUBSCRIBED
    assert subscriber.unsubscribed_at is not None
    assert events_of(session, subscriber) == [("created", None, "active"), ("status", "active", "unsubscribed")]


def test_unknown_address_is_a_clear_error(session: Session) -> None:
    with pytest.raises(SubscriberNotFound, match="nobody@example.org"):
        subscriptions.unsubscribe(session, "nobody@example.org")


def test_forget_erases_personal_data_everywhere(session: Session) -> None:
    subscriber = subscriptions.add_subscriber(session, "carol@example.org", "Carol", attributes={"city": "Oslo"})
    subscriptions.change_status(
        session,
        subscriber,
        SubscriberStatus.BOUNCED,
        "inbound",
        reason="550 carol@example.org unknown",
        payload={"to": "carol@example.org"},
    )
    subscriptions.forget(session, "carol@example.org")
    session.commit()
    assert subscriptions.find_subscriber(session, "carol@example.org") is None
    assert "carol" not in subscriber.email and subscriber.name is None and subscriber.attributes == {}
    for event in session.scalars(select(Event).where(Event.subscriber_id == subscriber.id)):
        assert "carol" not in f"{event.reason} {event.payload}"
    assert events_of(session, subscriber)[-1] == ("forgotten", "bounced", "unsubscribed")
    # The address may come back later as a new subscriber.
    subscriptions.add_subscriber(session, "carol@example.org")
