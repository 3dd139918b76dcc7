"""Sending end to end on SQLite with the in-process worker, against aiosmtpd with injected faults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from newsletter import campaign, database, ledger
from newsletter.models import Delivery, DeliveryStatus, Event, Issue, IssueStatus, Subscriber, SubscriberStatus
from newsletter.queue import Queue
from newsletter.render import RenderedIssue, render_issue
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from tests.mailserver import DROP, MailSink

ISSUE_TEXT = """---
subject: Weekly notes
slug: weekly-1
---

# Weekly notes

Hello, this is *the* issue. [A link](https://example.org/a).
"""


@pytest.fixture
def smtp_settings(settings: Settings, smtpd: MailSink) -> Settings:
    """Settings that send to the test SMTP server, retrying temporary failures after a fraction of a second."""
    return settings.replace(
        smtp_host="127.0.0.1",
        smtp_port=smtpd.port,
        retry_delay_seconds=0.05,
        max_attempts=3,
        lease_seconds=30,
        smtp_connections=2,
        batch_size=3,
    )


def rendered(settings: Settings, text: str = ISSUE_TEXT) -> RenderedIssue:
    return render_issue(text, settings)


def add_people(engine: Engine, count: int) -> list[str]:
    addresses = [f"reader{number}@example.com" for number in range(count)]
    with database.transaction(engine) as session:
        for address in addresses:
            add_subscriber(session, address, name=f"Reader {address[6:-12]}")
    return addresses


def send(engine: Engine, settings: Settings, issue: RenderedIssue, force: bool = False) -> ledger.Counts:
    return campaign.send_issue(engine, Queue(settings, engine), issue, force=force)


def test_send_reaches_every_active_subscriber_once(
    engine: Engine, smtp_settings: Settings, smtpd: MailSink, session: Session
) -> None:
    addresses = add_people(engine, 7)
    counts = send(engine, smtp_settings, rendered(smtp_settings))
    assert counts[DeliveryStatus.SENT] == 7 and counts.remaining == 0
    assert sorted(message.recipient for message in smtpd.received) == sorted(addresses)
    issue = session.scalars(select(Issue)).one()
    assert issue.status == IssueStatus.SENT and issue.sent_at is not None
    first = smtpd.to(addresses[0])[0]
    assert first.header("Message-ID") == session.scalar(
        select(Delivery.message_id)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Subscriber.email == addresses[0])
    )
    assert first.mail_from.startswith("bounces+") and first.mail_from.endswith("@example.org")
    assert "One-Click" in first.header("List-Unsubscribe-Post")


def test_sending_again_resumes_and_sends_nothing_twice(
    engine: Engine, smtp_settings: Settings, smtpd: MailSink
) -> None:
    add_people(engine, 4)
    issue = rendered(smtp_settings)
    send(engine, smtp_settings, issue)
    add_people_later = ["late@example.com"]
    with database.transaction(engine) as session:
        add_subscriber(session, add_people_later[0])
    counts = send(engine, smtp_settings, issue)
    assert len(smtpd.received) == 4, "an issue already out is not sent again, not even to newcomers"
    assert counts.total == 4


def test_a_changed_file_under_the_same_slug_is_refused_unless_forced(
    engine: Engine, smtp_settings: Settings, smtpd: MailSink
) -> None:
    add_people(engine, 2)
    campaign.start(engine, rendered(smtp_settings))
    changed = rendered(smtp_settings, ISSUE_TEXT.replace("Hello", "Hi"))
    with pytest.raises(ledger.IssueChanged, match="--force"):
        send(engine, smtp_settings, changed)
    assert smtpd.received == []
    send(engine, smtp_settings, changed, force=True)
    assert all(b"Hi, this is" in message.data for message in smtpd.received) and len(smtpd.received) == 2


def test_temporary_failures_are_retried_until_accepted(
    engine: Engine, smtp_settings: Settings, smtpd: MailSink, session: Session
) -> None:
    addresses = add_people(engine, 4)
    smtpd.fail(addresses[0], "RCPT", "451 4.7.1 greylisted, try again later", times=1)
    smtpd.fail(addresses[1], "DATA", "452 4.3.1 insufficient system storage", times=1)
    smtpd.fail(addresses[2], "DATA", "552 5.3.4 message too big for now", times=1)
    smtpd.fail(addresses[3], "RCPT", "421 4.7.0 too many connections, slow down", times=1)
    counts = send(engine, smtp_settings, rendered(smtp_settings))
    assert counts[DeliveryStatus.SENT] == 4
    for address in addresses:
        assert len(smtpd.to(address)) == 1
        assert smtpd.attempts[address] == 2
    rows = session.execute(
        select(Subscriber.email, Delivery.attempts).join(Delivery, Delivery.subscriber_id == Subscriber.id)
    ).all()
    attempts = {email: tries for email, tries in rows}
    assert [attempts[address] for address in addresses[:3]] == [2, 2, 2], "the reader's temporary failures count"
    assert attempts[addresses[3]] == 1, "421 is the server closing the channel: not the reader's try"


def test_a_connection_dropped_mid_data_is_retried(engine: Engine, smtp_settings: Settings, smtpd: MailSink) -> None:
    addresses = add_people(engine, 3)
    smtpd.fail(addresses[1], "DATA", DROP, times=1)
    counts = send(engine, smtp_settings, rendered(smtp_settings))
    assert counts[DeliveryStatus.SENT] == 3
    assert [len(smtpd.to(address)) for address in addresses] == [1, 1, 1]


def test_a_permanent_refusal_of_the_address_bounces_the_subscriber_and_a_spam_block_does_not(
    engine: Engine, smtp_settings: Settings, smtpd: MailSink, session: Session
) -> None:
    addresses = add_people(engine, 3)
    smtpd.fail(addresses[0], "RCPT", "550 5.1.1 no such user")
    smtpd.fail(addresses[1], "DATA", "554 5.7.1 rejected as spam")
    counts = send(engine, smtp_settings, rendered(smtp_settings))
    assert (counts[DeliveryStatus.BOUNCED], counts[DeliveryStatus.FAILED], counts[DeliveryStatus.SENT]) == (1, 1, 1)
    assert smtpd.attempts[addresses[0]] == 1, "a permanent failure is never retried"
    by_email = {s.email: s for s in session.scalars(select(Subscriber))}
    assert by_email[addresses[0]].status == SubscriberStatus.BOUNCED
    assert by_email[addresses[1]].status == SubscriberStatus.ACTIVE, "the content was refused, not the address"
    assert by_email[addresses[2]].status == SubscriberStatus.ACTIVE
    kinds = session.scalars(select(Event.kind).where(Event.delivery_id.is_not(None))).all()
    assert sorted(kinds) == ["hard_bounce"]
    failures = ledger.failures(session, session.scalars(select(Issue.id)).one())
    assert {failure.email: failure.reply[:3] for failure in failures} == {addresses[0]: "550", addresses[1]: "554"}


def test_temporary_failures_give_up_after_max_attempts(
    engine: Engine, smtp_settings: Settings, smtpd: MailSink, session: Session
) -> None:
    addresses = add_people(engine, 2)
    smtpd.fail(addresses[0], "RCPT", "450 4.2.1 mailbox busy")
    counts = send(engine, smtp_settings, rendered(smtp_settings))
    assert (counts[DeliveryStatus.FAILED], counts[DeliveryStatus.SENT]) == (1, 1)
    assert smtpd.attempts[addresses[0]] == smtp_settings.max_attempts
    subscriber = session.scalars(select(Subscriber).where(Subscriber.email == addresses[0])).one()
    assert subscriber.status == SubscriberStatus.ACTIVE, "a temporary failure is not a bounce"
    smtpd.faults.clear()
    issue_slug = session.scalars(select(Issue.slug)).one()
    queue = Queue(smtp_settings, engine)
    counts = campaign.resend_failed(engine, queue, issue_slug)
    assert counts[DeliveryStatus.SENT] == 2 and len(smtpd.to(addresses[0])) == 1


def test_who_leaves_before_the_worker_reaches_them_is_skipped(
    engine: Engine, smtp_settings: Settings, smtpd: MailSink
) -> None:
    addresses = add_people(engine, 3)
    issue_id = campaign.start(engine, rendered(smtp_settings))
    with database.transaction(engine) as session:
        subscriber = session.scalars(select(Subscriber).where(Subscriber.email == addresses[1])).one()
        subscriber.status = SubscriberStatus.UNSUBSCRIBED
    counts = send(engine, smtp_settings, rendered(smtp_settings))
    assert (counts[DeliveryStatus.SENT], counts[DeliveryStatus.SKIPPED]) == (2, 1)
    assert smtpd.to(addresses[1]) == [] and issue_id


def test_dry_run_composes_every_message_and_changes_nothing(
    engine: Engine, smtp_settings: Settings, smtpd: MailSink, session: Session
) -> None:
    add_people(engine, 5)
    report = campaign.dry_run(engine, smtp_settings, rendered(smtp_settings))
    assert report.messages == 5 and report.total_bytes > 5 * 500
    assert smtpd.received == [] and session.scalars(select(Issue)).all() == []


def test_test_send_goes_to_the_given_addresses_only(
    engine: Engine, smtp_settings: Settings, smtpd: MailSink, session: Session
) -> None:
    add_people(engine, 3)
    outcomes = campaign.send_test(smtp_settings, rendered(smtp_settings), ["editor@example.org"])
    assert [outcome.accepted for outcome in outcomes] == [True]
    assert [message.recipient for message in smtpd.received] == ["editor@example.org"]
    assert smtpd.received[0].message["Subject"].startswith("[TEST] ")
    assert session.scalars(select(Delivery)).all() == []


def test_sample_issue_renders_and_sends(engine: Engine, smtp_settings: Settings, smtpd: MailSink) -> None:
    add_people(engine, 2)
    sample = Path(__file__).resolve().parents[1] / "newsletter" / "samples" / "ai-briefing-2020-11-06.md"
    issue = render_issue(sample.read_text(encoding="utf-8"), smtp_settings, slug=sample.stem)
    counts = send(engine, smtp_settings, issue)
    assert counts[DeliveryStatus.SENT] == 2
    assert smtpd.received[0].message["Subject"]


def test_a_throttling_server_never_outlives_a_lease_into_duplicates(
    engine: Engine, smtp_settings: Settings, smtpd: MailSink, session: Session
) -> None:
    """Rows a slowed-down worker would reach after half its lease go back to the queue instead."""
    addresses = add_people(engine, 6)
    smtpd.fail(addresses[0], "RCPT", "421 4.7.0 slow down", times=1)
    smtpd.fail(addresses[1], "RCPT", "421 4.7.0 slow down", times=1)
    # One thread pauses 0.5 s then 1 s on the two throttles; its lease (1 s) would run out before it
    # reaches its third row, which the other thread would then take when `send` re-enqueues stalled rows.
    short_lease = smtp_settings.replace(lease_seconds=1.0, smtp_connections=2, batch_size=3)
    counts = send(engine, short_lease, rendered(short_lease))
    assert counts[DeliveryStatus.SENT] == 6
    assert [len(smtpd.to(address)) for address in addresses] == [1] * 6


def test_the_in_process_queue_holds_a_few_batches_not_the_whole_list(
    engine: Engine, smtp_settings: Settings, smtpd: MailSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_people(engine, 90)
    queue = Queue(smtp_settings, engine)
    backlog: list[int] = []
    enqueue = queue.broker.enqueue

    def counted(message: Any, *, delay: int | None = None) -> Any:
        enqueued = enqueue(message, delay=delay)
        backlog.append(queue.backlog())
        return enqueued

    monkeypatch.setattr(queue.broker, "enqueue", counted)
    counts = campaign.send_issue(engine, queue, rendered(smtp_settings))
    assert counts[DeliveryStatus.SENT] == 90 and len(smtpd.received) == 90
    assert len(backlog) >= 90 // smtp_settings.batch_size
    assert max(backlog) <= campaign.EMBEDDED_BACKLOG_PER_THREAD * smtp_settings.smtp_connections
