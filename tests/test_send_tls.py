"""STARTTLS, implicit TLS and SMTP AUTH against aiosmtpd on loopback, with a throwaway CA made in the test."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from newsletter import campaign, database
from newsletter import sender as sender_module
from newsletter.models import Delivery, DeliveryStatus, Event, Subscriber, SubscriberStatus
from newsletter.queue import Queue
from newsletter.sender import Sender
from newsletter.settings import Settings
from newsletter.smtp import SessionRefused, SmtpConnection
from tests.mailserver import MailSink, running_sink
from tests.test_send import add_people, rendered

USERNAME = "newsletter"
PASSWORD = "correct horse battery staple"
MESSAGE = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nover TLS\r\n"


@dataclass(frozen=True)
class Certificates:
    """PEM files of a throwaway CA and of a server certificate it signed for 127.0.0.1."""

    ca_file: Path
    server_cert: Path
    server_key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        return context


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey, ca: bool
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA nobody else trusts, and a certificate for 127.0.0.1 it signed (EC keys: quick to make)."""
    directory = tmp_path_factory.mktemp("tls")
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Newsletter Test CA")])
    ca = _certificate("Newsletter Test CA", ca_key, ca_name, ca_key, ca=True)
    server = _certificate("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    files = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


class Credentials:
    """An aiosmtpd authenticator for one user; records every attempt and whether it came over TLS."""

    def __init__(self) -> None:
        self.password = PASSWORD
        self.attempts: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        login, password = auth_data.login.decode(), auth_data.password.decode()
        encrypted = server.transport.get_extra_info("ssl_object") is not None
        with self._lock:
            self.attempts.append((login, password, encrypted))
        return AuthResult(success=(login, password) == (USERNAME, self.password), handled=False)


class AuthenticatedSink(MailSink):
    """A MailSink that takes mail only from a session that passed AUTH (RFC 4954 6: 530 otherwise)."""

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"


@dataclass
class SecureServer:
    sink: MailSink
    port: int
    credentials: Credentials
    security: str


def server_options(security: str, certificates: Certificates, credentials: Credentials) -> dict[str, Any]:
    """aiosmtpd options for a server that demands `security`; AuthenticatedSink demands AUTH before any mail."""
    if security == "ssl":
        # Implicit TLS (RFC 8314 3.3): the whole connection is encrypted, and aiosmtpd's auth_require_tls
        # only knows STARTTLS, so it would never offer AUTH here.
        return {"ssl_context": certificates.server_context(), "authenticator": credentials, "auth_require_tls": False}
    return {
        "tls_context": certificates.server_context(),
        "require_starttls": True,
        "authenticator": credentials,
        "auth_require_tls": True,
    }


@pytest.fixture(params=["starttls", "ssl"])
def secure_smtpd(request: pytest.FixtureRequest, certificates: Certificates) -> Iterator[SecureServer]:
    """aiosmtpd demanding STARTTLS (or implicit TLS) and AUTH, with a certificate from the test CA."""
    credentials = Credentials()
    options = server_options(request.param, certificates, credentials)
    with running_sink(AuthenticatedSink(), **options) as (sink, port):
        yield SecureServer(sink, port, credentials, request.param)


def secure_settings(settings: Settings, server: SecureServer, certificates: Certificates, **changes: Any) -> Settings:
    return settings.replace(
        **{
            "smtp_host": "127.0.0.1",
            "smtp_port": server.port,
            "smtp_security": server.security,
            "smtp_ca_file": str(certificates.ca_file),
            "smtp_username": USERNAME,
            "smtp_password": PASSWORD,
            "smtp_connections": 2,
            "batch_size": 3,
            "retry_delay_seconds": 0.05,
            "max_attempts": 3,
            "lease_seconds": 30,
            "smtp_timeout": 10,
            **changes,
        }
    )


def test_an_issue_goes_out_over_tls_with_auth(
    engine: Engine, settings: Settings, secure_smtpd: SecureServer, certificates: Certificates
) -> None:
    addresses = add_people(engine, 5)
    config = secure_settings(settings, secure_smtpd, certificates)
    counts = campaign.send_issue(engine, Queue(config, engine), rendered(config))
    assert counts[DeliveryStatus.SENT] == 5 and counts.remaining == 0
    assert sorted(message.recipient for message in secure_smtpd.sink.received) == sorted(addresses)
    attempts = secure_smtpd.credentials.attempts
    assert attempts and len(attempts) <= config.smtp_connections, "one AUTH per persistent connection"
    assert all(attempt == (USERNAME, PASSWORD, True) for attempt in attempts), "checked, and only over TLS"


def test_an_untrusted_certificate_is_refused_before_any_credential(
    settings: Settings, secure_smtpd: SecureServer, certificates: Certificates
) -> None:
    connection = SmtpConnection(secure_settings(settings, secure_smtpd, certificates, smtp_ca_file=""))
    with pytest.raises(SessionRefused, match=r"certificate .* is not trusted \(.+\); set smtp_ca_file"):
        connection.send("bounces@example.org", "one@example.com", MESSAGE)
    assert secure_smtpd.credentials.attempts == [] and secure_smtpd.sink.received == []


def test_a_wrong_password_stops_the_send_and_bounces_no_one(
    engine: Engine, settings: Settings, session: Session, secure_smtpd: SecureServer, certificates: Certificates
) -> None:
    add_people(engine, 5)
    wrong = secure_settings(settings, secure_smtpd, certificates, smtp_password="wrong")
    issue = rendered(wrong)
    with pytest.raises(SessionRefused, match=r"refused AUTH as 'newsletter': 535 .*check smtp_username and "):
        campaign.send_issue(engine, Queue(wrong, engine), issue)
    assert secure_smtpd.credentials.attempts and secure_smtpd.sink.received == []
    statuses = session.execute(select(Delivery.status, Delivery.attempts)).all()
    assert statuses == [(DeliveryStatus.PENDING, 0)] * 5, "the rows stay claimable and the try is not counted"
    assert set(session.scalars(select(Subscriber.status))) == {SubscriberStatus.ACTIVE}
    assert session.scalar(select(func.count()).select_from(Event).where(Event.kind == "hard_bounce")) == 0
    right = secure_settings(settings, secure_smtpd, certificates)
    counts = campaign.send_issue(engine, Queue(right, engine), issue)
    assert counts[DeliveryStatus.SENT] == 5 and len(secure_smtpd.sink.received) == 5


def test_auth_is_never_sent_over_a_plain_connection(settings: Settings, certificates: Certificates) -> None:
    credentials = Credentials()
    with running_sink(AuthenticatedSink(), **server_options("starttls", certificates, credentials)) as (sink, port):
        plain = settings.replace(smtp_host="127.0.0.1", smtp_port=port, smtp_username=USERNAME, smtp_password=PASSWORD)
        connection = SmtpConnection(plain)
        with pytest.raises(SessionRefused, match="offers no AUTH"):
            connection.send("bounces@example.org", "one@example.com", MESSAGE)
    assert credentials.attempts == [] and sink.received == []


def test_a_worker_connects_again_once_the_wait_after_a_refusal_is_over(
    engine: Engine,
    settings: Settings,
    secure_smtpd: SecureServer,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sender_module, "SESSION_RETRY_SECONDS", 0.3)
    config = secure_settings(settings, secure_smtpd, certificates)
    add_people(engine, 3)
    issue_id = campaign.start(engine, rendered(config))
    with database.transaction(engine) as session:
        ids = list(session.scalars(select(Delivery.id).order_by(Delivery.id)))
    secure_smtpd.credentials.password = "changed on the server"
    sender = Sender(config, engine)
    try:
        first = sender.send_deliveries(issue_id, ids)
        assert first.ids == ids and first.ready_at is not None
        assert sender.send_deliveries(issue_id, ids).ids == ids
        assert len(secure_smtpd.credentials.attempts) == 1, "no AUTH again before the wait is over"
        secure_smtpd.credentials.password = PASSWORD
        time.sleep(0.35)
        assert sender.send_deliveries(issue_id, ids).ids == []
        assert len(secure_smtpd.sink.received) == 3
    finally:
        sender.close()
