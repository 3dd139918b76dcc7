"""The double opt-in mail: MJML template plus a text part, stored and sent through the outbound queue."""

from __future__ import annotations

import base64
import functools
import math
import secrets
from email.header import Header
from email.utils import formataddr, formatdate, make_msgid
from html import escape

import mjml
from jinja2 import Environment, StrictUndefined
from sqlalchemy.orm import Session

from newsletter import links, outbox
from newsletter.models import Subscriber
from newsletter.optin import ConfirmationRequest, confirmation_token
from newsletter.resources import template_loader
from newsletter.settings import Settings
from newsletter.tokens import Signer

TEMPLATE_NAME = "confirm.mjml.j2"
OUTBOUND_KIND = "confirmation"


def subject_of(settings: Settings) -> str:
    return f"Confirm your subscription to {settings.newsletter_name}"


# Per-recipient values enter the rendered HTML as plain string replacements (ARCHITECTURE: MJML once,
# never per recipient); the markers are letters and digits only, so MJML passes them through untouched.
SLOTS = {"greeting": "slotgreeting9q7", "email": "slotemail9q7", "confirm_url": "slotconfirmurl9q7"}


def confirmation_message(
    settings: Settings, signer: Signer, subscriber: Subscriber, request: ConfirmationRequest
) -> bytes:
    """The confirmation mail for one request (CRLF bytes): HTML from templates/confirm.mjml.j2 and a text part.

    Written out directly rather than through the `email` package, whose header objects cost milliseconds
    a message, spent while the sign-up holds the database's write lock.
    """
    settings.require("from_address", "secret_key")
    url = links.confirm_url(settings, confirmation_token(signer, request))
    valid_days = max(1, math.floor(settings.confirm_max_age_seconds / 86400))
    html = _html_template(settings.template_dir, settings.newsletter_name, settings.postal_address, valid_days)
    values = {"greeting": _greeting(subscriber), "email": subscriber.email, "confirm_url": url}
    for slot, value in values.items():
        html = html.replace(SLOTS[slot], escape(value, quote=True))
    headers = [
        ("Subject", _encoded(subject_of(settings))),
        ("From", _mailbox(settings.from_name, settings.from_address)),
        ("To", _mailbox(subscriber.name or "", subscriber.email)),
        *([("Reply-To", settings.reply_to)] if settings.reply_to else []),
        ("Date", formatdate(localtime=False, usegmt=True)),
        ("Message-ID", make_msgid(idstring="confirm", domain=links.sender_domain(settings))),
        ("Auto-Submitted", "auto-generated"),  # RFC 3834: no vacation replies to a confirmation
    ]
    return _multipart_alternative(headers, _text(settings, subscriber, url, valid_days), html)


def _encoded(value: str) -> str:
    """A header value, RFC 2047-encoded when it is not ASCII."""
    return value if value.isascii() else Header(value, "utf-8").encode()


def _mailbox(name: str, address: str) -> str:
    if not address.isascii():  # an internationalized address travels as UTF-8 (RFC 6532)
        return f"{_encoded(name)} <{address}>" if name else address
    return formataddr((name, address), charset="utf-8")


def _multipart_alternative(headers: list[tuple[str, str]], text: str, html: str) -> bytes:
    boundary = f"=_{secrets.token_hex(16)}"
    lines = [f"{name}: {value}" for name, value in headers]
    lines += ["MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{boundary}"', ""]
    head = "\r\n".join(lines).encode("utf-8")
    parts = []
    for subtype, body in (("plain", text), ("html", html)):
        # base64 is encoded in C; quoted-printable of 15 kB of HTML costs milliseconds in pure Python.
        encoded = base64.encodebytes(body.encode("utf-8")).replace(b"\n", b"\r\n")
        parts.append(
            f"--{boundary}\r\nContent-Type: text/{subtype}; charset=utf-8\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n".encode()
            + encoded
        )
    return head + b"\r\n" + b"".join(parts) + f"--{boundary}--\r\n".encode()


def store_confirmation(
    session: Session, settings: Settings, signer: Signer, request: ConfirmationRequest | None
) -> int | None:
    """Keep the confirmation mail in the outbound ledger (same transaction as the request); returns its id."""
    if request is None:
        return None
    subscriber = session.get(Subscriber, request.subscriber_id)
    if subscriber is None:
        return None
    message = confirmation_message(settings, signer, subscriber, request)
    local, domain = links.bounce_base(settings)
    return outbox.store_message(session, OUTBOUND_KIND, f"{local}@{domain}", subscriber.email, message)


@functools.lru_cache(maxsize=8)
def _html_template(template_dir: str, newsletter_name: str, postal_address: str, valid_days: int) -> str:
    """The confirmation mail's HTML with slot markers: Jinja2 and MJML run once per process and settings."""
    environment = Environment(loader=template_loader(template_dir), autoescape=True, undefined=StrictUndefined)
    mjml_text = environment.get_template(TEMPLATE_NAME).render(
        subject=f"Confirm your subscription to {newsletter_name}",
        preview=f"One click to start receiving {newsletter_name}.",
        newsletter_name=newsletter_name,
        postal_address=postal_address,
        valid_days=valid_days,
        lang="en",
        greeting=SLOTS["greeting"],
        email=SLOTS["email"],
        confirm_url=SLOTS["confirm_url"],
    )
    return str(mjml.mjml2html(mjml_text, fonts={}))


def _greeting(subscriber: Subscriber) -> str:
    return f"Hello {subscriber.name}," if subscriber.name else "Hello,"


def _text(settings: Settings, subscriber: Subscriber, url: str, valid_days: int) -> str:
    greeting = _greeting(subscriber)
    footer = f"-- \n{settings.newsletter_name}" + (f"\n{settings.postal_address}" if settings.postal_address else "")
    return (
        f"{greeting}\n\n"
        f"Someone, hopefully you, asked to receive {settings.newsletter_name} at {subscriber.email}.\n"
        "To confirm, open this link and press the button on the page:\n\n"
        f"{url}\n\n"
        f"The link works for {valid_days} days. If you did not ask for this, ignore this mail:\n"
        f"nothing is sent to you unless you confirm.\n\n{footer}\n"
    )
