"""End to end: send an issue through a real SMTP server, mail back a DSN and an ARF report, send the next issue."""

from __future__ import annotations

import mailbox
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Engine, select

from newsletter import database
from newsletter.cli import main
from newsletter.models import Subscriber
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from tests.inbound_mail import BOUNDARY, dsn, failed
from tests.mailserver import MailSink

READERS = ("ann@example.com", "bob@example.net", "cho@example.com")


def issue_file(tmp_path: Path, number: int) -> Path:
    path = tmp_path / f"notes-{number}.md"
    path.write_text(
        f"---\nsubject: Notes {number}\nslug: notes-{number}\n---\n\n# Notes {number}\n\nHello.\n", encoding="utf-8"
    )
    return path


def arf_about(received: bytes, original_mail_from: str) -> bytes:
    """A feedback loop's report (RFC 5965) quoting the message as the reader's provider received it."""
    return (
        (
            "From: <fbl@mail-provider.example>\r\nTo: fbl@example.org\r\nSubject: Abuse report\r\n"
            "Message-ID: <fbl-1@mail-provider.example>\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=feedback-report; boundary="{BOUNDARY}"\r\n\r\n'
            f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n\r\n"
            f"--{BOUNDARY}\r\nContent-Type: message/feedback-report\r\n\r\n"
            f"Feedback-Type: abuse\r\nUser-Agent: ProviderFBL/1.0\r\nVersion: 1\r\n"
            f"Original-Mail-From: <{original_mail_from}>\r\n\r\n"
            f"--{BOUNDARY}\r\nContent-Type: message/rfc822\r\n\r\n"
        ).encode()
        + received
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def test_a_bounce_and_a_complaint_mailed_back_stop_the_next_issue(
    tmp_path: Path, settings: Settings, engine: Engine, smtpd: MailSink
) -> None:
    with database.transaction(engine) as session:
        for email in READERS:
            add_subscriber(session, email)
    config = tmp_path / "newsletter.toml"
    config.write_text(
        f'database_url = "{settings.database_url}"\nsecret_key = "{settings.secret_key}"\n'
        f'from_address = "{settings.from_address}"\npostal_address = "{settings.postal_address}"\n'
        f'smtp_host = "127.0.0.1"\nsmtp_port = {smtpd.port}\n',
        encoding="utf-8",
    )
    runner = CliRunner()

    def newsletter(*args: str, input: bytes | None = None) -> str:
        result = runner.invoke(main, ["--config", str(config), *args], input=input)
        assert result.exit_code == 0, result.output
        return result.output

    newsletter("send", str(issue_file(tmp_path, 1)), "--yes")
    assert sorted(message.recipient for message in smtpd.received) == sorted(READERS)
    [to_ann], [to_bob] = smtpd.to("ann@example.com"), smtpd.to("bob@example.net")

    # Ann's server refuses after accepting: its DSN goes to the envelope sender, the VERP address, by a pipe.
    bounce = dsn(to_ann.mail_from, [failed("ann@example.com")], message_id="<dsn-ann@mx.example.com>")
    assert "bounce" in newsletter("inbound", input=bounce)
    # Bob's provider reports him marking the issue as spam; the report lands in a Maildir with the DSN again.
    maildir = tmp_path / "Maildir"
    box = mailbox.Maildir(maildir, create=True)
    box.add(arf_about(to_bob.data, to_bob.mail_from))
    box.add(bounce)
    box.close()
    output = newsletter("inbound", "--maildir", str(maildir))
    assert "Read 2 messages" in output and "already recorded 1" in output and "suppressed 1" in output
    assert "Read 0 messages" in newsletter("inbound", "--maildir", str(maildir))

    with database.transaction(engine) as session:
        statuses = {email: status for email, status in session.execute(select(Subscriber.email, Subscriber.status))}
    assert statuses == {"ann@example.com": "bounced", "bob@example.net": "complained", "cho@example.com": "active"}
    report = newsletter("bounces", "--since", "1")
    assert "userunknown" in report and "complaint (abuse)" in report and "Suppressed: 2" in report

    smtpd.received.clear()
    newsletter("send", str(issue_file(tmp_path, 2)), "--yes")
    assert [message.recipient for message in smtpd.received] == ["cho@example.com"]
