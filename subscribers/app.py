"""The app factory: routes, middleware, and the pages errors become."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from newsletter import database, language
from newsletter.accounts import AccountExists, AccountNotFound, SignedIn, TooManySignIns, WeakPassword
from newsletter.directory import BadCursor
from newsletter.errors import DatabaseNotReady, InvalidAddress, IssueNotFound, NewsletterError, SubscriberNotFound
from newsletter.inbound import KeptMessageNotFound
from newsletter.optin import TokenUsed, TooManySignups
from newsletter.privacy import SubscriberErased
from newsletter.schedule import InvalidSchedule, ScheduleNotFound
from newsletter.settings import Settings
from newsletter.subscriptions import SubscriberExists
from newsletter.tags import InvalidTag, TagNotFound, UnknownSubscriber
from newsletter.tokens import Signer, TokenExpired, TokenInvalid
from newsletter.topics import InvalidTopic, TopicNotFound
from subscribers import api, archive, leaving, signup, webhooks
from subscribers.api import NotAnEditor, NotAuthenticated
from subscribers.context import Context, Enqueue, context_of, error_page, is_desk_path
from subscribers.desk import desk_routes
from subscribers.desk.guard import DeskSessions, ViewerCannotChange, error_account
from subscribers.desk.sending import SendRunning, Sends
from subscribers.fields import BadInput
from subscribers.logs import redact
from subscribers.pages import Pages, static_dir
from subscribers.security import BodyTimeout, BodyTooLarge, Csrf, FormExpired, FormStamp, SecurityHeaders

log = logging.getLogger("subscribers")

# The status each error page carries, most specific first.
ERROR_STATUS: list[tuple[type[NewsletterError], int]] = [
    (TokenUsed, 410),
    (TokenExpired, 410),
    (SubscriberErased, 410),
    (TokenInvalid, 400),
    (IssueNotFound, 404),
    (FormExpired, 403),
    (ViewerCannotChange, 403),
    (KeptMessageNotFound, 404),
    (ScheduleNotFound, 404),
    (InvalidSchedule, 422),
    (SendRunning, 409),
    (NotAnEditor, 403),
    (NotAuthenticated, 401),
    (SubscriberExists, 409),
    (TopicNotFound, 404),
    (InvalidTopic, 422),
    (TagNotFound, 404),
    (UnknownSubscriber, 404),
    (InvalidTag, 422),
    (BadCursor, 400),
    (BadInput, 422),
    (SubscriberNotFound, 404),
    (AccountNotFound, 404),
    (AccountExists, 409),
    (WeakPassword, 422),
    (TooManySignIns, 429),
    (TooManySignups, 429),
    (BodyTooLarge, 413),
    (BodyTimeout, 408),
    (InvalidAddress, 422),
    (DatabaseNotReady, 503),
]
RETRY_AFTER_SECONDS = 3600  # the sign-up limits count per hour
N_ = language.N_
# The sentences error pages show, as the errors raised in newsletter/ word them (see context.sentence):
# marked here so the catalogs translate them.
ERROR_SENTENCES = (
    N_("This link has expired."),
    N_("This link has already been used."),
    N_("This link is not valid (it may have been cut short or altered)."),
    N_("This link is not valid."),
    N_("This link names nobody on the list."),
    N_("The data behind this link was erased at your request; nothing about you is kept."),
    N_("This form has expired or did not come from this site: reload the page and try again."),
    N_("There is no page at this address."),
    N_("This page cannot be used that way."),
    N_("Something went wrong on our side. Please try again in a little while."),
    N_("The pause date is not a date."),
    N_("A pause lasts at most a year."),
)


def create_app(settings: Settings, engine: Engine | None = None, enqueue: Enqueue | None = None) -> Starlette:
    """The web app of `settings`: sign-up, confirm, unsubscribe, preferences, archive and health.

    `enqueue` takes the id of a stored outbound message (a confirmation mail) to the queue; without
    it the message waits in the ledger for a worker.
    """
    settings.require("secret_key")
    engine = engine or database.make_engine(settings)
    secure = settings.base_url.startswith("https://")
    context = Context(
        settings=settings,
        engine=engine,
        signer=Signer(settings.secret_key),
        pages=Pages(settings),
        csrf=Csrf(settings.secret_key, secure_cookie=secure),
        stamp=FormStamp(settings.secret_key),
        enqueue=enqueue or _no_queue,
        sessions=DeskSessions(settings.secret_key, int(settings.desk_session_hours * 3600), secure),
        sends=Sends(settings, engine),
    )
    routes = [
        Route("/", signup.subscribe_form, methods=["GET"]),
        *signup.routes,
        *leaving.routes,
        Route("/issues", lambda request: RedirectResponse("/issues/", status_code=308), methods=["GET"]),
        *archive.routes,
        *webhooks.routes,
        *desk_routes(),
        *api.routes,
        Route("/healthz", healthz, methods=["GET"]),
        Mount("/static", StaticFiles(directory=static_dir(settings)), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders, body_timeout_seconds=settings.request_body_timeout_seconds)],
        exception_handlers={
            HTTPException: http_error,
            NewsletterError: newsletter_error,
            ClientDisconnect: client_gone,
            Exception: server_error,
        },
    )
    app.state.context = context
    return app


def _no_queue(outbound_ids: Sequence[int]) -> None:
    log.warning("no queue configured: outbound messages %s wait in the ledger", ", ".join(map(str, outbound_ids)))


async def newsletter_error(request: Request, error: Exception) -> Response:
    status = next((code for kind, code in ERROR_STATUS if isinstance(error, kind)), 400)
    headers = {"retry-after": str(RETRY_AFTER_SECONDS)} if status == 429 else None
    if isinstance(error, NotAuthenticated):
        headers = {"www-authenticate": 'Bearer realm="newsletter"'}  # RFC 6750 3
    if status in (408, 413):  # the rest of the body may still be on its way: never read it as the next request
        headers = {"connection": "close"}
    return error_page(request, status, str(error), headers, await _desk_account(request, status))


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    messages = {404: "There is no page at this address.", 405: "This page cannot be used that way."}
    headers = dict(error.headers) if error.headers else None
    message = messages.get(error.status_code, error.detail)
    return error_page(request, error.status_code, message, headers, await _desk_account(request, error.status_code))


async def _desk_account(request: Request, status: int) -> SignedIn | None:
    """Who is signed in, for a desk error page's navigation (not when the body or the database is the error)."""
    if not is_desk_path(request.url.path) or status in (408, 413, 503):
        return None
    return await error_account(request)


async def client_gone(request: Request, error: Exception) -> Response:
    """The client went away before its body was in: nobody to answer, nothing to log but a line."""
    log.info("client left during %s %s", request.method, redact(request.url.path))
    return Response(status_code=400, headers={"connection": "close"})


async def server_error(request: Request, error: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, redact(request.url.path), exc_info=error)
    return error_page(request, 500, "Something went wrong on our side. Please try again in a little while.")


async def healthz(request: Request) -> Response:
    """200 when the database answers and is at the latest migration, else 503."""
    try:
        await run_in_threadpool(database.require_current, context_of(request).engine)
    except DatabaseNotReady as error:
        log.warning("health check failed: %s", error)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})
