"""The deliverability checklist against a real DNS server on loopback, and its page on the desk."""

from __future__ import annotations

from pathlib import Path

import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from httpx import AsyncClient
from sqlalchemy import Engine

from newsletter import deliverability
from newsletter.deliverability import Verdict
from newsletter.settings import Settings
from tests.deskflow import make_account, sign_in
from tests.dnsserver import running_dns


@pytest.fixture
def dkim_settings(settings: Settings, tmp_path: Path) -> Settings:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "dkim.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return settings.replace(dkim_private_key_path=str(path), dkim_selector="news", smtp_password="hunter2hunter2")


def verdicts(checks: list[deliverability.Check]) -> dict[str, Verdict]:
    return {check.name: check.verdict for check in checks}


def test_published_records_pass(dkim_settings: Settings) -> None:
    dkim = deliverability.dkim_public_record(dkim_settings)
    assert dkim is not None and dkim.startswith("v=DKIM1; k=rsa; p=MII")
    records = {
        ("example.org", "TXT"): ['"v=spf1 include:_spf.example.net -all"'],
        ("news._domainkey.example.org", "TXT"): [" ".join(f'"{dkim[i : i + 200]}"' for i in range(0, len(dkim), 200))],
        ("_dmarc.example.org", "TXT"): ['"v=DMARC1; p=quarantine"'],
        ("example.org", "MX"): ["10 mx.example.org."],
    }
    with running_dns(records) as resolver:
        checks = deliverability.checklist(dkim_settings, "en", resolver)
    assert verdicts(checks) == {"SPF": "ok", "DKIM": "ok", "DMARC": "ok", "Bounce MX": "ok"}


def test_missing_and_wrong_records_are_named(dkim_settings: Settings) -> None:
    records = {
        ("example.org", "TXT"): ['"google-site-verification=abc"'],
        ("news._domainkey.example.org", "TXT"): ['"v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAold"'],
    }
    with running_dns(records) as resolver:
        checks = deliverability.checklist(dkim_settings, "en", resolver)
    assert verdicts(checks) == {"SPF": "missing", "DKIM": "wrong", "DMARC": "missing", "Bounce MX": "missing"}


def test_offline_says_cannot_check(settings: Settings) -> None:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = 9  # discard: nothing answers
    resolver.lifetime = 0.5
    checks = deliverability.checklist(settings, "en", resolver)
    assert verdicts(checks)["SPF"] == "cannot check" and verdicts(checks)["DMARC"] == "cannot check"


def test_secrets_are_masked(dkim_settings: Settings) -> None:
    with_password = dkim_settings.replace(database_url="postgresql://u:pw@db/news")
    shown = dict(deliverability.settings_in_effect(with_password, "en"))
    assert shown["smtp_password"] == deliverability.MASK and shown["secret_key"] == deliverability.MASK
    assert shown["imap_password"] == "(not set)"
    assert shown["database_url"] == f"postgresql://u:{deliverability.MASK}@db/news"
    assert "hunter2" not in str(shown)


@pytest.mark.anyio
async def test_desk_pages_show_checklist_and_bounces(client: AsyncClient, engine: Engine) -> None:
    make_account(engine)
    await sign_in(client)
    page = await client.get("/admin/deliverability")
    assert page.status_code == 200 and "_dmarc.example.org" in page.text and "test-secret-key" not in page.text
    bounces = await client.get("/admin/bounces?days=90")
    assert bounces.status_code == 200 and "Suppressed in the last 90 days" in bounces.text


@pytest.mark.anyio
async def test_kept_messages_are_applied_or_dismissed(client: AsyncClient, engine: Engine) -> None:
    from newsletter import database
    from newsletter.models import Event, UnrecognizedMessage
    from tests.deskflow import post_form

    make_account(engine)
    await sign_in(client)
    with database.transaction(engine) as session:
        kept = UnrecognizedMessage(
            source="maildir",
            external_id="message:abc",
            sender="someone@example.net",
            subject="<b>hi</b>",
            note="no report",
            size_bytes=10,
            raw=b"Subject: hi\r\n\r\nhi\r\n",
            kind="unrecognized",
        )
        session.add(kept)
        session.flush()
        kept_id = kept.id
    page = await client.get("/admin/bounces")
    assert f"Dismiss #{kept_id}" in page.text and "&lt;b&gt;hi" in page.text and f"Apply #{kept_id}" not in page.text
    answer = await post_form(client, "/admin/bounces", f"/admin/bounces/kept/{kept_id}/dismiss")
    assert answer.status_code == 303
    with database.transaction(engine) as session:
        assert session.get_one(UnrecognizedMessage, kept_id).dismissed_at is not None
        assert session.query(Event).filter_by(kind="kept_dismissed").one().actor == "editor@example.org"
    assert f"Dismiss #{kept_id}" not in (await client.get("/admin/bounces")).text
    again = await post_form(client, "/admin/bounces", f"/admin/bounces/kept/{kept_id}/dismiss")
    assert again.status_code == 404
