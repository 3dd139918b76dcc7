"""Double opt-in use cases: subscribe with its caps, confirm once, unsubscribe by token, re-subscribe."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from newsletter import database, optin, privacy, subscriptions, throttle, topics
from newsletter.errors import InvalidAddress
from newsletter.models import Event, Subscriber, SubscriberStatus, Throttle, utcnow
from newsletter.settings import Settings
from newsletter.tokens import Purpose, Signer, TokenExpired, TokenInvalid


@pytest.fixture
def signer(settings: Settings) -> Signer:
    return Signer(settings.secret_key)


def kinds(session: Session, subscriber_id: int) -> list[tuple[str, str | None]]:
    rows = session.scalars(select(Event).where(Event.subscriber_id == subscriber_id).order_by(Event.id))
    return [(event.kind, event.new_status) for event in rows]


def token_of(signer: Signer, request: optin.ConfirmationRequest | None) -> str:
    assert request is not None
    return optin.confirmation_token(signer, request)


def test_new_address_becomes_pending_with_a_confirmation(session: Session, settings: Settings) -> None:
    request = optin.subscribe(session, settings, " Ann@Example.org ", "Ann", client_ip="192.0.2.1")
    assert request is not None
    subscriber = session.get(Subscriber, request.subscriber_id)
    assert subscriber is not None
    assert (subscriber.email, subscriber.email_key, subscriber.status) == (
        "Ann@Example.org",
        "ann@example.org",
        "pending",
    )
    assert subscriber.source == "form"
    assert kinds(session, subscriber.id) == [("created", "pending"), (optin.CONFIRMATION_REQUESTED, None)]


def test_every_state_gets_the_right_mail(session: Session, settings: Settings) -> None:
    pending = optin.subscribe(session, settings, "pending@example.org")
    again = optin.subscribe(session, settings, "PENDING@example.org")
    assert pending is not None and again is not None
    assert again.subscriber_id == pending.subscriber_id and again.request_id > pending.request_id

    subscriptions.add_subscriber(session, "active@example.org")
    assert optin.subscribe(session, settings, "active@example.org") is None

    left = subscriptions.add_subscriber(session, "left@example.org")
    subscriptions.unsubscribe(session, "left@example.org")
    request = optin.subscribe(session, settings, "left@example.org")
    assert request is not None and request.subscriber_id == left.id
    assert left.status == SubscriberStatus.PENDING  # back to pending, nothing mailed until confirmed


@pytest.fixture(params=["sqlite", "postgresql"])
def either_engine(request: pytest.FixtureRequest) -> Engine:
    """The SQLite engine, then a fresh PostgreSQL one: a new address takes plain statements of each dialect."""
    return request.getfixturevalue("engine" if request.param == "sqlite" else "postgres_engine")  # type: ignore[no-any-return]


def test_new_address_stores_the_reader_as_the_form_gave_it(either_engine: Engine, settings: Settings) -> None:
    with database.transaction(either_engine) as session:
        request = optin.subscribe(session, settings, "Lin@Example.org", "  Lin  ", language="zh-CN")
        again = optin.subscribe(session, settings, "lin@example.org", "Lin Wei")
    assert request is not None and again is not None
    assert request.reader == optin.Reader("Lin@Example.org", "Lin", "zh-CN")
    assert again.reader == optin.Reader("Lin@Example.org", "Lin Wei", "zh-CN")
    with database.transaction(either_engine) as session:
        subscriber = session.get(Subscriber, request.subscriber_id)
        assert subscriber is not None
        assert (subscriber.name, subscriber.language, subscriber.status) == ("Lin Wei", "zh-CN", "pending")
        assert (subscriber.bounce_score, subscriber.attributes, subscriber.source) == (0.0, {}, "form")
        events = kinds(session, subscriber.id)
    requested = (optin.CONFIRMATION_REQUESTED, None)
    assert events == [("created", "pending"), requested, requested]


def test_a_new_address_confirms_with_its_topics_on_either_database(
    either_engine: Engine, settings: Settings, signer: Signer
) -> None:
    """PostgreSQL creates the reader and its first events in one statement: `created` must come before the
    request, or the link would take it for a later change and refuse to work."""
    with database.transaction(either_engine) as session:
        topics.define_topic(session, "models", "Models")
        request = optin.subscribe(session, settings, "wei@example.org", topic_keys=["models", "nonesuch"])
    token = token_of(signer, request)
    with database.transaction(either_engine) as session:
        assert request is not None
        assert topics.chosen_topics(session, request.subscriber_id) == ["models"]
        assert optin.confirm(session, signer, token, settings.confirm_max_age_seconds).status == "active"
        created, requested = session.scalars(
            select(Event.id).where(Event.subscriber_id == request.subscriber_id).order_by(Event.id).limit(2)
        )
        assert created < requested == request.request_id
    with database.transaction(either_engine) as session:
        capped = settings.replace(confirmation_daily_cap=0)
        assert optin.subscribe(session, capped, "capped@example.org") is None
        subscriber = session.scalars(select(Subscriber).where(Subscriber.email_key == "capped@example.org")).one()
        assert kinds(session, subscriber.id) == [("created", "pending")]


def test_new_address_under_a_zero_daily_cap_gets_no_mail(session: Session, settings: Settings) -> None:
    settings = settings.replace(confirmation_daily_cap=0)
    assert optin.subscribe(session, settings, "capped@example.org") is None
    subscriber = session.scalars(select(Subscriber)).one()
    assert kinds(session, subscriber.id) == [("created", "pending")]


def test_invalid_address_is_refused_before_anything_is_stored(session: Session, settings: Settings) -> None:
    with pytest.raises(InvalidAddress):
        optin.subscribe(session, settings, "not an address")
    assert session.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_daily_cap_stops_confirmation_mails(session: Session, settings: Settings) -> None:
    settings = settings.replace(confirmation_daily_cap=2, signup_limit_per_address=0)
    now = utcnow()
    sent = [optin.subscribe(session, settings, "bomb@example.org", now=now) for _ in range(4)]
    assert [request is not None for request in sent] == [True, True, False, False]
    tomorrow = now + dt.timedelta(hours=25)
    assert optin.subscribe(session, settings, "bomb@example.org", now=tomorrow) is not None


def test_rate_limit_per_address_and_per_ip(session: Session, settings: Settings) -> None:
    settings = settings.replace(signup_limit_per_address=2, signup_limit_per_ip=3)
    optin.subscribe(session, settings, "a@example.org", client_ip="192.0.2.7")
    optin.subscribe(session, settings, "a@example.org", client_ip="192.0.2.8")
    with pytest.raises(optin.TooManySignups, match="address"):
        optin.subscribe(session, settings, "a@example.org", client_ip="192.0.2.9")
    optin.subscribe(session, settings, "b@example.org", client_ip="192.0.2.7")
    optin.subscribe(session, settings, "c@example.org", client_ip="192.0.2.7")
    with pytest.raises(optin.TooManySignups, match="network"):
        optin.subscribe(session, settings, "d@example.org", client_ip="192.0.2.7")
    stored = session.scalars(select(Throttle.key)).all()
    assert stored and not any("192.0.2" in key or "example.org" in key for key in stored)


def test_throttle_windows_reset_and_old_rows_are_swept(session: Session) -> None:
    now = utcnow()
    assert throttle.hit(session, "k", 3600, now) == 1
    assert throttle.hit(session, "k", 3600, now) == 2
    later = now + dt.timedelta(hours=1)
    assert throttle.hit(session, "k", 3600, later) == 1
    throttle.hit(session, "other", 3600, now + dt.timedelta(days=3))
    assert session.scalar(select(func.count()).select_from(Throttle)) == 1


def test_confirm_activates_once(session: Session, settings: Settings, signer: Signer) -> None:
    token = token_of(signer, optin.subscribe(session, settings, "ann@example.org"))
    age = settings.confirm_max_age_seconds
    assert optin.check_confirmation(session, signer, token, age).status == SubscriberStatus.PENDING
    subscriber = optin.confirm(session, signer, token, age)
    assert subscriber.status == SubscriberStatus.ACTIVE and subscriber.confirmed_at is not None
    with pytest.raises(optin.TokenUsed):
        optin.confirm(session, signer, token, age)
    assert kinds(session, subscriber.id)[-1] == ("status", "active")


def test_old_confirm_link_cannot_undo_a_later_unsubscribe(session: Session, settings: Settings, signer: Signer) -> None:
    first = token_of(signer, optin.subscribe(session, settings, "ann@example.org"))
    second = token_of(signer, optin.subscribe(session, settings, "ann@example.org"))
    subscriber = optin.confirm(session, signer, second, settings.confirm_max_age_seconds)
    subscriptions.unsubscribe(session, "ann@example.org")
    with pytest.raises(optin.TokenUsed):
        optin.confirm(session, signer, first, settings.confirm_max_age_seconds)
    fresh = token_of(signer, optin.subscribe(session, settings, "ann@example.org"))
    with pytest.raises(optin.TokenUsed):  # a link from before the re-subscribe stays dead
        optin.confirm(session, signer, second, settings.confirm_max_age_seconds)
    assert optin.confirm(session, signer, fresh, settings.confirm_max_age_seconds) is subscriber


def test_confirm_tokens_expire_and_are_bound_to_their_purpose(
    session: Session, settings: Settings, signer: Signer
) -> None:
    request = optin.subscribe(session, settings, "ann@example.org")
    token = token_of(signer, request)
    with pytest.raises(TokenExpired):
        optin.confirm(session, signer, token, max_age_seconds=-1)
    assert request is not None
    unsubscribe_token = signer.dumps_permanent(Purpose.UNSUBSCRIBE, request.subscriber_id)
    for bad in (unsubscribe_token, token[:-2], "garbage", signer.dumps(Purpose.CONFIRM, "x")):
        with pytest.raises(TokenInvalid):
            optin.confirm(session, signer, bad, settings.confirm_max_age_seconds)
    with pytest.raises(TokenInvalid):  # and a confirm token can never unsubscribe
        optin.unsubscribe_by_token(session, signer, token)


def test_unsubscribe_by_token_is_idempotent(session: Session, signer: Signer) -> None:
    subscriber = subscriptions.add_subscriber(session, "ann@example.org")
    token = signer.dumps_permanent(Purpose.UNSUBSCRIBE, subscriber.id)
    assert optin.unsubscribe_by_token(session, signer, token, optin.SOURCE_ONE_CLICK) is True
    assert optin.unsubscribe_by_token(session, signer, token, optin.SOURCE_ONE_CLICK) is False
    assert subscriber.status == SubscriberStatus.UNSUBSCRIBED
    assert kinds(session, subscriber.id) == [("created", "active"), ("status", "unsubscribed")]
    assert optin.unsubscribe_by_token(session, signer, signer.dumps_permanent(Purpose.UNSUBSCRIBE, 999)) is False


def test_resubscribe_asks_for_consent_again(session: Session, settings: Settings, signer: Signer) -> None:
    subscriber = subscriptions.add_subscriber(session, "ann@example.org")
    token = signer.dumps_permanent(Purpose.UNSUBSCRIBE, subscriber.id)
    optin.unsubscribe_by_token(session, signer, token)
    request = optin.resubscribe_by_token(session, settings, signer, token)
    assert request is not None and subscriber.status == SubscriberStatus.PENDING
    optin.confirm(session, signer, token_of(signer, request), settings.confirm_max_age_seconds)
    assert subscriber.status == SubscriberStatus.ACTIVE
    assert optin.resubscribe_by_token(session, settings, signer, token) is None


def test_personal_data_and_erase(session: Session, settings: Settings, signer: Signer) -> None:
    request = optin.subscribe(session, settings, "ann@example.org", "Ann")
    assert request is not None
    token = signer.dumps_permanent(Purpose.PREFERENCES, request.subscriber_id)
    subscriber = privacy.subscriber_for_preferences(session, signer, token)
    data = privacy.personal_data(session, subscriber)
    assert data["email"] == "ann@example.org" and data["name"] == "Ann" and data["status"] == "pending"
    assert [event["kind"] for event in data["events"]] == ["created", optin.CONFIRMATION_REQUESTED]
    privacy.erase(session, subscriber)
    assert subscriber.email.endswith("@forgotten.invalid") and subscriber.name is None
    assert subscriptions.find_subscriber(session, "ann@example.org") is None
    with pytest.raises(TokenInvalid):
        privacy.subscriber_for_preferences(session, signer, token + "x")
