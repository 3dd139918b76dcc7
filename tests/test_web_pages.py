"""The archive, health, security headers, error pages and logs without tokens."""

from __future__ import annotations

import datetime as dt
import logging
import xml.etree.ElementTree as ElementTree

import httpx
import pytest
from httpx import AsyncClient
from sqlalchemy import Engine

from newsletter import database, ledger, links
from newsletter.models import Issue, IssueStatus, utcnow
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from newsletter.tokens import Signer
from subscribers import app as web_app
from subscribers.app import create_app
from subscribers.logs import RedactTokens, redact
from subscribers.security import MAX_BODY_BYTES
from tests.webflow import client_for, path_of

pytestmark = pytest.mark.anyio
ATOM = "{http://www.w3.org/2005/Atom}"


def add_issue(engine: Engine, slug: str, subject: str, status: IssueStatus, days_ago: int = 0) -> None:
    with database.transaction(engine) as session:
        session.add(
            Issue(
                slug=slug,
                subject=subject,
                preheader=f"About {slug}",
                source_text="# x",
                source_hash="0" * 64,
                html=f"<html><body><p>email {slug}</p></body></html>",
                text="x",
                status=status,
                web_html=(
                    f'<!doctype html><html><body><h1>{subject}</h1><p style="color:red">web {slug}</p></body></html>'
                ),
                sent_at=utcnow() - dt.timedelta(days=days_ago) if status == IssueStatus.SENT else None,
            )
        )


async def test_archive_lists_sent_issues_newest_first(client: AsyncClient, engine: Engine) -> None:
    add_issue(engine, "first", "First <issue>", IssueStatus.SENT, days_ago=7)
    add_issue(engine, "second", "Second issue", IssueStatus.SENT)
    add_issue(engine, "draft", "Secret draft", IssueStatus.DRAFT)
    page = await client.get("/issues/")
    assert page.status_code == 200
    assert page.text.index("Second issue") < page.text.index("First &lt;issue&gt;")  # escaped, in order
    assert "Secret draft" not in page.text
    assert (await client.get("/issues")).headers["location"] == "/issues/"


async def test_issue_page_is_its_web_version(client: AsyncClient, engine: Engine, settings: Settings) -> None:
    add_issue(engine, "first", "First issue", IssueStatus.SENT)
    add_issue(engine, "draft", "Secret draft", IssueStatus.DRAFT)
    page = await client.get(path_of(links.issue_url(settings, "first")))
    assert page.status_code == 200 and "web first" in page.text and "email first" not in page.text
    policy = page.headers["content-security-policy"]
    assert "script" not in policy and "frame-ancestors 'none'" in policy and "'unsafe-inline'" in policy
    for missing in ("/issues/draft", "/issues/nothing-here"):
        answer = await client.get(missing)
        assert answer.status_code == 404 and "<h1>Not found</h1>" in answer.text


async def test_feed_is_atom(client: AsyncClient, engine: Engine, settings: Settings) -> None:
    add_issue(engine, "first", "First & best", IssueStatus.SENT, days_ago=1)
    add_issue(engine, "second", "Second", IssueStatus.SENT)
    feed = await client.get("/issues/feed.xml")
    assert feed.status_code == 200 and feed.headers["content-type"].startswith("application/atom+xml")
    root = ElementTree.fromstring(feed.content)
    assert root.tag == f"{ATOM}feed" and root.findtext(f"{ATOM}title") == settings.newsletter_name
    entries = root.findall(f"{ATOM}entry")
    assert [entry.findtext(f"{ATOM}title") for entry in entries] == ["Second", "First & best"]
    assert entries[1].findtext(f"{ATOM}id") == links.issue_url(settings, "first")
    content = entries[1].findtext(f"{ATOM}content") or ""
    assert "<h1>First & best</h1>" in content  # the HTML, escaped once in the XML
    assert "<body" not in content and "<html" not in content
    dt.datetime.fromisoformat(root.findtext(f"{ATOM}updated") or "")
    with database.transaction(engine) as session:
        session.query(Issue).delete()
    empty = ElementTree.fromstring((await client.get("/issues/feed.xml")).content)  # still a valid feed
    assert empty.findall(f"{ATOM}entry") == []


async def test_healthz(client: AsyncClient, settings: Settings) -> None:
    answer = await client.get("/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}
    broken = settings.replace(database_url="sqlite:////nonexistent-directory/x/newsletter.db")
    async with client_for(create_app(broken), settings.base_url) as down:
        answer = await down.get("/healthz")
        assert answer.status_code == 503 and "nonexistent" not in answer.text


async def test_security_headers_on_every_page(client: AsyncClient) -> None:
    for path in ("/subscribe", "/issues/", "/healthz", "/static/site.css", "/nowhere"):
        headers = (await client.get(path)).headers
        assert headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-content-type-options"] == "nosniff"
    assert (await client.get("/subscribe")).headers["cache-control"] == "no-store"


async def test_errors_are_pages_with_the_right_status(client: AsyncClient, settings: Settings, engine: Engine) -> None:
    assert (await client.get("/nowhere")).status_code == 404
    wrong = await client.delete("/subscribe")
    assert wrong.status_code == 405 and "<h1>" in wrong.text
    huge = await client.post("/subscribe", data={"email": "a@example.org", "name": "x" * (MAX_BODY_BYTES + 1)})
    assert huge.status_code == 413 and "<h1>" in huge.text


async def test_unexpected_error_is_a_page_without_traceback(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(web_app.archive.archive, "archive_entries", broken)
    transport = httpx.ASGITransport(create_app(settings, engine), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=settings.base_url) as client:
        answer = await client.get("/issues/")
    assert answer.status_code == 500 and "Something went wrong" in answer.text
    assert "Traceback" not in answer.text and "boom" not in answer.text


def test_logs_never_show_tokens(settings: Settings, engine: Engine) -> None:
    signer = Signer(settings.secret_key)
    with database.transaction(engine) as session:
        subscriber_id = add_subscriber(session, "ann@example.org").id
    url = links.unsubscribe_url(settings, signer, subscriber_id)
    token = url.rsplit("/", 1)[1]
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", f"/unsubscribe/{token}/resubscribe?email=a%40b", "1.1", 200),
        None,
    )
    RedactTokens().filter(record)
    line = record.getMessage()
    assert token not in line and "a%40b" not in line and "/unsubscribe/[token]/resubscribe" in line
    for path in (f"/confirm/{token}", f"/preferences/{token}/export"):
        assert token not in redact(f"GET {path} HTTP/1.1")


async def test_feed_entry_carries_the_issue_content_only(
    client: AsyncClient, engine: Engine, settings: Settings
) -> None:
    rendered = render_issue("---\nsubject: Notes\nslug: notes\n---\n\nHello **reader**.\n", settings)
    with database.transaction(engine) as session:
        issue = ledger.store_issue(session, rendered)
        issue.status, issue.sent_at = IssueStatus.SENT, utcnow()
    feed = ElementTree.fromstring((await client.get("/issues/feed.xml")).content)
    content = feed.findtext(f"{ATOM}entry/{ATOM}content") or ""
    assert "Hello <strong>reader</strong>." in content
    for page_part in ("<head", "<style", "<body", "nl-brand"):
        assert page_part not in content
