"""DKIM: every message of a send is signed, and the signature covers the one-click unsubscribe headers."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from pathlib import Path

import dkim
import dkim.crypto
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Engine

from newsletter import campaign, confirmation, database, domainkeys, optin
from newsletter.domainkeys import DkimSigner
from newsletter.errors import ConfigError
from newsletter.queue import Queue
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from newsletter.tokens import Signer
from tests.mailserver import MailSink

ISSUE = "---\nsubject: Signed notes\nslug: signed-1\n---\n\n# Signed notes\n\nHello.\n"


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A fresh RSA key: the PEM file the settings name, and the TXT record DNS would publish."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("dkim") / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def test_a_confirmation_mail_is_signed_too(
    engine: Engine, settings: Settings, smtpd: MailSink, key_pair: tuple[Path, bytes]
) -> None:
    path, record = key_pair
    signing = settings.replace(
        smtp_host="127.0.0.1", smtp_port=smtpd.port, dkim_private_key_path=str(path), dkim_selector="news2026"
    )
    queue = Queue(signing, engine)
    queue.start_worker()
    try:
        with database.transaction(engine) as session:
            request = optin.subscribe(session, signing, "new@example.com", None)
            outbound_id = confirmation.store_confirmation(session, signing, Signer(signing.secret_key), request)
        assert outbound_id is not None
        queue.send_message(outbound_id)
        deadline = time.monotonic() + 10
        while not smtpd.received and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        queue.stop()
    [received] = smtpd.received
    assert dkim.verify(received.data, dnsfunc=lambda name, timeout=5: record)
    assert received.mail_from.startswith("bounces+")


def test_a_sent_issue_verifies_and_signs_the_unsubscribe_headers(
    engine: Engine, settings: Settings, smtpd: MailSink, key_pair: tuple[Path, bytes]
) -> None:
    path, record = key_pair
    signing = settings.replace(
        smtp_host="127.0.0.1", smtp_port=smtpd.port, dkim_private_key_path=str(path), dkim_selector="news2026"
    )
    with database.transaction(engine) as session:
        add_subscriber(session, "signed@example.com", "Signed Reader")
    campaign.send_issue(engine, Queue(signing, engine), render_issue(ISSUE, signing))
    [received] = smtpd.received

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"news2026._domainkey.example.org."
        return record

    assert dkim.verify(received.data, dnsfunc=dns)
    signature = received.header("DKIM-Signature")
    signed = re.search(r"h=([^;]+)", signature)
    assert signed is not None
    names = {name.strip().lower() for name in signed.group(1).replace(" ", "").split(":")}
    assert {"from", "list-unsubscribe", "list-unsubscribe-post", "message-id", "subject"} <= names
    assert "d=example.org" in signature
    tampered = received.data.replace(
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks"
    )
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_no_key_no_signer_and_a_bad_key_fails_at_start(settings: Settings, tmp_path: Path) -> None:
    assert DkimSigner.from_settings(settings) is None
    with pytest.raises(ConfigError, match="dkim_selector"):
        DkimSigner.from_settings(settings.replace(dkim_private_key_path=str(tmp_path / "k.pem")))
    with pytest.raises(ConfigError, match="cannot read"):
        DkimSigner.from_settings(settings.replace(dkim_private_key_path=str(tmp_path / "k.pem"), dkim_selector="s"))
    (tmp_path / "k.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="DKIM"):
        DkimSigner.from_settings(settings.replace(dkim_private_key_path=str(tmp_path / "k.pem"), dkim_selector="s"))


def test_openssl_signs_exactly_as_dkimpy_would(key_pair: tuple[Path, bytes]) -> None:
    """PKCS#1 v1.5 signatures are deterministic: OpenSSL's must be the very bytes of dkimpy's own."""
    private_key = dkim.crypto.parse_pem_private_key(key_pair[0].read_bytes())
    for text in (b"", b"one message", b"x" * 10_000):
        assert domainkeys._openssl_rsa_sign(hashlib.sha256(text), private_key) == bytes(
            domainkeys._python_rsa_sign(hashlib.sha256(text), private_key)
        )
    assert dkim.RSASSA_PKCS1_v1_5_sign is domainkeys._openssl_rsa_sign
