"""Sign-up and confirmation pages: a form that never tells who is on the list, and a one-button confirm."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import language, links, optin, topics
from newsletter.confirmation import store_confirmation
from newsletter.errors import InvalidAddress
from newsletter.welcome import store_welcome
from subscribers.context import (
    Context,
    client_ip,
    context_of,
    form_fields,
    form_list,
    form_page,
    gettext,
    page,
    reader_language,
)
from subscribers.security import CSRF_FIELD, STAMP_FIELD

log = logging.getLogger("subscribers")
N_ = language.N_
# Invisible to people (off-screen, skipped by keyboard and screen readers); bots fill in every field.
HONEYPOT_FIELD = "website"
MAX_TOPICS = 40


TOPICS_FIELD = "topics"
LANGUAGE_FIELD = "language"


async def subscribe_form(request: Request) -> Response:
    return await _form(request)


async def _form(
    request: Request,
    status_code: int = 200,
    error: str = "",
    notice: str = "",
    email: str = "",
    name: str = "",
    chosen: list[str] | None = None,
) -> Response:
    context = context_of(request)
    return page(
        request,
        "subscribe.html",
        status_code,
        topics=await context.run(topics.list_topics),
        chosen_topics=chosen or [],
        stamp=context.stamp.make(),
        stamp_field=STAMP_FIELD,
        honeypot_field=HONEYPOT_FIELD,
        error=error,
        notice=notice,
        email=email,
        name=name,
    )


async def subscribe(request: Request) -> Response:
    """Take a sign-up; the answer is the same page whatever the address's state (no enumeration)."""
    context = context_of(request)
    form = await form_fields(request)
    email, name = form.get("email", "").strip()[:400], form.get("name", "").strip()[:400]
    chosen = (await form_list(request, TOPICS_FIELD))[:MAX_TOPICS]
    # The reader's language: the one they picked on the form, else their browser's, else the default.
    reader = language.choose(form.get(LANGUAGE_FIELD), reader_language(request))
    request.state.language = reader
    if form.get(HONEYPOT_FIELD):
        log.info("sign-up dropped: the honeypot field was filled in")
        return page(request, "subscribe_sent.html")
    stamp = form.get(STAMP_FIELD)
    # A form pasted on another site (the README's snippet) cannot carry a fresh stamp: it is taken as it
    # comes, behind the honeypot, the rate limits and the daily confirmation cap, and the double opt-in
    # mail remains the proof. Our own form's stamp must be genuine and not too fresh.
    if stamp:
        elapsed = context.stamp.seconds_since(stamp)
        if elapsed is None:
            message = gettext(request, N_("This form was open too long. Please press Subscribe again."))
            return await _form(request, 422, message, email=email, name=name, chosen=chosen)
        if elapsed < context.settings.signup_min_fill_seconds:
            message = gettext(request, N_("That was very quick. Please check your address and press Subscribe again."))
            return await _form(request, 422, message, email=email, name=name, chosen=chosen)
    try:
        await context.run_and_send(_subscribe, context, email, name, reader, chosen, client_ip(request))
    except InvalidAddress as error:
        message = gettext(request, N_("Please check the email address: %(reason)s")) % {"reason": error.reason}
        return await _form(request, 422, message, email=email, name=name, chosen=chosen)
    except optin.TooManySignups:
        message = gettext(request, N_("Sorry, there were too many sign-ups from here. Please try again in an hour."))
        return await _form(request, 429, message, email=email, name=name, chosen=chosen)
    return page(request, "subscribe_sent.html")


def _subscribe(
    session: Session, context: Context, email: str, name: str, reader: str, chosen: list[str], ip: str | None
) -> int | None:
    request = optin.subscribe(session, context.settings, email, name or None, ip, language=reader, topic_keys=chosen)
    return store_confirmation(session, context.settings, context.signer, request)


async def confirm_page(request: Request) -> Response:
    """The page a confirmation link opens: one button, because mail scanners fetch links by GET."""
    context = context_of(request)
    subscriber = await context.run(
        optin.check_confirmation, context.signer, request.path_params["token"], context.settings.confirm_max_age_seconds
    )
    request.state.language = subscriber.language
    return form_page(request, "confirm.html", email=subscriber.email)


async def confirm(request: Request) -> Response:
    context = context_of(request)
    form = await form_fields(request)
    context.csrf.check(request, form.get(CSRF_FIELD, ""))
    confirmed = await context.run(_confirm, context, request.path_params["token"])
    await context.send(confirmed.welcome_id)
    request.state.language = confirmed.language
    preferences = links.preferences_url(context.settings, context.signer, confirmed.subscriber_id)
    return page(request, "confirmed.html", email=confirmed.email, preferences_url=preferences)


@dataclass(frozen=True)
class _Confirmed:
    subscriber_id: int
    email: str
    language: str | None
    welcome_id: int | None


def _confirm(session: Session, context: Context, token: str) -> _Confirmed:
    """Activate the reader and store their welcome mail in the same transaction."""
    subscriber = optin.confirm(session, context.signer, token, context.settings.confirm_max_age_seconds)
    welcome_id = store_welcome(session, context.settings, context.signer, subscriber)
    return _Confirmed(subscriber.id, subscriber.email, subscriber.language, welcome_id)


routes = [
    Route("/subscribe", subscribe_form, methods=["GET"]),
    Route("/subscribe", subscribe, methods=["POST"]),
    Route("/confirm/{token}", confirm_page, methods=["GET"]),
    Route("/confirm/{token}", confirm, methods=["POST"]),
]
