"""The queue around the sender: the global rate limit, slowing down on throttling, one-off messages."""

from __future__ import annotations

import time

from sqlalchemy import Engine, select

from newsletter import campaign, database, outbox
from newsletter.lanes import THROTTLE_FIRST_PAUSE_SECONDS, THROTTLE_MAX_PAUSE_SECONDS, Pace
from newsletter.leases import GROUP_SIZE
from newsletter.models import DeliveryStatus, OutboundMessage
from newsletter.queue import Queue
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.smtp import CONNECTION_LOST, Reply
from newsletter.subscriptions import add_subscriber
from tests.mailserver import MailSink

ISSUE = "---\nsubject: Paced notes\nslug: paced-1\n---\n\n# Paced notes\n\nHello.\n"
MESSAGE = b"From: editor@example.org\r\nTo: new@example.com\r\nSubject: Confirm\r\n\r\nPlease confirm.\r\n"


def test_rate_limit_holds_across_worker_threads(engine: Engine, settings: Settings, smtpd: MailSink) -> None:
    paced = settings.replace(
        smtp_host="127.0.0.1", smtp_port=smtpd.port, rate_limit=10.0, smtp_connections=4, batch_size=5
    )
    with database.transaction(engine) as session:
        for number in range(35):
            add_subscriber(session, f"paced{number}@example.com")
    started = time.monotonic()
    counts = campaign.send_issue(engine, Queue(paced, engine), render_issue(ISSUE, paced))
    elapsed = time.monotonic() - started
    assert counts[DeliveryStatus.SENT] == 35
    # 10 per one-second bucket: 35 messages touch at least four buckets, two of them whole.
    assert elapsed >= 2.0, f"35 messages at 10/s took only {elapsed:.2f} s"


def test_pace_slows_down_while_the_server_throttles_and_recovers() -> None:
    pace = Pace()
    pace.after(Reply(250, "ok"))
    assert pace.pause_seconds == 0
    pace.after(Reply(421, "slow down"))
    assert pace.pause_seconds == THROTTLE_FIRST_PAUSE_SECONDS
    pace.after(Reply(CONNECTION_LOST, "dropped"))
    assert pace.pause_seconds == 2 * THROTTLE_FIRST_PAUSE_SECONDS
    for _ in range(20):
        pace.after(Reply(451, "later"))
    assert pace.pause_seconds == THROTTLE_MAX_PAUSE_SECONDS
    pace.after(Reply(550, "no such user"))
    assert pace.pause_seconds == THROTTLE_MAX_PAUSE_SECONDS / 2, "a refusal is not a throttle, but an answer"
    for _ in range(20):
        pace.after(Reply(250, "ok"))
    assert pace.pause_seconds == 0


def test_a_one_off_message_goes_through_the_same_queue_and_is_retried(
    engine: Engine, settings: Settings, smtpd: MailSink
) -> None:
    quick = settings.replace(smtp_host="127.0.0.1", smtp_port=smtpd.port, retry_delay_seconds=0.05)
    smtpd.fail("new@example.com", "RCPT", "451 4.7.1 greylisted", times=1)
    queue = Queue(quick, engine)
    queue.start_worker(1)
    try:
        with database.transaction(engine) as session:
            outbound_id = outbox.store_message(
                session, "confirmation", "bounces@example.org", "new@example.com", MESSAGE
            )
        queue.send_message(outbound_id)
        queue.send_message(outbound_id)  # enqueued twice by mistake: still sent once
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with database.transaction(engine) as session:
                row = session.scalars(select(OutboundMessage)).one()
                if row.status != DeliveryStatus.PENDING and row.status != DeliveryStatus.SENDING:
                    break
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        queue.stop()
    assert (row.status, row.attempts) == (DeliveryStatus.SENT, 2)
    assert [message.recipient for message in smtpd.received] == ["new@example.com"]


def test_a_one_off_message_queued_by_an_earlier_version_is_sent(
    engine: Engine, settings: Settings, smtpd: MailSink
) -> None:
    # Before one-off mails travelled in groups, a queue message named one bare id: a worker upgraded while
    # such messages wait in Redis sends them all the same.
    queue = Queue(settings.replace(smtp_host="127.0.0.1", smtp_port=smtpd.port), engine)
    queue.start_worker(1)
    try:
        with database.transaction(engine) as session:
            outbound_id = outbox.store_message(
                session, "confirmation", "bounces@example.org", "old@example.com", MESSAGE
            )
        queue.message_actor.send(outbound_id)  # type: ignore[arg-type]
        deadline = time.monotonic() + 20
        while not smtpd.received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        queue.stop()
    assert [message.recipient for message in smtpd.received] == ["old@example.com"]


def test_one_off_messages_are_queued_a_group_a_message(engine: Engine, settings: Settings) -> None:
    # What a worker claims and records at once; a thousand invitations still spread over every thread.
    queue = Queue(settings, engine)
    try:
        queue.send_messages(list(range(1, 2 * GROUP_SIZE + 6)))
        assert queue.backlog() == 3
    finally:
        queue.stop()
