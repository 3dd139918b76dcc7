"""Confirmation and welcome mails that go nowhere reach the editor: nothing sends them (no worker runs), or the
relay refuses them. Either way readers signed up and never got their link."""

from __future__ import annotations

import datetime as dt
import html
import time

import pytest
from httpx import AsyncClient
from sqlalchemy import Engine, update

from newsletter import database, outbox
from newsletter.models import DeliveryStatus, OutboundMessage, utcnow
from newsletter.queue import Queue
from newsletter.settings import Settings
from tests.deskflow import make_account, sign_in
from tests.mailserver import MailSink

pytestmark = pytest.mark.anyio
MESSAGE = b"From: editor@example.org\r\nTo: x@example.com\r\nSubject: Confirm\r\n\r\nPlease confirm.\r\n"
REFUSED = "554 5.7.1 Message rejected as spam"


def stored(engine: Engine, recipient: str, minutes_ago: float, attempts: int = 0, kind: str = "confirmation") -> int:
    with database.transaction(engine) as session:
        outbound_id = outbox.store_message(session, kind, "bounces@example.org", recipient, MESSAGE)
        session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.id == outbound_id)
            .values(created_at=utcnow() - dt.timedelta(minutes=minutes_ago), attempts=attempts)
        )
    return outbound_id


async def test_mails_nothing_sends_are_on_the_dashboard(client: AsyncClient, engine: Engine) -> None:
    make_account(engine)
    await sign_in(client)
    stored(engine, "fresh@example.com", minutes_ago=1)  # a worker has not had its turn yet: no alarm
    stored(engine, "retried@example.com", minutes_ago=30, attempts=1)  # tried, and waiting for its retry
    assert "went to no SMTP server" not in (await client.get("/admin")).text
    stored(engine, "stuck@example.com", minutes_ago=11)
    stored(engine, "stuck2@example.com", minutes_ago=60)
    dashboard = html.unescape((await client.get("/admin")).text)
    assert "2 confirmation mails stored over 10 minutes ago went to no SMTP server yet" in dashboard
    assert "`newsletter worker` must run" in dashboard and "/admin/deliverability#one-off" in dashboard
    page = (await client.get("/admin/deliverability")).text
    row = page.split('<th scope="row">Confirmation</th>')[1].split("</tr>")[0]
    # sent, waiting, retrying, sending, failed, bounced
    assert [cell.split(">")[1] for cell in row.split("</td>")[:-1]] == ["0", "3", "1", "0", "0", "0"]


async def test_mails_the_relay_refuses_are_on_the_dashboard_with_its_reply(
    client: AsyncClient, engine: Engine, settings: Settings, smtpd: MailSink
) -> None:
    make_account(engine)
    await sign_in(client)
    smtpd.fail("refused@example.com", "DATA", REFUSED)
    ids = [stored(engine, "refused@example.com", minutes_ago=0), stored(engine, "taken@example.com", minutes_ago=0)]
    queue = Queue(settings.replace(smtp_host="127.0.0.1", smtp_port=smtpd.port), engine)
    queue.start_worker(1)
    try:
        queue.send_messages(ids)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(final(engine, outbound_id) for outbound_id in ids):
            time.sleep(0.05)
    finally:
        queue.stop()
    dashboard = html.unescape((await client.get("/admin")).text)
    assert f"1 confirmation mail failed in the last 7 days, the last with: {REFUSED}" in dashboard
    page = html.unescape((await client.get("/admin/deliverability")).text)
    failures = page.split("Latest failures")[1]
    assert "refused@example.com" in failures and REFUSED in failures and "taken@example.com" not in failures


async def test_old_failures_are_not_named_again(client: AsyncClient, engine: Engine) -> None:
    make_account(engine)
    await sign_in(client)
    old = stored(engine, "long-ago@example.com", minutes_ago=8 * 24 * 60)
    with database.transaction(engine) as session:
        session.execute(update(OutboundMessage).where(OutboundMessage.id == old).values(status=DeliveryStatus.FAILED))
    assert "failed in the last" not in (await client.get("/admin")).text
    assert "None in the last 7 days" in (await client.get("/admin/deliverability")).text


def final(engine: Engine, outbound_id: int) -> bool:
    with database.transaction(engine) as session:
        return session.get_one(OutboundMessage, outbound_id).status not in (
            DeliveryStatus.PENDING,
            DeliveryStatus.SENDING,
        )
