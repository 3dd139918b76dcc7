"""The bounce policy: hard bounces suppress at once, soft ones through a decaying score, each logged once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from newsletter import database
from newsletter.bounces import (
    BouncePolicy,
    Feedback,
    FeedbackKind,
    apply_feedback,
    record_bounce,
    record_complaint,
)
from newsletter.cli import main
from newsletter.models import Delivery, Event, Issue, Subscriber, SubscriberStatus, utcnow
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from newsletter.suppressions import bounce_report

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
POLICY = BouncePolicy(soft_threshold=3.0, half_life_days=14.0)


def make_delivery(session: Session, subscriber: Subscriber, slug: str = "first") -> Delivery:
    """An issue (made on first use) and one sent delivery of it to `subscriber`."""
    issue = session.scalar(select(Issue).where(Issue.slug == slug))
    if issue is None:
        issue = Issue(slug=slug, subject=slug, source_text="", source_hash="0" * 64, html="", text="")
        session.add(issue)
        session.flush()
    delivery = Delivery(
        issue_id=issue.id,
        subscriber_id=subscriber.id,
        status="sent",
        message_id=f"<{issue.id}.{subscriber.id}@example.org>",
    )
    session.add(delivery)
    session.flush()
    return delivery


def events_of(session: Session, subscriber: Subscriber, kind: str) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.subscriber_id == subscriber.id, Event.kind == kind)))


def test_hard_bounce_suppresses_at_once_and_logs_the_raw_reason(session: Session) -> None:
    reader = add_subscriber(session, "reader@example.com")
    outcome = record_bounce(
        session,
        reader,
        hard=True,
        source="smtp",
        reason="550 5.1.1 <reader@example.com>: Recipient address rejected: User unknown",
        external_id="smtp:1",
    )
    assert outcome.suppressed
    assert reader.status == SubscriberStatus.BOUNCED
    [bounce] = events_of(session, reader, FeedbackKind.HARD_BOUNCE)
    assert bounce.reason is not None and "User unknown" in bounce.reason
    [status] = events_of(session, reader, "status")
    assert (status.old_status, status.new_status, status.source) == ("active", "bounced", "smtp")


def test_the_same_report_twice_is_recorded_once(session: Session) -> None:
    reader = add_subscriber(session, "reader@example.com")
    for _ in range(2):
        record_bounce(
            session,
            reader,
            hard=False,
            source="dsn",
            reason="452 4.2.2 mailbox full",
            external_id="message:abc",
            at=T0,
            policy=POLICY,
        )
    assert len(events_of(session, reader, FeedbackKind.SOFT_BOUNCE)) == 1
    assert reader.bounce_score == pytest.approx(1.0)


def test_soft_bounces_cross_the_threshold_when_close_together(session: Session) -> None:
    reader = add_subscriber(session, "reader@example.com")
    for day in range(3):
        outcome = record_bounce(
            session,
            reader,
            hard=False,
            source="dsn",
            reason="mailbox full",
            external_id=f"m{day}",
            at=T0 + dt.timedelta(days=day),
            policy=POLICY,
        )
    # 1 decayed over a day, plus 1, decayed again, plus 1: just under 3.
    assert reader.bounce_score == pytest.approx(0.5 ** (2 / 14) + 0.5 ** (1 / 14) + 1)
    assert reader.status == SubscriberStatus.ACTIVE and not outcome.suppressed
    outcome = record_bounce(
        session,
        reader,
        hard=False,
        source="dsn",
        reason="mailbox full",
        external_id="m3",
        at=T0 + dt.timedelta(days=3),
        policy=POLICY,
    )
    assert outcome.suppressed and reader.status == SubscriberStatus.BOUNCED


def test_soft_bounces_far_apart_decay_and_never_suppress(session: Session) -> None:
    reader = add_subscriber(session, "reader@example.com")
    for month in range(12):
        record_bounce(
            session,
            reader,
            hard=False,
            source="dsn",
            reason="mailbox full",
            external_id=f"m{month}",
            at=T0 + dt.timedelta(days=30 * month),
            policy=POLICY,
        )
    assert reader.status == SubscriberStatus.ACTIVE
    assert reader.bounce_score < 1.5


def test_weekly_soft_bounces_suppress_after_some_weeks(session: Session) -> None:
    reader = add_subscriber(session, "reader@example.com")
    weeks = 0
    while reader.status == SubscriberStatus.ACTIVE:
        record_bounce(
            session,
            reader,
            hard=False,
            source="dsn",
            reason="mailbox full",
            external_id=f"w{weeks}",
            at=T0 + dt.timedelta(weeks=weeks),
            policy=POLICY,
        )
        weeks += 1
        assert weeks < 20, "a mailbox that is always full must be dropped some day"
    assert weeks == 7


def test_a_delivery_counts_once_for_soft_bounces_but_a_later_failure_is_hard(session: Session) -> None:
    reader = add_subscriber(session, "reader@example.com")
    delivery = make_delivery(session, reader)
    for hours in (4, 8, 12, 16):
        record_bounce(
            session,
            reader,
            hard=False,
            source="dsn",
            reason="delayed",
            delivery_id=delivery.id,
            external_id=f"d{hours}",
            at=T0 + dt.timedelta(hours=hours),
            policy=POLICY,
        )
    assert reader.bounce_score == pytest.approx(1.0, rel=0.01)
    assert reader.status == SubscriberStatus.ACTIVE
    record_bounce(
        session,
        reader,
        hard=True,
        source="dsn",
        reason="failed",
        delivery_id=delivery.id,
        external_id="final",
        at=T0 + dt.timedelta(days=5),
        policy=POLICY,
    )
    assert reader.status == SubscriberStatus.BOUNCED


def test_an_unsubscribed_reader_who_bounces_stays_unsubscribed(session: Session) -> None:
    reader = add_subscriber(session, "reader@example.com", status=SubscriberStatus.UNSUBSCRIBED)
    outcome = record_bounce(session, reader, hard=True, source="dsn", reason="5.1.1")
    assert not outcome.suppressed and reader.status == SubscriberStatus.UNSUBSCRIBED
    assert len(events_of(session, reader, FeedbackKind.HARD_BOUNCE)) == 1


def test_complaint_outranks_unsubscribed(session: Session) -> None:
    reader = add_subscriber(session, "reader@example.com", status=SubscriberStatus.UNSUBSCRIBED)
    outcome = record_complaint(session, reader, source="arf", reason="abuse", external_id="arf:1")
    assert outcome.suppressed and reader.status == SubscriberStatus.COMPLAINED
    assert record_complaint(session, reader, source="arf", reason="abuse", external_id="arf:1").duplicate


def test_feedback_finds_the_subscriber_by_delivery_then_address(session: Session) -> None:
    reader = add_subscriber(session, "Reader@Example.com")
    other = add_subscriber(session, "other@example.com")
    delivery = make_delivery(session, reader)
    hard = Feedback(FeedbackKind.HARD_BOUNCE, "dsn", "5.1.1", "x:1", email="other@example.com", delivery_id=delivery.id)
    outcome = apply_feedback(session, hard, POLICY)
    assert outcome is not None and outcome.event is not None
    # The verified delivery wins over an address a report claims.
    assert reader.status == SubscriberStatus.BOUNCED and other.status == SubscriberStatus.ACTIVE
    assert (outcome.event.delivery_id, outcome.event.issue_id) == (delivery.id, delivery.issue_id)
    complaint = Feedback(FeedbackKind.COMPLAINT, "ses", "abuse", "x:2", email="OTHER@example.com")
    assert apply_feedback(session, complaint, POLICY) is not None
    assert other.status == SubscriberStatus.COMPLAINED


@pytest.mark.parametrize("email", ["stranger@example.com", "not an address", "", None])
def test_feedback_about_no_subscriber_is_none(session: Session, email: str | None) -> None:
    add_subscriber(session, "reader@example.com")
    feedback = Feedback(FeedbackKind.HARD_BOUNCE, "ses", "5.1.1", "x:1", email=email)
    assert apply_feedback(session, feedback, POLICY) is None
    assert session.scalar(select(func.count()).select_from(Event).where(Event.kind == "hard_bounce")) == 0


def test_unsubscribe_request_unsubscribes_once(session: Session) -> None:
    reader = add_subscriber(session, "reader@example.com")
    request = Feedback(
        FeedbackKind.UNSUBSCRIBE, "mailto", "mail to the unsubscribe address", "message:1", subscriber_id=reader.id
    )
    assert apply_feedback(session, request, POLICY) is not None
    assert reader.status == SubscriberStatus.UNSUBSCRIBED
    again = apply_feedback(session, request, POLICY)
    assert again is not None and again.duplicate


def test_policy_from_settings() -> None:
    policy = BouncePolicy.from_settings(Settings(bounce_soft_threshold=5, bounce_score_half_life_days=7))
    assert policy == BouncePolicy(5, 7)
    assert policy.decayed(4.0, T0, T0 + dt.timedelta(days=7)) == pytest.approx(2.0)
    assert policy.decayed(4.0, T0, T0 - dt.timedelta(days=7)) == pytest.approx(4.0)


def test_report_groups_by_reason_and_domain_and_lists_the_suppressed(session: Session) -> None:
    ann = add_subscriber(session, "ann@example.com")
    bob = add_subscriber(session, "bob@example.net")
    cho = add_subscriber(session, "cho@example.com")
    record_bounce(
        session, ann, hard=True, source="dsn", reason="5.1.1 smtp; 550 User unknown", reason_name="userunknown"
    )
    record_bounce(session, bob, source="dsn", reason="4.2.2 mailbox full", reason_name="mailboxfull")
    record_complaint(session, cho, source="arf", reason="abuse", payload={"feedback_type": "abuse"})
    old = add_subscriber(session, "old@example.org")
    record_bounce(
        session, old, hard=True, source="dsn", reason="5.1.1", reason_name="userunknown", at=T0 - dt.timedelta(days=400)
    )
    report = bounce_report(session, utcnow() - dt.timedelta(days=30))
    # Dated by when we received each report: the one whose own Date is 400 days old arrived now.
    assert {key: (c.hard, c.soft, c.complaints) for key, c in report.by_reason.items()} == {
        "userunknown": (2, 0, 0),
        "mailboxfull": (0, 1, 0),
        "complaint (abuse)": (0, 0, 1),
    }
    assert {key: (c.hard, c.soft, c.complaints) for key, c in report.by_domain.items()} == {
        "example.com": (1, 0, 1),
        "example.net": (0, 1, 0),
        "example.org": (1, 0, 0),
    }
    assert [(row.email, row.status) for row in report.suppressed] == [
        ("ann@example.com", "bounced"),
        ("cho@example.com", "complained"),
        ("old@example.org", "bounced"),
    ]
    assert report.suppressed[2].reported_at == T0 - dt.timedelta(days=400)
    assert report.suppressed[2].at > utcnow() - dt.timedelta(minutes=5)


def test_bounces_command_shows_the_report(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    with database.transaction(engine) as session:
        reader = add_subscriber(session, "reader@example.com")
        record_bounce(session, reader, hard=True, source="smtp", reason="5.1.1 User unknown", reason_name="userunknown")
    config = tmp_path / "newsletter.toml"
    config.write_text(f'database_url = "{settings.database_url}"\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "bounces", "--since", "7"])
    assert result.exit_code == 0, result.output
    assert "userunknown" in result.output and "reader@example.com" in result.output
    assert "example.com" in result.output and "Suppressed: 1" in result.output
