"""What every route needs, made once by create_app and found on the request."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from newsletter import database
from newsletter.settings import Settings
from newsletter.tokens import Signer
from subscribers.pages import Pages
from subscribers.security import Csrf, FormStamp

T = TypeVar("T")
SQLITE_THREADS = 4
Enqueue = Callable[[int], None]


@dataclass(frozen=True)
class Context:
    settings: Settings
    engine: Engine
    signer: Signer
    pages: Pages
    csrf: Csrf
    stamp: FormStamp
    enqueue: Enqueue  # hands a stored outbound message's id to the queue, after the commit
    # SQLite has one writer at a time; threads that queue here wait their turn instead of sleeping in
    # SQLite's busy handler (whose back-off, up to 100 ms a try, is what made the p99 latency seconds).
    sqlite_writer: threading.Lock = field(default_factory=threading.Lock)
    sqlite_threads: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(SQLITE_THREADS))

    async def run(self, use_case: Callable[..., T], *args: Any) -> T:
        """Run a use case (a function taking a session first) in one transaction, on a worker thread."""
        if self.engine.dialect.name != "sqlite":
            return await run_in_threadpool(self._in_transaction, use_case, *args)
        # One writer at a time anyway: more threads would only fight over the GIL while they wait.
        return await anyio.to_thread.run_sync(
            partial(self._in_transaction, use_case, *args), limiter=self.sqlite_threads
        )

    def _in_transaction(self, use_case: Callable[..., T], *args: Any) -> T:
        if self.engine.dialect.name != "sqlite":
            with database.transaction(self.engine) as session:
                return use_case(session, *args)
        with self.sqlite_writer, database.transaction(self.engine) as session:
            return use_case(session, *args)

    async def send(self, outbound_id: int | None) -> None:
        """Queue a stored message once its transaction has committed."""
        if outbound_id is not None:
            await run_in_threadpool(self.enqueue, outbound_id)


def context_of(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


def page(
    request: Request, template: str, status_code: int = 200, headers: dict[str, str] | None = None, **values: Any
) -> Response:
    """A page of templates/web/."""
    return context_of(request).pages.response(template, status_code, headers, **values)


def error_page(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return page(request, "error.html", status, headers, status=status, message=message)


def form_page(request: Request, template: str, status_code: int = 200, **values: Any) -> Response:
    """A page with a CSRF-protected form: the token in the page, its cookie on the response."""
    context = context_of(request)
    cookie, token = context.csrf.token_for(request)
    response = page(request, template, status_code, csrf_token=token, **values)
    context.csrf.set_cookie(response, cookie)
    return response


async def form_fields(request: Request) -> dict[str, str]:
    """The text fields of a posted form (urlencoded or multipart); files are refused, not stored."""
    form = await request.form(max_files=0, max_fields=50)
    return {name: value for name, value in form.items() if isinstance(value, str)}


def client_ip(request: Request) -> str | None:
    """The client's IP (uvicorn takes it from X-Forwarded-For only when the proxy is trusted)."""
    return request.client.host if request.client else None
