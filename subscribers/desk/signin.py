"""Signing in and out of the desk; before any account exists, the page says how to make the first."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from newsletter import accounts, language
from newsletter.models import EMAIL_MAX_CHARS
from subscribers.context import client_ip, context_of, form_fields, gettext, sentence
from subscribers.desk.guard import DESK_PATH, desk_page, signed_in_account
from subscribers.security import CSRF_FIELD

N_ = language.N_


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a desk path of ours, never another site (`//evil`, `/\\evil`)."""
    if not target or not target.startswith(DESK_PATH) or target.startswith(("//", "/\\")) or "\\" in target:
        return DESK_PATH
    if any(ord(char) < 32 for char in target):
        return DESK_PATH
    return target


async def sign_in_form(request: Request) -> Response:
    context = context_of(request)
    if await signed_in_account(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    if not await context.run(accounts.has_accounts):
        return desk_page(request, None, "desk/first_account.html")
    return _form(request, next_path=safe_next(request.query_params.get("next")))


def _form(request: Request, status_code: int = 200, error: str = "", email: str = "", next_path: str = "") -> Response:
    return desk_page(request, None, "desk/sign_in.html", status_code, error=error, email=email, next=next_path)


async def sign_in(request: Request) -> Response:
    context = context_of(request)
    form = await form_fields(request)
    context.csrf.check(request, form.get(CSRF_FIELD, ""))
    email, password = form.get("email", "").strip()[:EMAIL_MAX_CHARS], form.get("password", "")
    next_path = safe_next(form.get("next"))
    try:
        account = await context.run(accounts.sign_in, context.settings.secret_key, email, password, client_ip(request))
    except accounts.TooManySignIns:
        minutes = accounts.SIGN_IN_WINDOW_SECONDS // 60
        error = sentence(gettext(request, accounts.TOO_MANY_SIGN_INS) % {"minutes": minutes})
        return _form(request, 429, error, email, next_path)
    if account is None:
        error = gettext(request, N_("That address and password do not match an account."))
        return _form(request, 401, error, email, next_path)
    response = RedirectResponse(next_path, status_code=303)
    context.sessions.start(response, account)
    return response


async def sign_out(request: Request) -> Response:
    context = context_of(request)
    form = await form_fields(request)
    context.csrf.check(request, form.get(CSRF_FIELD, ""))
    response = RedirectResponse(f"{DESK_PATH}/sign-in", status_code=303)
    context.sessions.end(response)
    return response


routes = [
    Route(f"{DESK_PATH}/sign-in", sign_in_form, methods=["GET"]),
    Route(f"{DESK_PATH}/sign-in", sign_in, methods=["POST"]),
    Route(f"{DESK_PATH}/sign-out", sign_out, methods=["POST"]),
]
