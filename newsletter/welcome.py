"""The welcome mail a reader gets once they confirm: templates/welcome.mjml.j2 (the editor may override it),
in the reader's language, through the same outbound ledger, queue and SMTP path as the confirmation."""

from __future__ import annotations

from sqlalchemy.orm import Session

from newsletter import language, letters, links
from newsletter.confirmation import footer_text, greeting_of
from newsletter.models import Subscriber
from newsletter.settings import Settings
from newsletter.tokens import Signer

TEMPLATE_NAME = "welcome.mjml.j2"
OUTBOUND_KIND = "welcome"
N_ = language.N_
SLOTS = {
    "greeting": "slotgreeting8w4",
    "email": "slotemail8w4",
    "preferences_url": "slotpreferencesurl8w4",
    "unsubscribe_url": "slotunsubscribeurl8w4",
}


def subject_of(settings: Settings, lang: str) -> str:
    return language.gettext(lang, N_("Welcome to %(name)s")) % {"name": settings.newsletter_name}


def welcome_message(settings: Settings, signer: Signer, subscriber: Subscriber) -> bytes:
    """The welcome mail for one reader (CRLF bytes)."""
    settings.require("from_address", "secret_key")
    lang = letters.reader_language(settings, subscriber.language)
    archive_url = settings.base_url.rstrip("/") + "/issues/"
    values = (
        ("subject", subject_of(settings, lang)),
        ("newsletter_name", settings.newsletter_name),
        ("postal_address", settings.postal_address),
        ("archive_url", archive_url),
        *SLOTS.items(),
    )
    html = letters.html_part(settings.template_dir, lang, TEMPLATE_NAME, values, tuple(SLOTS.items()))
    urls = {
        "preferences_url": links.preferences_url(settings, signer, subscriber.id),
        "unsubscribe_url": links.unsubscribe_url(settings, signer, subscriber.id),
    }
    greeting = greeting_of(subscriber.name, lang)
    text = _text(settings, lang, greeting, archive_url, urls)
    to = (subscriber.name or "", subscriber.email)
    filled = {"greeting": greeting, "email": subscriber.email, **urls}
    return letters.message(settings, "welcome", to, subject_of(settings, lang), text, html, filled)


def store_welcome(session: Session, settings: Settings, signer: Signer, subscriber: Subscriber) -> int | None:
    """Keep the welcome mail in the outbound ledger (the confirmation's transaction); None when turned off."""
    if not settings.welcome_enabled:
        return None
    return letters.store(
        session, settings, OUTBOUND_KIND, subscriber.email, welcome_message(settings, signer, subscriber)
    )


def _text(settings: Settings, lang: str, greeting: str, archive_url: str, urls: dict[str, str]) -> str:
    words = {"name": settings.newsletter_name}
    thanks = (
        language.gettext(
            lang, N_("Thank you for confirming: you are subscribed to %(name)s, and the next issue will reach you.")
        )
        % words
    )
    lines = [
        greeting,
        "",
        thanks,
        "",
        f"{language.gettext(lang, N_('Past issues'))}: {archive_url}",
        f"{language.gettext(lang, N_('Choose your topics and settings'))}: {urls['preferences_url']}",
        f"{language.gettext(lang, N_('Unsubscribe'))}: {urls['unsubscribe_url']}",
        "",
        footer_text(settings),
    ]
    return "\n".join(lines) + "\n"
