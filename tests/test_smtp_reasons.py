"""What an SMTP server's refusal does, by the one classifier of failures: only the reader's address bounces.

A relay without SMTPUTF8, a refused MAIL FROM, a spam block: the delivery fails with its reason, the reader
stays active, and the editor is told once per issue.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select

from newsletter import campaign, confirmation, database, optin
from newsletter.cli import main
from newsletter.models import Delivery, Event, OutboundMessage, Subscriber
from newsletter.queue import Queue
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from newsletter.suppressions import notices
from newsletter.tokens import Signer
from tests.mailserver import MailSink, running_sink

ISSUE = "---\nsubject: Weekly notes\nslug: weekly\n---\n\n# Weekly notes\n\nHello.\n"
READERS = ("ann@example.com", "élodie@example.fr", "zoé@example.fr")


class RefusingSender(MailSink):
    """A relay that refuses our envelope sender (RFC 5321 3.3: MAIL FROM), whatever the recipient."""

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        return "553 5.7.1 <bounces@example.org>: Sender address rejected: not owned by user"


def configured(settings: Settings, port: int) -> Settings:
    return settings.replace(smtp_host="127.0.0.1", smtp_port=port, retry_delay_seconds=0.05, max_attempts=2)


def send(engine: Engine, settings: Settings) -> None:
    with database.transaction(engine) as session:
        for email in READERS:
            add_subscriber(session, email)
    campaign.send_issue(engine, Queue(settings, engine), render_issue(ISSUE, settings))


def outcome(engine: Engine) -> dict[str, tuple[str, str, float]]:
    """Each reader's delivery status, reader status and bounce score."""
    with database.transaction(engine) as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.status, Subscriber.status, Subscriber.bounce_score).join(
                Delivery, Delivery.subscriber_id == Subscriber.id
            )
        )
        return {email: (delivery, status, score) for email, delivery, status, score in rows}


@pytest.fixture
def relay_without_smtputf8() -> Iterator[MailSink]:
    with running_sink(enable_SMTPUTF8=False) as (sink, _port):
        yield sink


def test_a_relay_without_smtputf8_fails_the_delivery_and_keeps_the_reader(
    engine: Engine, settings: Settings, relay_without_smtputf8: MailSink, tmp_path: Path
) -> None:
    config = configured(settings, relay_without_smtputf8.port)
    send(engine, config)
    assert outcome(engine) == {
        "ann@example.com": ("sent", "active", 0.0),
        "élodie@example.fr": ("failed", "active", 0.0),
        "zoé@example.fr": ("failed", "active", 0.0),
    }
    with database.transaction(engine) as session:
        assert session.scalars(select(Event.kind).where(Event.kind.like("%bounce"))).all() == []
        issue_id = session.scalars(select(Delivery.issue_id)).first()
        assert issue_id is not None
        [notice] = notices(session, issue_id)  # two readers, one word to the editor
    assert (notice.reason_name, notice.failed) == ("unsupported", 2)
    assert "SMTPUTF8" in notice.reply
    toml = tmp_path / "newsletter.toml"
    toml.write_text(
        f'database_url = "{settings.database_url}"\nsecret_key = "{settings.secret_key}"\n'
        f'from_address = "{settings.from_address}"\n',
        encoding="utf-8",
    )
    shown = CliRunner().invoke(main, ["--config", str(toml), "status", "weekly"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("Our side, not the readers: unsupported") == 1


def test_a_refused_mail_from_is_our_side(engine: Engine, settings: Settings) -> None:
    with running_sink(RefusingSender()) as (_sink, port):
        send(engine, configured(settings, port))
    assert {status for _, status, _ in outcome(engine).values()} == {"active"}
    assert {delivery for delivery, _, _ in outcome(engine).values()} == {"failed"}
    with database.transaction(engine) as session:
        issue_id = session.scalars(select(Delivery.issue_id)).first()
        assert issue_id is not None
        assert [notice.reason_name for notice in notices(session, issue_id)] == ["rejected"]


@pytest.mark.parametrize(
    ("stage", "reply", "delivery", "reader", "score", "reason"),
    [
        (
            "RCPT",
            "550 5.1.1 <ann@example.com>: Recipient address rejected: User unknown",
            "bounced",
            "bounced",
            0,
            "userunknown",
        ),
        # RFC 5321 4.5.3.1.10: 552 is retried; when the tries run out the reader has one soft bounce.
        ("RCPT", "552 5.2.2 Mailbox full", "failed", "active", 1.0, "mailboxfull"),
        ("RCPT", "550 5.2.2 Mailbox full", "bounced", "active", 1.0, "mailboxfull"),
        ("DATA", "554 5.7.1 Message rejected as spam", "failed", "active", 0, "spamdetected"),
        ("RCPT", "550 5.7.1 Client host blocked using zen.spamhaus.org", "failed", "active", 0, "blocked"),
    ],
)
def test_a_refusal_does_what_its_reason_says(
    engine: Engine,
    settings: Settings,
    smtpd: MailSink,
    stage: str,
    reply: str,
    delivery: str,
    reader: str,
    score: float,
    reason: str,
) -> None:
    smtpd.fail("ann@example.com", stage, reply)
    send(engine, configured(settings, smtpd.port).replace(max_attempts=1))
    assert outcome(engine)["ann@example.com"] == (delivery, reader, score)
    with database.transaction(engine) as session:
        named = set(session.scalars(select(Event.reason_name).where(Event.reason_name.is_not(None))))
    assert reason in named


def test_a_confirmation_the_relay_cannot_carry_fails_once_told(
    engine: Engine, settings: Settings, relay_without_smtputf8: MailSink, caplog: pytest.LogCaptureFixture
) -> None:
    config = configured(settings, relay_without_smtputf8.port)
    queue = Queue(config, engine)
    queue.start_worker()
    try:
        with database.transaction(engine) as session:
            ids = [
                confirmation.store_confirmation(
                    session, config, Signer(config.secret_key), optin.subscribe(session, config, email, None)
                )
                for email in ("élodie@example.fr", "zoé@example.fr")
            ]
        for outbound_id in ids:
            assert outbound_id is not None
            queue.send_message(outbound_id)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _all_final(engine):
            time.sleep(0.05)
    finally:
        queue.stop()
    with database.transaction(engine) as session:
        assert set(session.scalars(select(OutboundMessage.status))) == {"failed"}
        assert set(session.scalars(select(Subscriber.status))) == {"pending"}
    told = [
        record for record in caplog.records if "one-off mail failed on our side (unsupported)" in record.getMessage()
    ]
    assert len(told) == 1


def _all_final(engine: Engine) -> bool:
    with database.transaction(engine) as session:
        return set(session.scalars(select(OutboundMessage.status))) <= {"failed", "sent", "bounced"}
