"""Leaving and privacy: unsubscribe (one button, or RFC 8058 one-click), re-subscribe, see, export, erase."""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from newsletter import links, optin, privacy
from newsletter.confirmation import store_confirmation
from newsletter.models import Subscriber
from newsletter.subscriptions import SUPPRESSED_STATUSES
from subscribers.context import Context, context_of, form_fields, form_page, page
from subscribers.security import CSRF_FIELD

# RFC 8058 3.1: the mail provider POSTs exactly this body to the List-Unsubscribe HTTPS URI.
ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"


async def unsubscribe_page(request: Request) -> Response:
    """The page an unsubscribe link opens: one button (a GET from a mail scanner changes nothing)."""
    context = context_of(request)
    subscriber = await context.run(optin.subscriber_for_unsubscribe, context.signer, request.path_params["token"])
    if subscriber is None:  # erased: nobody to offer a way back to
        return form_page(request, "unsubscribed.html", already=True, action=None)
    if subscriber.status in SUPPRESSED_STATUSES:
        return form_page(request, "unsubscribed.html", already=True, action=_resubscribe_path(request))
    return form_page(request, "unsubscribe.html", email=subscriber.email)


async def unsubscribe(request: Request) -> Response:
    context = context_of(request)
    token = request.path_params["token"]
    form = await form_fields(request)
    if form.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE:
        # RFC 8058 3.2: no cookie, no CSRF token, no redirect; the signed token is the authority.
        await context.run(optin.unsubscribe_by_token, context.signer, token, optin.SOURCE_ONE_CLICK)
        return page(request, "one_click.html")
    context.csrf.check(request, form.get(CSRF_FIELD, ""))
    await context.run(optin.unsubscribe_by_token, context.signer, token)
    return form_page(request, "unsubscribed.html", already=False, action=_resubscribe_path(request))


def _resubscribe_path(request: Request) -> str:
    return f"{request.url.path.rstrip('/')}/resubscribe"


async def resubscribe(request: Request) -> Response:
    """Changed one's mind: a fresh confirmation mail (consent is asked again, not assumed)."""
    context = context_of(request)
    form = await form_fields(request)
    context.csrf.check(request, form.get(CSRF_FIELD, ""))
    outbound_id = await context.run(_resubscribe, context, request.path_params["token"])
    await context.send(outbound_id)
    return page(request, "subscribe_sent.html")


def _resubscribe(session: Session, context: Context, token: str) -> int | None:
    request = optin.resubscribe_by_token(session, context.settings, context.signer, token)
    return store_confirmation(session, context.settings, context.signer, request)


async def preferences_page(request: Request) -> Response:
    """What is stored about me, with export and erase (GDPR art. 15, 20, 17)."""
    context = context_of(request)
    data = await context.run(_personal_data, context, request.path_params["token"])
    subscriber_id = data.pop("id")
    assert isinstance(subscriber_id, int)
    unsubscribe = links.unsubscribe_url(context.settings, context.signer, subscriber_id)
    here = request.url.path.rstrip("/")
    return form_page(
        request,
        "preferences.html",
        data=data,
        unsubscribe_url=unsubscribe,
        export_path=f"{here}/export",
        erase_path=f"{here}/erase",
    )


async def export(request: Request) -> Response:
    context = context_of(request)
    data = await context.run(_personal_data, context, request.path_params["token"])
    data.pop("id")
    return JSONResponse(data, headers={"content-disposition": 'attachment; filename="my-newsletter-data.json"'})


def _personal_data(session: Session, context: Context, token: str) -> dict[str, object]:
    subscriber = privacy.subscriber_for_preferences(session, context.signer, token)
    return {"id": subscriber.id, **privacy.personal_data(session, subscriber)}


async def erase(request: Request) -> Response:
    context = context_of(request)
    form = await form_fields(request)
    context.csrf.check(request, form.get(CSRF_FIELD, ""))
    await context.run(_erase, context, request.path_params["token"])
    return page(request, "erased.html")


def _erase(session: Session, context: Context, token: str) -> None:
    subscriber: Subscriber = privacy.subscriber_for_preferences(session, context.signer, token)
    privacy.erase(session, subscriber)


routes = [
    Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET"]),
    Route("/unsubscribe/{token}", unsubscribe, methods=["POST"]),
    Route("/unsubscribe/{token}/resubscribe", resubscribe, methods=["POST"]),
    Route("/preferences/{token}", preferences_page, methods=["GET"]),
    Route("/preferences/{token}/export", export, methods=["GET"]),
    Route("/preferences/{token}/erase", erase, methods=["POST"]),
]
