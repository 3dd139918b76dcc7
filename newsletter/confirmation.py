"""The double opt-in mail: MJML template plus a text part in the reader's language, stored and sent through
the outbound queue."""

from __future__ import annotations

import math

from sqlalchemy.orm import Session

from newsletter import language, letters, links
from newsletter.optin import ConfirmationRequest, Reader, confirmation_token
from newsletter.settings import Settings
from newsletter.tokens import Signer

TEMPLATE_NAME = "confirm.mjml.j2"
OUTBOUND_KIND = "confirmation"
N_ = language.N_


def subject_of(settings: Settings, lang: str = language.FALLBACK) -> str:
    return language.gettext(lang, N_("Confirm your subscription to %(name)s")) % {"name": settings.newsletter_name}


# Per-recipient values enter the rendered HTML as plain string replacements (ARCHITECTURE: MJML once,
# never per recipient); the markers are letters and digits only, so MJML passes them through untouched.
SLOTS = {"greeting": "slotgreeting9q7", "email": "slotemail9q7", "confirm_url": "slotconfirmurl9q7"}


def confirmation_message(settings: Settings, signer: Signer, request: ConfirmationRequest) -> bytes:
    """The confirmation mail for one request (CRLF bytes): HTML from templates/confirm.mjml.j2 and a text part."""
    settings.require("from_address", "secret_key")
    reader = request.reader
    lang = letters.reader_language(settings, reader.language)
    url = links.confirm_url(settings, confirmation_token(signer, request))
    valid_days = max(1, math.floor(settings.confirm_max_age_seconds / 86400))
    values = (
        ("subject", subject_of(settings, lang)),
        (
            "preview",
            language.gettext(lang, N_("One click to start receiving %(name)s.")) % {"name": settings.newsletter_name},
        ),
        ("newsletter_name", settings.newsletter_name),
        ("postal_address", settings.postal_address),
        ("valid_days", valid_days),
        *SLOTS.items(),
    )
    html = letters.html_part(settings.template_dir, lang, TEMPLATE_NAME, values, tuple(SLOTS.items()))
    greeting = greeting_of(reader.name, lang)
    text = _text(settings, reader, greeting, url, valid_days, lang)
    to = (reader.name or "", reader.email)
    filled = {"greeting": greeting, "email": reader.email, "confirm_url": url}
    return letters.message(settings, "confirm", to, subject_of(settings, lang), text, html, filled)


def store_confirmation(
    session: Session, settings: Settings, signer: Signer, request: ConfirmationRequest | None
) -> int | None:
    """Keep the confirmation mail in the outbound ledger (same transaction as the request); returns its id."""
    if request is None:
        return None
    message = confirmation_message(settings, signer, request)
    return letters.store(session, settings, OUTBOUND_KIND, request.reader.email, message)


def lifetimes(settings: Settings) -> dict[str, float]:
    """How long a stored confirmation mail is worth sending (outbox.requeue_unsent): while its link is valid."""
    return {OUTBOUND_KIND: settings.confirm_max_age_seconds}


def greeting_of(name: str | None, lang: str) -> str:
    """`Hello Ana,` / `Ana，您好：` in the reader's language."""
    if name:
        return language.gettext(lang, N_("Hello %(name)s,")) % {"name": name}
    return language.gettext(lang, N_("Hello,"))


def footer_text(settings: Settings) -> str:
    """The signature of a one-off mail's text part."""
    return f"-- \n{settings.newsletter_name}" + (f"\n{settings.postal_address}" if settings.postal_address else "")


def _text(settings: Settings, reader: Reader, greeting: str, url: str, valid_days: int, lang: str) -> str:
    words = {"name": settings.newsletter_name, "email": reader.email, "days": valid_days}
    asked = language.gettext(lang, N_("Someone, hopefully you, asked to receive %(name)s at %(email)s.")) % words
    how = language.gettext(lang, N_("To confirm, open this link and press the button on the page:"))
    works = (
        language.gettext(
            lang,
            N_(
                "The link works for %(days)s days. If you did not ask for this, ignore this mail: "
                "nothing is sent to you unless you confirm."
            ),
        )
        % words
    )
    return f"{greeting}\n\n{asked}\n{how}\n\n{url}\n\n{works}\n\n{footer_text(settings)}\n"
