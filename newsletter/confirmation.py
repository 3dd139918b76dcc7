"""The double opt-in mail: MJML template plus a text part, stored and sent through the outbound queue."""

from __future__ import annotations

import math
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate, make_msgid

import mjml
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.orm import Session

from newsletter import links, outbox
from newsletter.models import Subscriber
from newsletter.optin import ConfirmationRequest, confirmation_token
from newsletter.resources import resource_path
from newsletter.settings import Settings
from newsletter.tokens import Signer

TEMPLATE_NAME = "confirm.mjml.j2"
OUTBOUND_KIND = "confirmation"


def subject_of(settings: Settings) -> str:
    return f"Confirm your subscription to {settings.newsletter_name}"


def confirmation_message(
    settings: Settings, signer: Signer, subscriber: Subscriber, request: ConfirmationRequest
) -> EmailMessage:
    """The confirmation mail for one request: HTML from templates/confirm.mjml.j2 and a text part."""
    settings.require("from_address", "secret_key")
    url = f"{settings.base_url.rstrip('/')}/confirm/{confirmation_token(signer, request)}"
    context = {
        "subject": subject_of(settings),
        "preview": f"One click to start receiving {settings.newsletter_name}.",
        "newsletter_name": settings.newsletter_name,
        "name": subscriber.name or "",
        "email": subscriber.email,
        "confirm_url": url,
        "valid_days": max(1, math.floor(settings.confirm_max_age_seconds / 86400)),
        "postal_address": settings.postal_address,
        "lang": "en",
    }
    message = EmailMessage(policy=SMTP)
    message["Subject"] = context["subject"]
    message["From"] = formataddr((settings.from_name, settings.from_address))
    message["To"] = formataddr((subscriber.name or "", subscriber.email))
    if settings.reply_to:
        message["Reply-To"] = settings.reply_to
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(idstring="confirm", domain=links.sender_domain(settings))
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a confirmation
    message.set_content(_text(context))
    message.add_alternative(_html(context), subtype="html")
    return message


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
    return outbox.store_message(session, OUTBOUND_KIND, f"{local}@{domain}", subscriber.email, message.as_bytes())


def _html(context: dict[str, object]) -> str:
    environment = Environment(
        loader=FileSystemLoader(resource_path("templates")), autoescape=True, undefined=StrictUndefined
    )
    return str(mjml.mjml2html(environment.get_template(TEMPLATE_NAME).render(**context), fonts={}))


def _text(context: dict[str, object]) -> str:
    greeting = f"Hello {context['name']}," if context["name"] else "Hello,"
    return (
        f"{greeting}\n\n"
        f"Someone, hopefully you, asked to receive {context['newsletter_name']} at {context['email']}.\n"
        "To confirm, open this link and press the button on the page:\n\n"
        f"{context['confirm_url']}\n\n"
        f"The link works for {context['valid_days']} days. If you did not ask for this, ignore this mail:\n"
        "nothing is sent to you unless you confirm.\n\n"
        f"-- \n{context['newsletter_name']}"
        + (f"\n{context['postal_address']}" if context["postal_address"] else "")
        + "\n"
    )
