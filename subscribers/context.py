"""What every route needs, made once by create_app and found on the request."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from newsletter import database, language
from newsletter.settings import Settings
from newsletter.tokens import Signer
from subscribers.pages import Pages

if TYPE_CHECKING:
    from newsletter.accounts import SignedIn
    from subscribers.desk.guard import DeskSessions
    from subscribers.desk.sending import Sends
from subscribers.security import Csrf, FormStamp

T = TypeVar("T")
SQLITE_THREADS = 32
# A server database: as many threads as the pool has connections. Measured on PostgreSQL under 100 clients,
# 15 threads gave more sign-ups a second and a lower p99 than 40; more threads only wait for a connection
# and take turns at the GIL with those that work. (Sign-ups take no thread of these: see run_and_send.)
DATABASE_THREADS = database.POOL_SIZE + database.POOL_OVERFLOW
MAX_FORM_FIELDS = 50
Enqueue = Callable[[Sequence[int]], None]


@dataclass(frozen=True)
class Context:
    settings: Settings
    engine: Engine
    signer: Signer
    pages: Pages
    csrf: Csrf
    stamp: FormStamp
    enqueue: Enqueue  # hands stored outbound messages' ids to the queue, after the commit (Queue.send_messages)
    sessions: DeskSessions  # the editor's desk's sign-in cookies
    sends: Sends  # issues the desk is sending, on threads of this process
    sqlite_threads: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(SQLITE_THREADS))
    database_threads: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(DATABASE_THREADS))

    async def run(self, use_case: Callable[..., T], *args: Any) -> T:
        """Run a use case (a function taking a session first) in one transaction, on a worker thread."""
        return await self._on_thread(partial(self._in_transaction, use_case, *args))

    async def run_and_send(self, use_case: Callable[..., int | None], *args: Any) -> None:
        """`run`, then queue the message the use case stored once it has committed.

        A sign-up touches only its session: concurrent ones share a transaction (group commit), which they
        await without a thread each; the group's messages are queued on the committing thread, in one
        queue message (a worker claims and records them in one statement each).
        """
        await database.run_awaited(self.engine, lambda session: use_case(session, *args), self._enqueue_stored)

    async def _on_thread(self, work: Callable[[], T]) -> T:
        if self.engine.dialect.name != "sqlite":
            return await anyio.to_thread.run_sync(work, limiter=self.database_threads)
        return await anyio.to_thread.run_sync(work, limiter=self.sqlite_threads)

    def _in_transaction(self, use_case: Callable[..., T], *args: Any) -> T:
        # On SQLite, database.transaction lets one at a time in: see there.
        with database.transaction(self.engine) as session:
            return use_case(session, *args)

    def _enqueue_stored(self, outbound_ids: list[int | None]) -> None:
        stored = [outbound_id for outbound_id in outbound_ids if outbound_id is not None]
        if stored:
            self.enqueue(stored)

    async def send(self, outbound_id: int | None) -> None:
        """Queue a stored message once its transaction has committed."""
        if outbound_id is not None:
            await run_in_threadpool(self.enqueue, [outbound_id])


def context_of(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


LANGUAGE_QUERY = "lang"  # `?lang=zh-CN` on any page: the reader's choice for this page
ISSUE_LANGUAGE_QUERY = "hl"  # an issue's links carry its language: the page speaks it to a reader with none stored


def reader_language(request: Request) -> str:
    """The language of the page: `?lang=`, else the reader's stored one, else that of the issue the link came
    from (`?hl=`), else Accept-Language, else the default.

    A route that knows the reader puts their stored language in `request.state.language` first.
    """
    return language.choose(
        request.query_params.get(LANGUAGE_QUERY),
        getattr(request.state, "language", None),
        request.query_params.get(ISSUE_LANGUAGE_QUERY),
        language.from_accept_language(request.headers.get("accept-language")),
        default=context_of(request).settings.default_language,
    )


def gettext(request: Request, message: str) -> str:
    """`message` in the reader's language (for text a route, not a template, words)."""
    return language.gettext(reader_language(request), message)


def page(
    request: Request, template: str, status_code: int = 200, headers: dict[str, str] | None = None, **values: Any
) -> Response:
    """A page of templates/web/ in the reader's language."""
    return context_of(request).pages.response(template, status_code, headers, reader_language(request), **values)


def error_page(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None, account: SignedIn | None = None
) -> Response:
    """The error page of the request's part of the site: the desk's (with its navigation for `account`), the
    API's (JSON) or the readers' (a sentence, translated when the catalog has it)."""
    path = request.url.path
    if path == "/api" or path.startswith("/api/"):
        return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)
    said = sentence(message)
    said = gettext(request, said) if said else said  # gettext("") is the catalog's header
    if is_desk_path(path):
        from subscribers.desk.guard import desk_page  # the desk's pages build on this module

        return desk_page(request, account, "desk/error.html", status, headers, status=status, message=said)
    return page(request, "error.html", status, headers, status=status, message=said)


def is_desk_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


def sentence(text: str) -> str:
    """`this link has expired` as `This link has expired.`"""
    text = text.strip()
    if not text:
        return text
    text = text[:1].upper() + text[1:]
    return text if text[-1] in ".!?。！？" else text + "."


def form_page(request: Request, template: str, status_code: int = 200, **values: Any) -> Response:
    """A page with a CSRF-protected form: the token in the page, its cookie on the response."""
    context = context_of(request)
    cookie, token = context.csrf.token_for(request)
    response = page(request, template, status_code, csrf_token=token, **values)
    context.csrf.set_cookie(response, cookie)
    return response


async def form_fields(request: Request) -> dict[str, str]:
    """The text fields of a posted form (urlencoded or multipart); files are refused, not stored."""
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    return {name: value for name, value in form.items() if isinstance(value, str)}


async def form_list(request: Request, name: str) -> list[str]:
    """Every value of a field a form posts several times (checkboxes); Starlette parsed the form once."""
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    return [value for value in form.getlist(name) if isinstance(value, str)]


def client_ip(request: Request) -> str | None:
    """The client's IP (uvicorn takes it from X-Forwarded-For only when the proxy is trusted)."""
    return request.client.host if request.client else None
