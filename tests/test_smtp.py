"""The SMTP connection and its one reply classifier, against aiosmtpd and smtp-sink on loopback."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from newsletter.mime import MessageTemplate, Recipient
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.smtp import (
    CONNECTION_LOST,
    Outcome,
    PermanentFailure,
    SessionRefused,
    SmtpConnection,
    TemporaryFailure,
    WireReady,
    classify,
    is_throttling,
)
from tests.mailserver import DROP, MailSink, free_port, running_sink

MESSAGE = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nline one\r\n.starts with a dot\r\n"


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (250, Outcome.SENT),
        (251, Outcome.SENT),
        (421, Outcome.TEMPORARY),
        (450, Outcome.TEMPORARY),
        (451, Outcome.TEMPORARY),
        (452, Outcome.TEMPORARY),
        (454, Outcome.TEMPORARY),
        (552, Outcome.TEMPORARY),
        (CONNECTION_LOST, Outcome.TEMPORARY),
        (550, Outcome.PERMANENT),
        (551, Outcome.PERMANENT),
        (553, Outcome.PERMANENT),
        (554, Outcome.PERMANENT),
    ],
)
def test_classify_follows_rfc_5321(code: int, outcome: Outcome) -> None:
    assert classify(code) == outcome


def test_throttling_is_every_4xx_and_a_lost_connection() -> None:
    assert is_throttling(421) and is_throttling(454) and is_throttling(CONNECTION_LOST)
    assert not is_throttling(250) and not is_throttling(550)


def reader(name: str) -> Recipient:
    return Recipient(
        "reader@example.com",
        name,
        "<1.2.abc@example.org>",
        "https://news.example.org/unsubscribe/t",
        "mailto:unsubscribe@example.org",
        "https://news.example.org/preferences/t",
    )


def test_composed_messages_arrive_as_composed_whether_a_line_starts_with_a_dot_or_not(settings: Settings) -> None:
    greeting = MessageTemplate.build(render_issue("# Notes\n\nHello {{ name }}.\n", settings, slug="a"), settings)
    dotted = MessageTemplate.build(render_issue("# Notes\n\n.hidden line\n", settings, slug="b"), settings)
    messages = [greeting.fill(reader("Zed")), greeting.fill(reader(".Zed")), dotted.fill(reader("Zed"))]
    assert all(isinstance(message, WireReady) and b"\n." not in message for message in messages)
    texts = [email.message_from_bytes(message, policy=email.policy.default) for message in messages]
    assert "Hello .Zed." in texts[1].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert ".hidden line" in texts[2].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    unchecked = MESSAGE.replace(b"\r\n", b"\n")  # plain bytes with a dot line and LF ends: both passes apply
    messages.append(unchecked)
    with running_sink(MailSink()) as (sink, port):
        connection = SmtpConnection(settings.replace(smtp_host="127.0.0.1", smtp_port=port))
        for message in messages:
            assert connection.send("bounces@example.org", "reader@example.com", message).code == 250
        connection.close()
    assert [received.data for received in sink.received[:3]] == messages[:3], "sent as composed"
    assert sink.received[3].data == MESSAGE, "LF made CRLF, the dot line stuffed and unstuffed"


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_one_connection_carries_many_messages_and_survives_faults(settings: Settings, pipelining: bool) -> None:
    with running_sink(MailSink(pipelining=pipelining)) as (sink, port):
        connection = SmtpConnection(settings.replace(smtp_host="127.0.0.1", smtp_port=port))
        sink.fail("rcpt-temp@example.com", "RCPT", "451 4.7.1 greylisted")
        sink.fail("rcpt-perm@example.com", "RCPT", "550 5.1.1 no such user")
        sink.fail("data-perm@example.com", "DATA", "554 5.7.1 refused")
        sink.fail("data-drop@example.com", "DATA", DROP)
        assert connection.send("bounces@example.org", "one@example.com", MESSAGE).code == 250
        with pytest.raises(TemporaryFailure, match="451"):
            connection.send("bounces@example.org", "rcpt-temp@example.com", MESSAGE)
        with pytest.raises(PermanentFailure, match="550"):
            connection.send("bounces@example.org", "rcpt-perm@example.com", MESSAGE)
        with pytest.raises(PermanentFailure, match="554") as refused:
            connection.send("bounces@example.org", "data-perm@example.com", MESSAGE)
        assert refused.value.reply.stage == "DATA"
        with pytest.raises(TemporaryFailure) as dropped:
            connection.send("bounces@example.org", "data-drop@example.com", MESSAGE)
        assert dropped.value.reply.code == CONNECTION_LOST
        assert connection.send("bounces@example.org", "two@example.com", MESSAGE).code == 250  # reconnected
        connection.close()
        assert [message.recipient for message in sink.received] == ["one@example.com", "two@example.com"]
        assert b"\r\n.starts with a dot\r\n" in sink.received[0].data, "dot-stuffing is undone by the server"


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_a_connection_the_server_closed_while_idle_is_reopened_without_a_failure(
    settings: Settings, pipelining: bool
) -> None:
    # aiosmtpd's timeout: after a second of silence it says 421 and hangs up, as real servers do.
    with running_sink(MailSink(pipelining=pipelining), timeout=1) as (sink, port):
        connection = SmtpConnection(settings.replace(smtp_host="127.0.0.1", smtp_port=port))
        assert connection.send("bounces@example.org", "one@example.com", MESSAGE).code == 250
        time.sleep(1.5)
        assert connection.send("bounces@example.org", "two@example.com", MESSAGE).code == 250
        connection.close()
    assert [message.recipient for message in sink.received] == ["one@example.com", "two@example.com"]
    assert sink.attempts["two@example.com"] == 1


def test_a_connection_reset_while_idle_is_reopened_without_a_failure(settings: Settings) -> None:
    with running_sink() as (sink, port):
        connection = SmtpConnection(settings.replace(smtp_host="127.0.0.1", smtp_port=port))
        assert connection.send("bounces@example.org", "one@example.com", MESSAGE).code == 250
        sink.hang_up()  # closed without a word, as a NAT or a restarted relay does
        assert connection.send("bounces@example.org", "two@example.com", MESSAGE).code == 250
        connection.close()
    assert [message.recipient for message in sink.received] == ["one@example.com", "two@example.com"]


def test_an_address_that_would_break_the_command_is_refused_before_sending(settings: Settings) -> None:
    connection = SmtpConnection(settings.replace(smtp_host="127.0.0.1", smtp_port=free_port()))
    with pytest.raises(PermanentFailure, match="cannot go into an SMTP command"):
        connection.send("bounces@example.org", "evil@example.com>\r\nRCPT TO:<x@example.com", MESSAGE)


def test_no_server_is_a_temporary_failure(settings: Settings) -> None:
    connection = SmtpConnection(settings.replace(smtp_host="127.0.0.1", smtp_port=free_port(), smtp_timeout=2))
    with pytest.raises(TemporaryFailure) as failure:
        connection.send("bounces@example.org", "one@example.com", MESSAGE)
    assert failure.value.reply.code == CONNECTION_LOST


@contextmanager
def greeting_server(greeting: bytes) -> Iterator[int]:
    """A server that answers every connection with `greeting` and then QUIT's 221: its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    done = threading.Event()

    def answer() -> None:
        while not done.is_set():
            try:
                peer, _ = listener.accept()
            except TimeoutError:
                continue
            with peer:
                peer.sendall(greeting)
                peer.settimeout(1)
                try:
                    if peer.recv(1024):
                        peer.sendall(b"221 2.0.0 bye\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join()
        listener.close()


def test_a_greeting_of_554_is_a_refused_session_not_a_lost_connection(settings: Settings) -> None:
    # RFC 5321 3.1: a server that will not talk to us says so in its greeting; no reader is at fault.
    with greeting_server(b"554 5.7.1 no SMTP service for 127.0.0.1\r\n") as port:
        connection = SmtpConnection(settings.replace(smtp_host="127.0.0.1", smtp_port=port))
        with pytest.raises(SessionRefused, match="refused the session: 554 5.7.1 no SMTP service for 127.0.0.1"):
            connection.send("bounces@example.org", "one@example.com", MESSAGE)


def test_a_greeting_of_421_is_a_temporary_failure_with_its_reply(settings: Settings) -> None:
    with greeting_server(b"421 4.3.2 too busy, try later\r\n") as port:
        connection = SmtpConnection(settings.replace(smtp_host="127.0.0.1", smtp_port=port))
        with pytest.raises(TemporaryFailure) as failure:
            connection.send("bounces@example.org", "one@example.com", MESSAGE)
    assert failure.value.reply.code == 421 and "too busy" in failure.value.reply.text


SMTP_SINK = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)


@pytest.mark.skipif(SMTP_SINK is None, reason="Postfix's smtp-sink is not installed")
def test_smtp_sink_takes_pipelined_transactions(settings: Settings) -> None:
    assert SMTP_SINK is not None
    port = free_port()
    as_user = ["-u", "postfix"] if os.geteuid() == 0 else []  # smtp-sink will not keep root privileges
    process = subprocess.Popen([SMTP_SINK, *as_user, f"127.0.0.1:{port}", "10"])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        connection = SmtpConnection(settings.replace(smtp_host="127.0.0.1", smtp_port=port))
        replies = [connection.send("bounces@example.org", f"r{n}@example.com", MESSAGE) for n in range(20)]
        assert all(reply.code == 250 for reply in replies)
        assert connection._smtp is not None and connection._smtp.has_extn("pipelining")
        connection.close()
    finally:
        process.terminate()
        process.wait()
