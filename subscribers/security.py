"""What guards the pages: security headers, a body size cap, CSRF tokens and the sign-up form's stamp."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time

import anyio
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter import webhooks
from newsletter.errors import NewsletterError

MAX_BODY_BYTES = 64 * 1024  # the largest form here is an address and a name
WEBHOOK_MAX_BODY_BYTES = webhooks.MAX_BODY_BYTES  # the handlers' own limit: one number for both
WEBHOOK_PATH_PREFIX = "/webhooks/"
# The desk's uploads: a CSV of subscribers, an issue with its images. Bigger lists go through the CLI.
UPLOAD_MAX_BODY_BYTES = 8 * 1024 * 1024
UPLOAD_PATHS = frozenset({"/admin/subscribers/import", "/admin/issues/new"})
CSRF_COOKIE = "newsletter_csrf"
CSRF_FIELD = "csrf_token"
STAMP_FIELD = "stamp"
STAMP_MAX_AGE_SECONDS = 24 * 3600

# Our own pages: no script at all, styles only from our stylesheet, forms only to ourselves.
PAGE_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# An issue's web version: the email's inline styles and remote images, still no script.
ISSUE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline' https:; img-src https: http: data:; font-src https: data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
FRAME_OPTIONS = "DENY"  # a page framed by our own desk (the issue preview) sets SAMEORIGIN itself
HEADERS = {
    "x-content-type-options": "nosniff",
    # Token links must not leak to remote image hosts or other sites through Referer.
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}


class BodyTooLarge(NewsletterError):
    """A request body larger than its route allows (MAX_BODY_BYTES, WEBHOOK_MAX_BODY_BYTES)."""


class BodyTimeout(NewsletterError):
    """A client that began a request body and did not finish it in time (a slow-body attack, or a dead link)."""


class FormExpired(NewsletterError):
    """A form posted without a valid CSRF token (stale page, cookies off, or a forged post)."""


class SecurityHeaders:
    """ASGI middleware: every response gets the security headers; a page may set its own CSP first.

    It also bounds what a request body may cost: its size (per route) and the time it takes to arrive.
    """

    def __init__(self, app: ASGIApp, body_timeout_seconds: float = math.inf) -> None:
        self.app = app
        self.body_timeout_seconds = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                headers.setdefault("x-frame-options", FRAME_OPTIONS)
                headers.setdefault("content-security-policy", PAGE_POLICY)
                headers.setdefault("cache-control", "no-store")
            await send(message)

        if _has_nul(scope):
            # No address of ours holds a NUL, and PostgreSQL refuses one in text: a 400 here, not a driver error;
            # the error page of the request's part of the site (the API's is JSON).
            from subscribers.context import error_page  # the pages need the app, which needs this module

            await error_page(Request(scope), 400, "this link is not valid")(scope, receive, send_with_headers)
            return
        limit = _body_limit(scope["path"])
        await self.app(scope, _capped(receive, limit, self.body_timeout_seconds), send_with_headers)


def _has_nul(scope: Scope) -> bool:
    query, raw_path = scope.get("query_string", b""), scope.get("raw_path") or b""
    return "\x00" in scope["path"] or b"%00" in query or b"\x00" in query or b"%00" in raw_path


def _body_limit(path: str) -> int:
    if path.startswith(WEBHOOK_PATH_PREFIX):
        return WEBHOOK_MAX_BODY_BYTES
    return UPLOAD_MAX_BODY_BYTES if path in UPLOAD_PATHS else MAX_BODY_BYTES


def _capped(receive: Receive, limit: int, timeout_seconds: float) -> Receive:
    """`receive`, refusing a body past `limit` bytes or still unfinished `timeout_seconds` after the first read."""
    received = 0
    deadline: float | None = None
    complete = False

    async def capped_receive() -> Message:
        nonlocal received, deadline, complete
        if complete:  # after the body, a receive waits for the disconnect (streaming responses): no deadline
            return await receive()
        deadline = deadline if deadline is not None else time.monotonic() + timeout_seconds
        try:
            with anyio.fail_after(max(deadline - time.monotonic(), 0)):
                message = await receive()
        except TimeoutError:
            raise BodyTimeout(f"the request body did not arrive within {timeout_seconds:g} seconds") from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                size = f"{limit // 1_048_576} MiB" if limit >= 1_048_576 else f"{limit // 1024} KiB"
                raise BodyTooLarge(f"the request is larger than {size}")
        complete = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return capped_receive


class Csrf:
    """Double-submit CSRF tokens: a random cookie, and in each form an HMAC of it under the secret key."""

    def __init__(self, secret_key: str, secure_cookie: bool) -> None:
        self._secret = secret_key.encode()
        self._secure = secure_cookie

    def token_for(self, request: Request) -> tuple[str, str]:
        """The cookie value to keep (or set) and the form token that goes with it."""
        cookie = request.cookies.get(CSRF_COOKIE) or ""
        if len(cookie) < 32:
            cookie = secrets.token_urlsafe(32)
        return cookie, self._mac(cookie)

    def set_cookie(self, response: Response, cookie: str) -> None:
        response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="lax", secure=self._secure, path="/")

    def check(self, request: Request, form_token: str) -> None:
        """Raise FormExpired unless the form's token matches the request's cookie."""
        cookie = request.cookies.get(CSRF_COOKIE) or ""
        if not cookie or not hmac.compare_digest(form_token.encode(), self._mac(cookie).encode()):
            raise FormExpired("this form has expired or did not come from this site: reload the page and try again")

    def _mac(self, cookie: str) -> str:
        return hmac.new(self._secret, f"csrf:{cookie}".encode(), hashlib.sha256).hexdigest()


class FormStamp:
    """A signed time in the sign-up form: how long the visitor took to fill it in (bots post at once)."""

    def __init__(self, secret_key: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="newsletter.signup-form")

    def make(self) -> str:
        return self._serializer.dumps(time.time())

    def seconds_since(self, stamp: str) -> float | None:
        """Seconds since the stamped form was shown, or None when the stamp is forged or too old."""
        try:
            shown = self._serializer.loads(stamp, max_age=STAMP_MAX_AGE_SECONDS)
        except (BadSignature, SignatureExpired):
            return None
        if not isinstance(shown, float | int):
            return None
        return time.time() - float(shown)
