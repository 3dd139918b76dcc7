"""Leaving and privacy: unsubscribe (one button, or RFC 8058 one-click), re-subscribe, see, export, erase."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from newsletter import language, links, optin, preferences, privacy, topics
from newsletter.confirmation import store_confirmation
from newsletter.models import Subscriber
from newsletter.subscriptions import SUPPRESSED_STATUSES
from subscribers.context import (
    MAX_FORM_FIELDS,
    Context,
    context_of,
    form_fields,
    form_list,
    form_page,
    gettext,
    page,
    sentence,
)
from subscribers.security import CSRF_FIELD

N_ = language.N_
# RFC 8058 3.1: the mail provider POSTs exactly this body to the List-Unsubscribe HTTPS URI.
ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"


async def unsubscribe_page(request: Request) -> Response:
    """The page an unsubscribe link opens: one button (a GET from a mail scanner changes nothing)."""
    context = context_of(request)
    subscriber = await context.run(optin.subscriber_for_unsubscribe, context.signer, request.path_params["token"])
    if subscriber is None:  # erased: nobody to offer a way back to
        return form_page(request, "unsubscribed.html", already=True, action=None)
    request.state.language = subscriber.language
    if subscriber.status in SUPPRESSED_STATUSES:
        return form_page(request, "unsubscribed.html", already=True, action=_resubscribe_path(request))
    return form_page(request, "unsubscribe.html", email=subscriber.email)


async def unsubscribe(request: Request) -> Response:
    context = context_of(request)
    token = request.path_params["token"]
    if await _is_one_click(request):
        # RFC 8058 3.2: no cookie, no CSRF token, no redirect; the signed token is the authority.
        await context.run(optin.unsubscribe_by_token, context.signer, token, optin.SOURCE_ONE_CLICK)
        return page(request, "one_click.html")
    form = await form_fields(request)
    context.csrf.check(request, form.get(CSRF_FIELD, ""))
    await context.run(optin.unsubscribe_by_token, context.signer, token)
    request.state.language = await context.run(_language_of, context, token)
    return form_page(request, "unsubscribed.html", already=False, action=_resubscribe_path(request))


async def _is_one_click(request: Request) -> bool:
    """The body says `List-Unsubscribe=One-Click` (RFC 8058 3.1), whatever the Content-Type.

    RFC 8058 asks for a form body, but a sender that omits the Content-Type or calls it text/plain means
    the same: the reader asked to leave, and must not stay subscribed over a header.
    """
    body = await request.body()
    if b"multipart/form-data" in request.headers.get("content-type", "").encode("latin-1", "replace"):
        form = await form_fields(request)
        return form.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE
    try:
        fields = parse_qs(body.decode("utf-8", "replace").strip(), max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # more fields than any form of ours: not a one-click request
        return False
    return fields.get(ONE_CLICK_FIELD) == [ONE_CLICK_VALUE]


def _language_of(session: Session, context: Context, token: str) -> str | None:
    subscriber = optin.subscriber_for_unsubscribe(session, context.signer, token)
    return subscriber.language if subscriber is not None else None


def _resubscribe_path(request: Request) -> str:
    return f"{request.url.path.rstrip('/')}/resubscribe"


async def resubscribe(request: Request) -> Response:
    """Changed one's mind: a fresh confirmation mail (consent is asked again, not assumed)."""
    context = context_of(request)
    form = await form_fields(request)
    context.csrf.check(request, form.get(CSRF_FIELD, ""))
    outbound_id = await context.run(_resubscribe, context, request.path_params["token"])
    await context.send(outbound_id)
    request.state.language = await context.run(_language_of, context, request.path_params["token"])
    return page(request, "subscribe_sent.html")


def _resubscribe(session: Session, context: Context, token: str) -> int | None:
    request = optin.resubscribe_by_token(session, context.settings, context.signer, token)
    return store_confirmation(session, context.settings, context.signer, request)


async def preferences_page(request: Request) -> Response:
    """Name, language, topics and a pause to change; what is stored, with export and erase (GDPR art. 15, 20, 17)."""
    return await _preferences(request)


async def _preferences(request: Request, status_code: int = 200, notice: str = "", error: str = "") -> Response:
    context = context_of(request)
    data = await context.run(_personal_data, context, request.path_params["token"])
    subscriber_id = data.pop("id")
    assert isinstance(subscriber_id, int)
    request.state.language = data["language"]
    unsubscribe = links.unsubscribe_url(context.settings, context.signer, subscriber_id)
    here = request.url.path.rstrip("/")
    return form_page(
        request,
        "preferences.html",
        status_code,
        data=data,
        topics=await context.run(topics.list_topics),
        notice=notice,
        error=error,
        unsubscribe_url=unsubscribe,
        save_path=here,
        export_path=f"{here}/export",
        erase_path=f"{here}/erase",
    )


async def save_preferences(request: Request) -> Response:
    context = context_of(request)
    form = await form_fields(request)
    context.csrf.check(request, form.get(CSRF_FIELD, ""))
    try:
        choices = preferences.Choices(
            name=form.get("name", "")[:400],
            language=form.get("language", ""),
            topic_keys=(await form_list(request, "topics"))[:100],
            paused_until=preferences.parse_pause(form.get("paused_until", "")[:40], dt.date.today()),
        )
    except preferences.InvalidPreferences as error:
        return await _preferences(request, 422, error=gettext(request, sentence(str(error))))
    await context.run(_save_preferences, context, request.path_params["token"], choices)
    request.state.language = choices.language
    return await _preferences(request, notice=gettext(request, N_("Your choices are saved.")))


def _save_preferences(session: Session, context: Context, token: str, choices: preferences.Choices) -> None:
    subscriber = privacy.subscriber_for_preferences(session, context.signer, token)
    preferences.update_preferences(session, subscriber, choices)


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
    Route("/preferences/{token}", save_preferences, methods=["POST"]),
    Route("/preferences/{token}/export", export, methods=["GET"]),
    Route("/preferences/{token}/erase", erase, methods=["POST"]),
]
