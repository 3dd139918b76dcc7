"""Flow helpers for the web tests: read a form's hidden fields, sign up, and open the mailed links."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from html import unescape

import httpx
from httpx import Response
from sqlalchemy import Engine
from starlette.types import ASGIApp

from newsletter import database
from newsletter.models import OutboundMessage, Subscriber

LINK = re.compile(r"https?://[^\s\"<>]+/confirm/[A-Za-z0-9_.\-]+")


def hidden(html: str, name: str) -> str:
    """The value of the form field `name` in a page."""
    match = re.search(rf'name="{re.escape(name)}"[^>]*?value="([^"]*)"', html) or re.search(
        rf'value="([^"]*)"[^>]*?name="{re.escape(name)}"', html
    )
    assert match, f"no field {name!r} in the page"
    return unescape(match.group(1))


def client_for(app: ASGIApp, base_url: str) -> httpx.AsyncClient:
    """An in-process client of `app`, from 127.0.0.1."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=base_url)


async def sign_up(client: httpx.AsyncClient, email_address: str, name: str = "", **extra: str) -> Response:
    """Open the form and post it, as a person does."""
    form = await client.get("/subscribe")
    assert form.status_code == 200
    data = {"email": email_address, "name": name, "stamp": hidden(form.text, "stamp"), "website": "", **extra}
    return await client.post("/subscribe", data=data)


def stored_message(engine: Engine, outbound_id: int) -> EmailMessage:
    with database.transaction(engine) as session:
        row = session.get(OutboundMessage, outbound_id)
        assert row is not None
        raw = row.message
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def confirm_link(message: EmailMessage) -> str:
    """The confirmation link of a mail: the same in its text and HTML parts."""
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert text_part is not None and html_part is not None
    from_text = LINK.findall(text_part.get_content())
    from_html = LINK.findall(unescape(html_part.get_content()))
    assert from_text and set(from_html) == {from_text[0]}
    return str(from_text[0])


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def status_of(engine: Engine, email_address: str) -> str | None:
    with database.transaction(engine) as session:
        subscriber = session.query(Subscriber).filter_by(email_key=email_address.lower()).one_or_none()
        return None if subscriber is None else subscriber.status


async def press_button(client: httpx.AsyncClient, path: str, **extra: str) -> Response:
    """GET the page at `path`, then post its form with the CSRF token, as the button does."""
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return await client.post(path, data={"csrf_token": hidden(page.text, "csrf_token"), **extra})
