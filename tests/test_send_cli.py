"""The send, status, retry and worker commands: wiring only (campaign and ledger tests cover the rest)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from newsletter import database
from newsletter.cli import main
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from tests.mailserver import EVERYONE, MailSink

ISSUE = "---\nsubject: Notes one\nslug: notes-1\n---\n\n# Notes one\n\nHello.\n"


@pytest.fixture
def config(tmp_path: Path, settings: Settings, engine: Engine, smtpd: MailSink) -> Path:
    with database.transaction(engine) as session:
        for number in range(3):
            add_subscriber(session, f"cli{number}@example.com")
    path = tmp_path / "cli.toml"
    path.write_text(
        f'database_url = "{settings.database_url}"\nsecret_key = "{settings.secret_key}"\n'
        f'from_address = "{settings.from_address}"\npostal_address = "{settings.postal_address}"\n'
        f'smtp_host = "127.0.0.1"\nsmtp_port = {smtpd.port}\n',
        encoding="utf-8",
    )
    return path


def invoke(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    return result.exit_code, result.output


def test_send_asks_for_yes_off_a_terminal_then_sends(config: Path, tmp_path: Path, smtpd: MailSink) -> None:
    issue = tmp_path / "notes.md"
    issue.write_text(ISSUE, encoding="utf-8")
    code, output = invoke(config, "send", str(issue))
    assert code == 1 and "--yes" in output and smtpd.received == []
    code, output = invoke(config, "send", str(issue), "--dry-run", "--yes")
    assert code == 0 and "composed 3 messages" in output and smtpd.received == []
    code, output = invoke(config, "send", str(issue), "--yes")
    assert code == 0, output
    assert len(smtpd.received) == 3
    code, output = invoke(config, "status", "notes-1")
    assert code == 0 and "sent" in output and "3" in output
    code, output = invoke(config, "send", str(issue), "--yes")
    assert code == 0 and "Nothing to send" in output and len(smtpd.received) == 3
    issue.write_text(ISSUE.replace("Hello", "Changed"), encoding="utf-8")
    code, output = invoke(config, "send", str(issue), "--yes")
    assert code == 1 and "--force" in output


def test_send_says_when_the_rate_limit_holds_it_back(config: Path, tmp_path: Path, smtpd: MailSink) -> None:
    issue = tmp_path / "notes.md"
    issue.write_text(ISSUE, encoding="utf-8")
    with config.open("a", encoding="utf-8") as file:
        file.write("rate_limit = 1.0\n")  # three readers: two waits of up to a second
    code, output = invoke(config, "send", str(issue), "--yes")
    assert code == 0, output
    assert len(smtpd.received) == 3
    lines = [line for line in output.splitlines() if line.startswith("Waiting: the rate limit")]
    assert len(lines) == 1, output  # once for the send, not once per message
    assert "allows 1 message a second (rate_limit); next in 0." in lines[0], lines


def test_send_says_when_the_relay_slows_it_down(config: Path, tmp_path: Path, smtpd: MailSink) -> None:
    issue = tmp_path / "notes.md"
    issue.write_text(ISSUE, encoding="utf-8")
    smtpd.fail(EVERYONE, "RCPT", "451 4.7.1 slow down", times=4)  # pauses of 0.5, 1, 2 and 4 s before a message
    with config.open("a", encoding="utf-8") as file:
        file.write("smtp_connections = 1\nretry_delay_seconds = 1\n")
    code, output = invoke(config, "send", str(issue), "--yes")
    assert code == 0, output
    assert len(smtpd.received) == 3
    text = " ".join(output.split())  # rich wraps long lines
    said = f"Waiting: the SMTP server 127.0.0.1:{smtpd.port} slows us down (451 4.7.1 slow down (at RCPT)); next in "
    assert said in text, output


def test_send_test_goes_to_the_named_address_only(config: Path, tmp_path: Path, smtpd: MailSink) -> None:
    issue = tmp_path / "notes.md"
    issue.write_text(ISSUE, encoding="utf-8")
    code, output = invoke(config, "send", str(issue), "--test", "me@example.net")
    assert code == 0, output
    assert [message.recipient for message in smtpd.received] == ["me@example.net"]
    code, output = invoke(config, "status")
    assert code == 0 and "notes-1" not in output


def test_send_test_fails_with_the_reply_when_the_message_is_refused(
    config: Path, tmp_path: Path, smtpd: MailSink
) -> None:
    issue = tmp_path / "notes.md"
    issue.write_text(ISSUE, encoding="utf-8")
    smtpd.fail("me@example.net", "DATA", "500 5.0.0 no thanks")
    code, output = invoke(config, "send", str(issue), "--test", "me@example.net", "--test", "you@example.net")
    assert code == 1, output
    assert "1 of 2 test messages not accepted: me@example.net: 500 5.0.0 no thanks" in output


def test_send_names_every_missing_setting_at_once(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "bare.toml"
    path.write_text(f'database_url = "{settings.database_url}"\nsecret_key = "k"\n', encoding="utf-8")
    issue = tmp_path / "notes.md"
    issue.write_text(ISSUE, encoding="utf-8")
    code, output = invoke(path, "send", str(issue), "--yes")
    assert code == 1 and "'from_address', 'postal_address' are required" in output, output


def test_the_progress_line_names_outcomes_as_status_does() -> None:
    from newsletter.ledger import Counts
    from newsletter.progress import tally_line

    line = tally_line(Counts({"sent": 5, "bounced": 1, "pending": 2, "sending": 1}))
    assert line == "5 sent  1 bounced  3 left"


def test_status_and_retry_of_an_unknown_issue_say_so(config: Path) -> None:
    for command in ("status", "retry"):
        code, output = invoke(config, command, "no-such-issue")
        assert code == 1 and "no issue 'no-such-issue'" in output


def test_worker_needs_a_broker(config: Path) -> None:
    code, output = invoke(config, "worker")
    assert code == 1 and "broker_url" in output
