"""The desk's issue pages: paste or upload, preview frames, preflight, test send, confirmed send and its progress."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import Engine

from newsletter import database
from newsletter.models import AccountRole, Event, Issue, IssueStatus
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from subscribers.app import create_app
from tests.deskflow import EDITOR, VIEWER, make_account, post_form, sign_in
from tests.mailserver import MailSink
from tests.webflow import client_for, hidden

pytestmark = pytest.mark.anyio
ISSUE = "---\ntitle: Spring notes\nslug: spring\n---\n\nHello.\n\n![chart](img/chart.png)\n\nTODO more.\n"
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    b"\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82"
)


@pytest.fixture
async def desk(settings: Settings, engine: Engine, smtpd: MailSink) -> AsyncIterator[httpx.AsyncClient]:
    """A signed-in editor's client of a web app that sends to the test SMTP server."""
    smtp = settings.replace(smtp_host="127.0.0.1", smtp_port=smtpd.port, smtp_connections=2, batch_size=5)
    app = create_app(smtp, engine, enqueue=lambda _id: None)
    make_account(engine)
    async with client_for(app, settings.base_url) as client:
        await sign_in(client)
        yield client
    app.state.context.sends.join(30)


async def save_issue(client: httpx.AsyncClient) -> httpx.Response:
    page = await client.get("/admin/issues/new")
    return await client.post(
        "/admin/issues/new",
        data={"csrf_token": hidden(page.text, "csrf_token"), "source": ISSUE, "subject": ""},
        files=[("images", ("chart.png", PNG, "image/png"))],
    )


async def test_saved_issue_shows_previews_text_and_preflight(desk: httpx.AsyncClient) -> None:
    saved = await save_issue(desk)
    assert saved.status_code == 303 and saved.headers["location"].startswith("/admin/issues/spring")
    page = await desk.get("/admin/issues/spring")
    assert page.status_code == 200
    assert page.text.count("<iframe") == 4 and "scheme=dark" in page.text
    assert "It was sent\nto reader@example.com." in page.text  # the text part, filled for the sample reader
    assert "placeholder" in page.text  # the preflight report names the TODO
    assert "script-src 'self'" in page.headers["content-security-policy"]
    frame = await desk.get("/admin/issues/spring/email.html?scheme=dark")
    assert (
        frame.headers["x-frame-options"] == "SAMEORIGIN"
        and "frame-ancestors 'self'" in frame.headers["content-security-policy"]
    )
    assert "prefers-color-scheme" not in frame.text and "data:image/png;base64," in frame.text


async def test_bad_issue_text_is_a_clear_error(desk: httpx.AsyncClient) -> None:
    page = await desk.get("/admin/issues/new")
    answer = await desk.post("/admin/issues/new", data={"csrf_token": hidden(page.text, "csrf_token"), "source": ""})
    assert answer.status_code == 422 and "paste the issue" in answer.text
    answer = await desk.post(
        "/admin/issues/new",
        data={"csrf_token": hidden(page.text, "csrf_token")},
        files={"file": ("x.md", b"\xff\xfe\x00bad", "text/markdown")},
    )
    assert answer.status_code == 422 and "UTF-8" in answer.text


async def test_test_send_reaches_the_address_only(desk: httpx.AsyncClient, smtpd: MailSink) -> None:
    await save_issue(desk)
    answer = await post_form(desk, "/admin/issues/spring", "/admin/issues/spring/test", address="me@example.org")
    assert answer.status_code == 200 and "Test sent to me@example.org" in answer.text
    assert [message.recipient for message in smtpd.received] == ["me@example.org"]
    assert smtpd.received[0].header("subject").startswith("[TEST]")
    bad = await post_form(desk, "/admin/issues/spring", "/admin/issues/spring/test", address="me@\r\nexample.org")
    assert bad.status_code == 422


async def test_send_after_confirmation_reaches_everyone(
    desk: httpx.AsyncClient, engine: Engine, smtpd: MailSink
) -> None:
    with database.transaction(engine) as session:
        for number in range(7):
            add_subscriber(session, f"reader{number}@example.org", f"Reader {number}")
    await save_issue(desk)
    confirm = await desk.get("/admin/issues/spring/send")
    assert "Send to 7 now" in confirm.text
    answer = await desk.post("/admin/issues/spring/send", data={"csrf_token": hidden(confirm.text, "csrf_token")})
    assert answer.status_code == 303
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = (await desk.get("/admin/issues/spring/progress.json")).json()
        if progress["finished"]:
            break
        time.sleep(0.2)
    assert progress["finished"] and progress["counts"]["sent"] == 7
    assert len(smtpd.received) == 7
    page = await desk.get("/admin/issues/spring")
    assert "Messages accepted per minute" in page.text
    with database.transaction(engine) as session:
        issue = session.query(Issue).filter_by(slug="spring").one()
        assert issue.status == IssueStatus.SENT
        assert session.query(Event).filter_by(issue_id=issue.id, kind="issue_send").one().actor == EDITOR


async def test_viewer_cannot_send(settings: Settings, engine: Engine) -> None:
    make_account(engine, VIEWER, AccountRole.VIEWER)
    app = create_app(settings, engine, enqueue=lambda _id: None)
    async with client_for(app, settings.base_url) as client:
        await sign_in(client, VIEWER)
        page = await client.get("/admin/issues/new")
        answer = await client.post(
            "/admin/issues/new", data={"csrf_token": hidden(page.text, "csrf_token"), "source": ISSUE}
        )
        assert answer.status_code == 403
        with database.transaction(engine) as session:
            assert session.query(Issue).count() == 0
        assert (await client.get("/admin/issues")).status_code == 200


async def test_unknown_issue_is_404(desk: httpx.AsyncClient) -> None:
    for path in ("/admin/issues/nothing", "/admin/issues/nothing/email.html", "/admin/issues/nothing/progress.json"):
        assert (await desk.get(path)).status_code == 404, path
    assert re.search("Not found", (await desk.get("/admin/issues/nothing")).text)


async def test_schedule_after_confirmation_and_cancel(desk: httpx.AsyncClient) -> None:
    await save_issue(desk)
    confirm = await desk.get("/admin/issues/spring/send")
    assert 'name="at"' in confirm.text
    token = hidden(confirm.text, "csrf_token")
    past = await desk.post("/admin/issues/spring/schedule", data={"csrf_token": token, "at": "2001-01-01T09:00"})
    assert past.status_code == 422 and "already past" in past.text
    bad_zone = await desk.post(
        "/admin/issues/spring/schedule", data={"csrf_token": token, "at": "2099-01-01T09:00", "timezone": "Mars/Base"}
    )
    assert bad_zone.status_code == 422
    answer = await desk.post(
        "/admin/issues/spring/schedule",
        data={"csrf_token": token, "at": "2099-01-01T09:00", "timezone": "Asia/Shanghai"},
    )
    assert answer.status_code == 303
    page = await desk.get(answer.headers["location"])
    assert "2099-01-01 09:00 Asia/Shanghai" in page.text
    assert "is scheduled for 2099-01-01 09:00" in (await desk.get("/admin")).text
    schedule_id = re.search(r"Cancel #(\d+)", page.text)
    assert schedule_id
    cancelled = await post_form(
        desk, "/admin/issues/spring", f"/admin/issues/spring/schedule/{schedule_id.group(1)}/cancel"
    )
    assert cancelled.status_code == 303
    assert "Cancel #" not in (await desk.get("/admin/issues/spring")).text


async def test_scheduled_draft_starts_at_its_time(desk: httpx.AsyncClient, settings: Settings, engine: Engine) -> None:
    import datetime as dt

    from newsletter import schedule

    with database.transaction(engine) as session:
        add_subscriber(session, "reader@example.org")
    await save_issue(desk)
    confirm = await desk.get("/admin/issues/spring/send")
    answer = await desk.post(
        "/admin/issues/spring/schedule",
        data={"csrf_token": hidden(confirm.text, "csrf_token"), "at": "2099-01-01T09:00", "timezone": "UTC"},
    )
    assert answer.status_code == 303
    started = schedule.start_due(engine, settings, now=dt.datetime(2099, 1, 1, 9, 0, 5, tzinfo=dt.UTC))
    with database.transaction(engine) as session:
        issue = session.query(Issue).filter_by(slug="spring").one()
        assert started == [issue.id] and issue.status == IssueStatus.SENDING


async def test_send_to_a_segment_counts_and_reaches_only_it(
    desk: httpx.AsyncClient, engine: Engine, smtpd: MailSink
) -> None:
    from newsletter import tags

    with database.transaction(engine) as session:
        vip = add_subscriber(session, "vip@example.org")
        add_subscriber(session, "other@example.org")
        tags.add_tags(session, [vip.id], ["vip"])
    await save_issue(desk)
    assert "Send to 2 now" in (await desk.get("/admin/issues/spring/send")).text
    counted = await desk.get("/admin/issues/spring/send?segment=vip")
    assert "Send to 1 now" in counted.text and "tagged vip" in counted.text
    assert (await desk.get("/admin/issues/spring/send?segment=vip,,x")).status_code == 422
    answer = await desk.post(
        "/admin/issues/spring/send", data={"csrf_token": hidden(counted.text, "csrf_token"), "segment": "vip"}
    )
    assert answer.status_code == 303
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (await desk.get("/admin/issues/spring/progress.json")).json()["finished"]:
        time.sleep(0.2)
    assert [message.recipient for message in smtpd.received] == ["vip@example.org"]
