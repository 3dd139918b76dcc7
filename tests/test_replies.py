"""The one rule after an SMTP reply: whose fault, what to do, what to record, and when to try again."""

from __future__ import annotations

import random
import time

import pytest
from sqlalchemy import Engine, select

from newsletter import database, outbox, replies
from newsletter.models import DeliveryStatus, OutboundMessage
from newsletter.queue import Queue
from newsletter.replies import Action, Backoff, Fault, Reason, Verdict, judge, settle
from newsletter.settings import Settings
from newsletter.smtp import CONNECTION_LOST, END_OF_DATA, Reply
from tests.mailserver import MailSink

MESSAGE = b"From: editor@example.org\r\nTo: new@example.com\r\nSubject: Confirm\r\n\r\nPlease confirm.\r\n"


@pytest.mark.parametrize(
    ("reply", "action", "fault"),
    [
        (Reply(250, "2.0.0 OK", "DATA"), Action.SENT, None),
        (Reply(550, "5.1.1 no such user", "RCPT"), Action.BOUNCE, Fault.READER),
        (Reply(554, "5.7.1 rejected", "DATA"), Action.FAIL, Fault.MESSAGE),  # a policy block: not the reader's
        (Reply(451, "4.7.1 greylisted", "RCPT"), Action.RETRY, Fault.READER),
        (Reply(452, "4.2.2 mailbox full", "RCPT"), Action.RETRY, Fault.READER),
        (Reply(552, "5.3.4 too big for now", "DATA"), Action.RETRY, Fault.MESSAGE),  # RFC 5321 4.5.3.1.10
        (Reply(554, "5.3.4 message too big", "DATA"), Action.FAIL, Fault.MESSAGE),
        (Reply(553, "5.6.7 the SMTP server does not offer SMTPUTF8", "MAIL"), Action.FAIL, Fault.SENDER),
        (Reply(550, "5.7.1 sender rejected", "MAIL"), Action.FAIL, Fault.SENDER),
        (Reply(451, "4.3.0 try later", "MAIL"), Action.HOLD, Fault.SENDER),
        (Reply(421, "4.7.0 slow down", "RCPT"), Action.HOLD, Fault.LINK),
        (Reply(CONNECTION_LOST, "Connection refused", "connect"), Action.HOLD, Fault.LINK),
        (Reply(CONNECTION_LOST, "reset", "RCPT"), Action.HOLD, Fault.LINK),
        (Reply(CONNECTION_LOST, "reset", END_OF_DATA), Action.RETRY, Fault.LINK),  # it may have been taken
    ],
)
def test_judge_decides_by_code_stage_and_enhanced_status(reply: Reply, action: Action, fault: Fault | None) -> None:
    verdict = judge(reply)
    assert verdict.action == action
    assert (verdict.reason.fault if verdict.reason else None) == fault


def test_a_failure_classifier_plugs_into_the_rule() -> None:
    def everything_is_the_readers(reply: Reply) -> Reason:
        return Reason("undefined", Fault.READER)

    spam = Reply(554, "5.7.1 rejected as spam", "DATA")
    assert judge(spam) == Verdict(Action.FAIL, spam, Reason("spamdetected", Fault.MESSAGE))  # newsletter.reasons
    assert judge(spam, everything_is_the_readers).action == Action.BOUNCE


@pytest.mark.parametrize(
    ("reply", "reason", "fault"),
    [
        (Reply(550, "5.7.26 This mail is unauthenticated", "DATA"), "authfailure", Fault.SENDER),
        (Reply(550, "5.2.1 The email account that you tried to reach is disabled", "RCPT"), "suspend", Fault.READER),
        (Reply(552, "5.2.2 mailbox full", "RCPT"), "mailboxfull", Fault.READER),
        (Reply(550, "5.7.1 Service unavailable, client host blocked using Spamhaus", "RCPT"), "blocked", Fault.SENDER),
        (Reply(553, "the SMTP server does not offer SMTPUTF8", "MAIL"), "unsupported", Fault.SENDER),
        (Reply(530, "5.7.0 Must issue a STARTTLS command first", "MAIL"), "securityerror", Fault.SENDER),
    ],
)
def test_the_reason_and_whose_fault_come_from_the_classifier(reply: Reply, reason: str, fault: Fault) -> None:
    assert replies.reason_for(reply) == Reason(reason, fault)


def test_settle_counts_only_the_readers_tries(settings: Settings) -> None:
    config = settings.replace(max_attempts=3, retry_delay_seconds=10)
    retry = judge(Reply(451, "4.7.1 greylisted", "RCPT"))
    first = settle(retry, 1, config)
    assert first.status == DeliveryStatus.PENDING and first.counts_try
    assert first.retry_seconds is not None and 10 <= first.retry_seconds <= 20
    assert settle(retry, 3, config).status == DeliveryStatus.FAILED, "max_attempts tries, then failed"
    held = settle(judge(Reply(421, "4.7.0 closing", "MAIL")), 3, config)
    assert (held.status, held.counts_try) == (DeliveryStatus.PENDING, False), "never failed by the link"
    assert settle(judge(Reply(550, "5.1.1 unknown", "RCPT")), 1, config).status == DeliveryStatus.BOUNCED
    assert settle(judge(Reply(550, "5.7.1 no", "MAIL")), 1, config).status == DeliveryStatus.FAILED
    lost = settle(judge(Reply(CONNECTION_LOST, "reset", END_OF_DATA)), 1, config)
    assert lost.counts_try and lost.retry_seconds is not None and lost.retry_seconds <= 2, "soon: not the reader's"


def test_backoff_doubles_with_jitter_and_stays_under_its_cap() -> None:
    chance = random.Random(7)
    delays = [[replies.backoff_seconds(attempt, 1.0, 15.0, chance) for attempt in range(1, 8)] for _ in range(200)]
    for attempt, column in enumerate(zip(*delays, strict=True), start=1):
        low, high = 2 ** (attempt - 1), 2**attempt
        if high <= 15:
            assert all(low <= delay <= high for delay in column), attempt
        assert all(delay <= 15.0 for delay in column)
        assert len({round(delay, 6) for delay in column}) > 100, "jitter spreads workers that failed together"
    backoff = Backoff()
    assert backoff.next_seconds() <= 2 * replies.LINK_FIRST_PAUSE_SECONDS
    backoff.next_seconds()
    backoff.reset()
    assert backoff.failures == 0


def test_deliveries_and_one_off_messages_follow_the_same_rule(settings: Settings, engine: Engine) -> None:
    verdicts = [judge(reply) for reply in (Reply(250, "ok"), Reply(550, "5.1.1 x", "RCPT"), Reply(550, "x", "MAIL"))]
    with database.transaction(engine) as session:
        ids = [outbox.store_message(session, "confirm", "b@example.org", "r@example.com", MESSAGE) for _ in verdicts]
        claimed = outbox.claim_messages(session.connection(), ids, settings.lease_seconds)
        sent = list(zip(claimed, verdicts, strict=True))
        assert outbox.record_messages(session.connection(), settings, sent) == [None, None, None]
    with database.transaction(engine) as session:
        statuses = [session.get_one(OutboundMessage, outbound_id).status for outbound_id in ids]
    assert statuses == [settle(verdict, 1, settings).status for verdict in verdicts]
    assert statuses == [DeliveryStatus.SENT, DeliveryStatus.BOUNCED, DeliveryStatus.FAILED]


def test_a_one_off_message_waits_out_a_421_without_spending_a_try(
    engine: Engine, settings: Settings, smtpd: MailSink
) -> None:
    quick = settings.replace(smtp_host="127.0.0.1", smtp_port=smtpd.port, max_attempts=1)
    smtpd.fail("new@example.com", "RCPT", "421 4.7.0 too busy, closing", times=2)
    queue = Queue(quick, engine)
    queue.start_worker(1)
    try:
        with database.transaction(engine) as session:
            outbound_id = outbox.store_message(session, "confirmation", "b@example.org", "new@example.com", MESSAGE)
        queue.send_message(outbound_id)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with database.transaction(engine) as session:
                row = session.scalars(select(OutboundMessage)).one()
            if row.status == DeliveryStatus.SENT:
                break
            time.sleep(0.05)
    finally:
        queue.stop()
    assert (row.status, row.attempts) == (DeliveryStatus.SENT, 1), "with max_attempts 1, two 421s failed nothing"
    assert smtpd.attempts["new@example.com"] == 3


def test_verdict_keeps_the_reply_it_judged() -> None:
    reply = Reply(550, "5.1.1 no such user", "RCPT")
    assert judge(reply) == Verdict(Action.BOUNCE, reply, Reason("userunknown", Fault.READER))
