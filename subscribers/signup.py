"""Sign-up and confirmation pages: a form that never tells who is on the list, and a one-button confirm."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import links, optin
from newsletter.confirmation import store_confirmation
from newsletter.errors import InvalidAddress
from subscribers.context import Context, client_ip, context_of, form_fields, form_page, page
from subscribers.security import CSRF_FIELD, STAMP_FIELD

log = logging.getLogger("subscribers")
# Invisible to people (off-screen, skipped by keyboard and screen readers); bots fill in every field.
HONEYPOT_FIELD = "website"


async def subscribe_form(request: Request) -> Response:
    return _form(request)


def _form(
    request: Request, status_code: int = 200, error: str = "", notice: str = "", email: str = "", name: str = ""
) -> Response:
    context = context_of(request)
    return page(
        request,
        "subscribe.html",
        status_code,
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
            return _form(
                request, 422, "This form was open too long. Please press Subscribe again.", email=email, name=name
            )
        if elapsed < context.settings.signup_min_fill_seconds:
            return _form(
                request,
                422,
                "That was very quick. Please check your address and press Subscribe again.",
                email=email,
                name=name,
            )
    try:
        outbound_id = await context.run(_subscribe, context, email, name, client_ip(request))
    except InvalidAddress as error:
        return _form(request, 422, f"Please check the email address: {error.reason}", email=email, name=name)
    except optin.TooManySignups as error:
        return _form(request, 429, f"Sorry, {error}.", email=email, name=name)
    await context.send(outbound_id)
    return page(request, "subscribe_sent.html")


def _subscribe(session: Session, context: Context, email: str, name: str, ip: str | None) -> int | None:
    request = optin.subscribe(session, context.settings, email, name or None, ip)
    return store_confirmation(session, context.settings, context.signer, request)


async def confirm_page(request: Request) -> Response:
    """The page a confirmation link opens: one button, because mail scanners fetch links by GET."""
    context = context_of(request)
    subscriber = await context.run(
        optin.check_confirmation, context.signer, request.path_params["token"], context.settings.confirm_max_age_seconds
    )
    return form_page(request, "confirm.html", email=subscriber.email)


async def confirm(request: Request) -> Response:
    context = context_of(request)
    form = await form_fields(request)
    context.csrf.check(request, form.get(CSRF_FIELD, ""))
    subscriber = await context.run(
        optin.confirm, context.signer, request.path_params["token"], context.settings.confirm_max_age_seconds
    )
    preferences = links.preferences_url(context.settings, context.signer, subscriber.id)
    return page(request, "confirmed.html", email=subscriber.email, preferences_url=preferences)


routes = [
    Route("/subscribe", subscribe_form, methods=["GET"]),
    Route("/subscribe", subscribe, methods=["POST"]),
    Route("/confirm/{token}", confirm_page, methods=["GET"]),
    Route("/confirm/{token}", confirm, methods=["POST"]),
]
