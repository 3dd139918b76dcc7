"""Sources of inbound mail: stdin with MTA exit codes, Maildir, mbox, and IMAP/POP3 on a real Dovecot."""

from __future__ import annotations

import datetime as dt
import imaplib
import ipaddress
import mailbox
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.orm import Session

from newsletter import mailboxes
from newsletter.cli import EX_TEMPFAIL, main
from newsletter.models import SubscriberStatus
from newsletter.settings import Settings
from tests.inbound_mail import Sent, arf, dsn, failed, make_sent

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


@pytest.fixture
def sent(session: Session, settings: Settings) -> Sent:
    """Three subscribers, each with a delivery of one issue."""
    return make_sent(session, settings)


def messages_for(sent: Sent) -> list[bytes]:
    """A hard bounce for ann, a complaint about bob, a vacation reply from cho."""
    return [
        dsn(sent.verp("ann@example.com"), [failed("ann@example.com")]),
        arf("fbl@example.org", original_mail_from=sent.verp("bob@example.net")),
        f"From: cho@example.com\r\nTo: {sent.verp('cho@example.com')}\r\nSubject: Out of office\r\n"
        "Auto-Submitted: auto-replied\r\nMessage-ID: <away@example.com>\r\n\r\nAway.\r\n".encode(),
    ]


def assert_list_cleaned(session: Session, sent: Sent) -> None:
    session.expire_all()
    statuses = {email: subscriber.status for email, subscriber in sent.subscribers.items()}
    assert statuses == {"ann@example.com": "bounced", "bob@example.net": "complained", "cho@example.com": "active"}


def write_config(tmp_path: Path, settings: Settings, **extra: object) -> Path:
    values = {
        "database_url": settings.database_url,
        "secret_key": settings.secret_key,
        "from_address": settings.from_address,
        **extra,
    }
    lines = [f"{name} = {value!r}" if isinstance(value, str) else f"{name} = {value}" for name, value in values.items()]
    config = tmp_path / "newsletter.toml"
    config.write_text("\n".join(lines).replace("'", '"') + "\n", encoding="utf-8")
    return config


def test_stdin_pipe_records_and_exits_zero(tmp_path: Path, session: Session, sent: Sent) -> None:
    session.commit()
    config = write_config(tmp_path, sent.settings)
    runner = CliRunner()
    for raw in messages_for(sent):
        result = runner.invoke(main, ["--config", str(config), "inbound"], input=raw)
        assert result.exit_code == 0, result.output
    assert_list_cleaned(session, sent)
    again = runner.invoke(main, ["--config", str(config), "inbound"], input=messages_for(sent)[0])
    assert again.exit_code == 0 and "bounce" in again.output


def test_stdin_recipient_option_names_the_delivery(tmp_path: Path, session: Session, sent: Sent) -> None:
    session.commit()
    config = write_config(tmp_path, sent.settings)
    raw = dsn("bounces@example.org", [failed("someone@example.com")])
    result = CliRunner().invoke(
        main, ["--config", str(config), "inbound", "--recipient", sent.verp("cho@example.com")], input=raw
    )
    assert result.exit_code == 0, result.output
    session.expire_all()
    assert sent.subscribers["cho@example.com"].status == SubscriberStatus.BOUNCED


def test_stdin_defers_with_ex_tempfail_when_the_database_is_unreachable(tmp_path: Path, sent: Sent) -> None:
    config = write_config(tmp_path, sent.settings.replace(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none"))
    result = CliRunner().invoke(main, ["--config", str(config), "inbound"], input=messages_for(sent)[0])
    assert result.exit_code == EX_TEMPFAIL == 75


def test_stdin_defers_when_settings_are_missing(tmp_path: Path, sent: Sent) -> None:
    config = write_config(tmp_path, sent.settings.replace(secret_key=""))
    result = CliRunner().invoke(main, ["--config", str(config), "inbound"], input=messages_for(sent)[0])
    assert result.exit_code == EX_TEMPFAIL


def make_maildir(path: Path, messages: list[bytes]) -> None:
    box = mailbox.Maildir(path, create=True)
    for raw in messages:
        box.add(raw)
    box.close()


def test_maildir_moves_read_mail_to_cur_and_never_counts_twice(
    tmp_path: Path, session: Session, sent: Sent, engine: object
) -> None:
    session.commit()
    maildir = tmp_path / "Maildir"
    make_maildir(maildir, messages_for(sent))
    tally = mailboxes.read_maildir(session.get_bind(), sent.settings, maildir)  # type: ignore[arg-type]
    assert (tally.messages, tally.recorded, tally.suppressed) == (3, 2, 2)
    assert list((maildir / "new").iterdir()) == []
    assert sorted(file.name.rpartition(",")[2] for file in (maildir / "cur").iterdir()) == ["S", "S", "S"]
    assert_list_cleaned(session, sent)
    assert mailboxes.read_maildir(session.get_bind(), sent.settings, maildir).messages == 0  # type: ignore[arg-type]


def test_maildir_crash_before_marking_loses_nothing_and_counts_once(
    tmp_path: Path, session: Session, sent: Sent
) -> None:
    session.commit()
    maildir = tmp_path / "Maildir"
    make_maildir(maildir, [dsn(sent.verp("cho@example.com"), [failed("cho@example.com", "4.2.2", action="failed")])])
    engine = session.get_bind()
    # The first run "crashes" after recording: the file is put back unmarked, as if the rename never happened.
    mailboxes.read_maildir(engine, sent.settings, maildir)  # type: ignore[arg-type]
    [read] = list((maildir / "cur").iterdir())
    read.rename(maildir / "new" / read.name.partition(":")[0])
    tally = mailboxes.read_maildir(engine, sent.settings, maildir)  # type: ignore[arg-type]
    assert (tally.messages, tally.recorded, tally.duplicates) == (1, 0, 1)
    session.expire_all()
    assert sent.subscribers["cho@example.com"].bounce_score == pytest.approx(1.0)


def test_maildir_cli(tmp_path: Path, session: Session, sent: Sent) -> None:
    session.commit()
    maildir = tmp_path / "Maildir"
    make_maildir(maildir, messages_for(sent))
    config = write_config(tmp_path, sent.settings)
    result = CliRunner().invoke(main, ["--config", str(config), "inbound", "--maildir", str(maildir)])
    assert result.exit_code == 0, result.output
    assert "Read 3 messages" in result.output and "suppressed 2" in result.output
    assert_list_cleaned(session, sent)
    bad = CliRunner().invoke(main, ["--config", str(config), "inbound", "--maildir", str(tmp_path)])
    assert bad.exit_code == 1 and "not a Maildir" in bad.output


def test_mbox_is_idempotent(tmp_path: Path, session: Session, sent: Sent) -> None:
    session.commit()
    path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(path)
    for raw in messages_for(sent):
        box.add(raw)
    box.close()
    engine = session.get_bind()
    first = mailboxes.read_mbox(engine, sent.settings, path)  # type: ignore[arg-type]
    second = mailboxes.read_mbox(engine, sent.settings, path)  # type: ignore[arg-type]
    assert (first.recorded, second.recorded, second.duplicates) == (2, 0, 2)
    assert_list_cleaned(session, sent)


def test_only_one_source_at_a_time(tmp_path: Path, sent: Sent) -> None:
    config = write_config(tmp_path, sent.settings)
    result = CliRunner().invoke(main, ["--config", str(config), "inbound", "--imap", "--pop3"])
    assert result.exit_code == 2 and "choose one" in result.output
    result = CliRunner().invoke(main, ["--config", str(config), "inbound", "--watch"])
    assert result.exit_code == 2


@dataclass
class Dovecot:
    imap_port: int
    pop3_port: int
    imaps_port: int
    pop3s_port: int
    context: ssl.SSLContext  # trusts the server's own certificate
    user: str = "bounces"
    password: str = "s3cret"

    def append(self, messages: list[bytes]) -> None:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port)
        client.login(self.user, self.password)
        for raw in messages:
            client.append("INBOX", "", imaplib.Time2Internaldate(time.time()), raw)
        client.logout()

    def settings(self, settings: Settings, security: str = "none") -> Settings:
        imap_port, pop3_port = (
            (self.imaps_port, self.pop3s_port) if security == "ssl" else (self.imap_port, self.pop3_port)
        )
        return settings.replace(
            imap_host="127.0.0.1",
            imap_port=imap_port,
            imap_username=self.user,
            imap_password=self.password,
            imap_security=security,
            pop3_host="127.0.0.1",
            pop3_port=pop3_port,
            pop3_username=self.user,
            pop3_password=self.password,
            pop3_security=security,
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


DOVECOT_CONFIG = """base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
  }}
}}
service anvil {{
  chroot =
}}
"""


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A real Dovecot IMAP and POP3 server on loopback, plain and TLS, with one user."""
    if not Path(DOVECOT).exists():
        message = "dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # Dovecot's auth and mail processes run as other users: its files live outside pytest's private tmp_path.
    root = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
    root.chmod(0o755)
    for sub in ("run", "state", "home"):
        (root / sub).mkdir(parents=True)
    shutil.chown(root / "home", "nobody", "nogroup")
    cert, key = self_signed_certificate(root)
    ports = {name: free_port() for name in ("imap", "imaps", "pop3", "pop3s")}
    (root / "dovecot.conf").write_text(DOVECOT_CONFIG.format(root=root, cert=cert, key=key, **ports))
    (root / "passwd").write_text("bounces:{PLAIN}s3cret\n")
    process = subprocess.Popen([DOVECOT, "-F", "-c", str(root / "dovecot.conf")])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", ports["pop3s"]), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"dovecot did not start: {(root / 'dovecot.log').read_text(errors='replace')}")
                time.sleep(0.05)
        yield Dovecot(
            ports["imap"], ports["pop3"], ports["imaps"], ports["pop3s"], ssl.create_default_context(cafile=str(cert))
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_imap_flags_read_mail_seen_and_never_counts_twice(
    session: Session, sent: Sent, dovecot: Dovecot, security: str
) -> None:
    session.commit()
    dovecot.append(messages_for(sent))
    settings = dovecot.settings(sent.settings, security)
    engine = session.get_bind()
    tally = mailboxes.read_imap(engine, settings, ssl_context=dovecot.context)  # type: ignore[arg-type]
    assert (tally.messages, tally.recorded, tally.suppressed) == (3, 2, 2)
    assert_list_cleaned(session, sent)
    assert mailboxes.read_imap(engine, settings, ssl_context=dovecot.context).messages == 0  # type: ignore[arg-type]
    client = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    client.login(dovecot.user, dovecot.password)
    client.select("INBOX")
    assert client.search(None, "SEEN")[1][0].split() == [b"1", b"2", b"3"]
    client.logout()


def test_imap_unseen_again_is_recorded_once(session: Session, sent: Sent, dovecot: Dovecot) -> None:
    session.commit()
    dovecot.append(messages_for(sent)[:1])
    settings = dovecot.settings(sent.settings)
    engine = session.get_bind()
    mailboxes.read_imap(engine, settings)  # type: ignore[arg-type]
    client = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    client.login(dovecot.user, dovecot.password)
    client.select("INBOX")
    client.store("1", "-FLAGS", "(\\Seen)")  # as if the reader crashed before flagging it
    client.logout()
    tally = mailboxes.read_imap(engine, settings)  # type: ignore[arg-type]
    assert (tally.messages, tally.recorded, tally.duplicates) == (1, 0, 1)


@pytest.mark.parametrize("security", ["none", "ssl"])
def test_pop3_deletes_read_mail(session: Session, sent: Sent, dovecot: Dovecot, security: str) -> None:
    session.commit()
    dovecot.append(messages_for(sent))
    settings = dovecot.settings(sent.settings, security)
    engine = session.get_bind()
    tally = mailboxes.read_pop3(engine, settings, ssl_context=dovecot.context)  # type: ignore[arg-type]
    assert (tally.messages, tally.recorded, tally.suppressed) == (3, 2, 2)
    assert_list_cleaned(session, sent)
    assert mailboxes.read_pop3(engine, settings, ssl_context=dovecot.context).messages == 0  # type: ignore[arg-type]


def test_wrong_password_is_one_clear_error(sent: Sent, dovecot: Dovecot, session: Session) -> None:
    settings = dovecot.settings(sent.settings).replace(imap_password="wrong", pop3_password="wrong")
    with pytest.raises(mailboxes.MailboxUnreadable, match="IMAP 127.0.0.1"):
        mailboxes.read_imap(session.get_bind(), settings)  # type: ignore[arg-type]
    with pytest.raises(mailboxes.MailboxUnreadable, match="POP3 127.0.0.1"):
        mailboxes.read_pop3(session.get_bind(), settings)  # type: ignore[arg-type]


def test_imap_through_the_cli(tmp_path: Path, session: Session, sent: Sent, dovecot: Dovecot) -> None:
    session.commit()
    dovecot.append(messages_for(sent))
    config = write_config(
        tmp_path,
        sent.settings,
        imap_host="127.0.0.1",
        imap_port=dovecot.imap_port,
        imap_username=dovecot.user,
        imap_password=dovecot.password,
        imap_security="none",
    )
    result = CliRunner().invoke(main, ["--config", str(config), "inbound", "--imap"])
    assert result.exit_code == 0, result.output
    assert "Read 3 messages" in result.output
    assert_list_cleaned(session, sent)


class StopWatching(Exception):
    pass


def test_watch_keeps_reading_and_survives_a_missing_mailbox(
    tmp_path: Path, session: Session, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    session.commit()
    maildir = tmp_path / "Maildir"
    config = write_config(tmp_path, sent.settings, inbound_poll_seconds=0.01)
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 1:  # the mailbox appears between two polls
            make_maildir(maildir, messages_for(sent))
        if len(polls) == 3:
            raise StopWatching

    monkeypatch.setattr("newsletter.cli.time.sleep", sleep)
    result = CliRunner().invoke(main, ["--config", str(config), "inbound", "--maildir", str(maildir), "--watch"])
    assert isinstance(result.exception, StopWatching)
    assert polls == [0.01, 0.01, 0.01]
    assert "not a Maildir" in result.output
    assert "Read 3 messages" in result.output and "Read 0 messages" in result.output
    assert_list_cleaned(session, sent)
