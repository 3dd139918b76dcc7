"""Who may open a desk page: the signed session cookie, CSRF on every post, and editors alone change things."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from newsletter import accounts, language
from newsletter.accounts import SignedIn
from newsletter.errors import NewsletterError
from subscribers.context import context_of, reader_language
from subscribers.desk import words
from subscribers.security import CSRF_FIELD

SESSION_COOKIE = "newsletter_desk"
DESK_PATH = "/admin"
MAX_UPLOAD_FILES = 50  # an issue and its images
MAX_FORM_FIELDS = 100
NOTICE_MAX_AGE_SECONDS = 300
# The desk's pages: our stylesheet and scripts (live progress), our own frames (the issue preview), no one else's.
DESK_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; connect-src 'self'; "
    "frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

Handler = Callable[[Request, SignedIn], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


class ViewerCannotChange(NewsletterError):
    """A viewer's account posted a change: only editors change the list and send."""


class DeskSessions:
    """Signed, expiring session cookies naming an account and the password generation they were made under."""

    def __init__(self, secret_key: str, max_age_seconds: int, secure: bool) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="newsletter.desk-session")
        # The line a page shows after a post redirected to it, signed so a link cannot put words there.
        self._notices = URLSafeTimedSerializer(secret_key, salt="newsletter.desk-notice")
        self.max_age_seconds = max_age_seconds
        self._secure = secure

    def start(self, response: Response, account: SignedIn) -> None:
        value = self._serializer.dumps([account.id, account.session_version])
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=self.max_age_seconds,
            httponly=True,
            samesite="lax",
            secure=self._secure,
            path=DESK_PATH,
        )

    def end(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path=DESK_PATH, httponly=True, samesite="lax", secure=self._secure)

    def notice_token(self, notice: str) -> str:
        return self._notices.dumps(notice)

    def notice(self, request: Request) -> str:
        value = request.query_params.get("notice", "")
        try:
            notice = self._notices.loads(value, max_age=NOTICE_MAX_AGE_SECONDS) if value else ""
        except (BadSignature, SignatureExpired):
            return ""
        return notice if isinstance(notice, str) else ""

    def read(self, request: Request) -> tuple[int, int] | None:
        """The account id and session version of the request's cookie, or None when absent, forged or old."""
        value = request.cookies.get(SESSION_COOKIE)
        if not value or len(value) > 500:
            return None
        try:
            data = self._serializer.loads(value, max_age=self.max_age_seconds)
        except (BadSignature, SignatureExpired):
            return None
        if not (isinstance(data, list) and len(data) == 2 and all(type(item) is int for item in data)):
            return None
        return data[0], data[1]


async def signed_in_account(request: Request) -> SignedIn | None:
    context = context_of(request)
    found = context.sessions.read(request)
    if found is None:
        return None
    return await context.run(accounts.session_account, *found)


def desk_route(handler: Handler) -> Endpoint:
    """A desk page: the signed-in account, or the sign-in page; a post must carry the CSRF token and
    come from an editor."""

    async def endpoint(request: Request) -> Response:
        account = await signed_in_account(request)
        if account is None:
            return await sign_in_first(request)
        if request.method != "POST":
            return await handler(request, account)
        try:
            form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=MAX_FORM_FIELDS)
            context_of(request).csrf.check(request, _text(form, CSRF_FIELD))
            if not account.is_editor:
                raise ViewerCannotChange("your account is a viewer's: it can look at everything but change nothing")
            return await handler(request, account)
        finally:
            await request.close()  # uploaded files are spooled to temporary files: remove them now

    return endpoint


async def sign_in_first(request: Request) -> Response:
    """Where an unsigned visitor goes: the sign-in page (which explains how to make the first account)."""
    if request.method != "GET":
        return desk_page(request, None, "desk/signed_out.html", 401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{DESK_PATH}/sign-in?next={quote(target, safe='')}", status_code=303)


def desk_page(
    request: Request,
    account: SignedIn | None,
    template: str,
    status_code: int = 200,
    extra_headers: dict[str, str] | None = None,
    **values: Any,
) -> Response:
    """A desk page with the account shown in its header and a CSRF token for its forms, in the editor's
    language: `?lang=`, else what the browser asks for, else `default_language` (as the readers' pages)."""
    context = context_of(request)
    cookie, token = context.csrf.token_for(request)
    values.setdefault("notice", context.sessions.notice(request))
    headers = {**(extra_headers or {}), "content-security-policy": DESK_POLICY}
    lang = reader_language(request)
    response = context.pages.response(
        template,
        status_code,
        headers,
        lang,
        account=account,
        csrf_token=token,
        state_names=language.names(lang, words.STATES),
        delivery_state_names=language.names(lang, words.DELIVERY_STATES),
        role_names=language.names(lang, words.ROLES),
        **values,
    )
    context.csrf.set_cookie(response, cookie)
    return response


async def error_account(request: Request) -> SignedIn | None:
    """The signed-in account for a desk error page's navigation, or None (also when the database is why)."""
    try:
        return await signed_in_account(request)
    except Exception:  # the page explains an error already; failing to name the account must not hide it
        return None


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


async def posted(request: Request) -> dict[str, str]:
    """The text fields of a form the guard has already read (and checked)."""
    form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=MAX_FORM_FIELDS)
    return {name: value for name, value in form.items() if isinstance(value, str)}


async def posted_list(request: Request, name: str) -> list[str]:
    """Every value of a field the form posts several times (checkboxes)."""
    form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=MAX_FORM_FIELDS)
    return [value for value in form.getlist(name) if isinstance(value, str)]


def back_to(request: Request, path: str, notice: str = "") -> Response:
    """Redirect after a post (303: the browser GETs the page), with a notice for the next page."""
    suffix = f"?notice={context_of(request).sessions.notice_token(notice)}" if notice else ""
    return RedirectResponse(path + suffix, status_code=303)
