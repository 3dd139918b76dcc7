"""A relay that refused our session, seen on the desk's dashboard whichever process sent: kept in the database,
one row however often it refuses, and shown as past once mail goes out again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from httpx import AsyncClient
from sqlalchemy import Engine, func, select

from newsletter import campaign, database
from newsletter.models import DeliveryStatus, RelayRefusal
from newsletter.queue import Queue
from newsletter.settings import Settings
from newsletter.smtp import SessionRefused
from tests.deskflow import make_account, sign_in
from tests.mailserver import running_sink
from tests.test_send import add_people, rendered
from tests.test_send_tls import PASSWORD, USERNAME, AuthenticatedSink, Credentials

pytestmark = pytest.mark.anyio
REFUSAL = "refused AUTH as 'newsletter': 535"


@pytest.fixture
def relay() -> Iterator[tuple[int, Credentials]]:
    """aiosmtpd that takes mail only after AUTH (offered without TLS, on loopback): its port and its password."""
    credentials = Credentials()
    with running_sink(AuthenticatedSink(), authenticator=credentials, auth_require_tls=False) as (_sink, port):
        yield port, credentials


def relay_settings(settings: Settings, port: int) -> Settings:
    return settings.replace(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_username=USERNAME,
        smtp_password=PASSWORD,
        smtp_connections=2,
        batch_size=3,
        retry_delay_seconds=0.05,
    )


def refused_send(engine: Engine, settings: Settings) -> None:
    """`newsletter send`'s embedded path (the in-process worker) against a relay refusing AUTH: it stops."""
    with pytest.raises(SessionRefused, match=REFUSAL):
        campaign.send_issue(engine, Queue(settings, engine), rendered(settings))


async def test_a_refusal_in_another_process_is_on_the_dashboard_until_mail_goes_out(
    client: AsyncClient, engine: Engine, settings: Settings, relay: tuple[int, Credentials]
) -> None:
    port, credentials = relay
    add_people(engine, 3)
    make_account(engine)
    await sign_in(client)  # this app instance sends nothing: what it shows comes from the database
    credentials.password = "changed on the relay"
    refused_send(engine, relay_settings(settings, port))
    refused_send(engine, relay_settings(settings, port))  # refused again: the same row, one more try
    with database.transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(RelayRefusal)) == 1
        row = session.scalars(select(RelayRefusal)).one()
        assert row.attempts >= 2 and row.cleared_at is None and REFUSAL in row.reply
    dashboard = (await client.get("/admin")).text
    assert f"The relay 127.0.0.1:{port} refuses our session" in dashboard
    assert "refused AUTH as &#39;newsletter&#39;: 535" in dashboard and "Past:" not in dashboard

    credentials.password = PASSWORD  # the editor puts the right password in the settings
    counts = campaign.send_issue(engine, Queue(relay_settings(settings, port), engine), rendered(settings))
    assert counts[DeliveryStatus.SENT] == 3
    dashboard = (await client.get("/admin")).text
    assert "refuses our session" not in dashboard
    assert f"Past: the relay 127.0.0.1:{port} refused our session" in dashboard and "535" in dashboard


async def test_a_new_refusal_after_mail_went_out_counts_afresh(engine: Engine, settings: Settings) -> None:
    from newsletter import relays

    with database.transaction(engine) as session:
        relays.record_refusal(session, "relay:25", "535 no")
        relays.record_refusal(session, "relay:25", "535 no")
        relays.record_accepted(session)
        relays.record_refusal(session, "relay:25", "535 no")
        relays.record_refusal(session, "relay:25", "554 other")
        row = session.scalars(select(RelayRefusal)).one()
        assert (row.attempts, row.reply, row.cleared_at) == (1, "554 other", None)
