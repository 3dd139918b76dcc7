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
from dkim.canonicalization import Relaxed
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import Engine

from newsletter import campaign, confirmation, database, domainkeys, optin
from newsletter.domainkeys import FEW_SPACES, SIGNED_HEADERS, DkimSigner, relaxed_body
from newsletter.errors import ConfigError
from newsletter.mime import MessageTemplate
from newsletter.queue import Queue
from newsletter.render import render_issue, render_issue_file
from newsletter.settings import Settings
from newsletter.smtp import WireReady
from newsletter.subscriptions import add_subscriber
from newsletter.tokens import Signer
from tests.conftest import LINK_HEAVY_ISSUE, SAMPLE_FILES, recipient
from tests.mailserver import MailSink

ISSUE = "---\nsubject: Signed notes\nslug: signed-1\n---\n\n# Signed notes\n\nHello.\n"
# Quoted-printable English with runs of spaces and tabs, in prose and in indented code: relaxed
# canonicalization makes each run one space (quoted-printable writes the spaces that end a line as =20).
SPACED_ISSUE = (
    "---\nsubject: Spaced  out\nslug: spaced-1\n---\n\n# Spaced out\n\n"
    "Two  spaces,\ta tab,  and code:\n\n    def main():\n        if True:\n        \treturn  1   \n\n"
    "A line that ends in spaces   \nand the end.\n"
)
# Messages as they are written by hand or by the email package: no header block, no body, empty lines at
# the end, LF line ends, folded headers with runs of white space.
RAW_MESSAGES = {
    "trailing empty lines": WireReady(b"From: a@example.org\r\nSubject: s\r\n\r\nbody  text \r\n\r\n\r\n"),
    "trailing empty lines, plain bytes": b"From: a@example.org\r\nSubject: s\r\n\r\nbody\r\n\r\n\r\n",
    "only empty lines": WireReady(b"From: a@example.org\r\n\r\n\r\n\r\n"),
    "empty body": WireReady(b"From: a@example.org\r\nTo: b@example.com\r\n\r\n"),
    "no empty line": WireReady(b"From: a@example.org\r\nSubject: s\r\n"),
    "no header": WireReady(b"\r\nbody\r\n"),
    "LF line ends": b"From: a@example.org\nSubject:  s  \n\t folded\n\nline  one \t\n\tline two\n\n",
    "folded headers": WireReady(
        b"From: A  B <a@example.org>\r\nSubject: one\r\n \t two  \r\nTo: b@example.com\r\n"
        b"Subject: again\r\n\r\n\tbare\rCR  \r\n"
    ),
}


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


@pytest.fixture(scope="module")
def signer(key_pair: tuple[Path, bytes]) -> DkimSigner:
    return DkimSigner("news2026", "example.org", key_pair[0].read_bytes())


@pytest.fixture(params=[*(path.stem for path in SAMPLE_FILES), LINK_HEAVY_ISSUE.stem, "spaced", *RAW_MESSAGES])
def message(request: pytest.FixtureRequest, settings: Settings) -> bytes:
    """A message to sign: an issue's, filled for one reader (base64 or quoted-printable parts), or a raw one."""
    name = request.param
    if name in RAW_MESSAGES:
        return RAW_MESSAGES[name]
    paths = {path.stem: path for path in [*SAMPLE_FILES, LINK_HEAVY_ISSUE]}
    issue = render_issue(SPACED_ISSUE, settings) if name == "spaced" else render_issue_file(paths[name], settings)
    return MessageTemplate.build(issue, settings).fill(recipient())


def test_a_signature_is_the_very_bytes_of_dkimpys(
    signer: DkimSigner, key_pair: tuple[Path, bytes], message: bytes
) -> None:
    """Same canonicalization, signed headers, folding and RSA signature as dkim.sign makes at the same second."""
    reference = dkim.sign(
        message,
        b"news2026",
        b"example.org",
        key_pair[0].read_bytes(),
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=list(SIGNED_HEADERS),
    )
    stamped = re.search(rb"\bt=(\d+);", reference)
    assert stamped is not None
    assert signer.sign(message, now=int(stamped.group(1))) == reference + message


def test_a_signed_message_verifies(signer: DkimSigner, key_pair: tuple[Path, bytes], message: bytes) -> None:
    assert dkim.verify(signer.sign(message), dnsfunc=lambda name, timeout=5: key_pair[1])


def test_a_signed_issue_stays_wire_ready(signer: DkimSigner, settings: Settings) -> None:
    message = MessageTemplate.build(render_issue(SPACED_ISSUE, settings), settings).fill(recipient())
    assert isinstance(message, WireReady)
    assert isinstance(signer.sign(message), WireReady)


BODY_PIECES = [b" ", b"  ", b"\t", b"\r\n", b"\r", b"\n", b"a", b"=20", b"\x0b"]


@given(body=st.lists(st.sampled_from(BODY_PIECES), max_size=3 * FEW_SPACES).map(b"".join))
@example(body=b"a " * FEW_SPACES + b"a  a\r\n")
@example(body=b"a " * (FEW_SPACES + 1) + b"\r\n")
@example(body=b"a " * (FEW_SPACES + 1))
def test_the_relaxed_body_is_dkimpys(body: bytes) -> None:
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)
